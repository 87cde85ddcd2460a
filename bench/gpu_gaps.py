"""Where the GPU waits: idle gaps in a torch profiler trace, and the CPU work that the next kernel waited for.

A step whose wall time exceeds its GPU time has gaps in the GPU's timeline. For each gap the kernel after it
was launched either after the GPU went idle (the GPU waited for the host: the gap is charged to the CPU ops
enclosing that launch) or before (it waited on something else: a stream dependency, a copy). Used by
`train_speed.py --profile`; also runs on a saved trace:

    python bench/gpu_gaps.py trace.json[.gz] [--steps 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter, defaultdict

GPU = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH = ("cuda_runtime", "cuda_driver")
HOST = ("cpu_op", "user_annotation")
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpyAsync", "cudaMemcpy")


def load(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)["traceEvents"]


def summarise(events: list[dict], steps: int = 1, min_gap_us: float = 5.0, top: int = 15) -> dict:
    """Per step: span, GPU busy time, idle time split by cause, and the host ops most waited for."""
    spans = [e for e in events if e.get("ph") == "X"]
    gpu = sorted((e for e in spans if e.get("cat") in GPU), key=lambda e: e["ts"])
    launches = {e["args"]["correlation"]: e for e in spans
                if e.get("cat") in LAUNCH and "correlation" in e.get("args", {})}
    gaps, busy, end = [], 0.0, gpu[0]["ts"]
    for e in gpu:
        if e["ts"] > end + min_gap_us:
            gaps.append((end, e["ts"], launches.get(e.get("args", {}).get("correlation"))))
        busy += max(0.0, e["ts"] + e["dur"] - max(end, e["ts"]))
        end = max(end, e["ts"] + e["dur"])
    span = end - gpu[0]["ts"]
    starved = [(g0, g1, la) for g0, g1, la in gaps if la is not None and la["ts"] + la["dur"] >= g0]
    other = sum(g1 - g0 for g0, g1, la in gaps) - sum(g1 - g0 for g0, g1, _ in starved)
    stacks = enclosing(spans, [(la["tid"], la["ts"]) for _, _, la in starved])
    inner, outer = Counter(), Counter()
    for (g0, g1, _), stack in zip(starved, stacks):
        inner[stack[-1] if stack else "(no op: Python between ops)"] += g1 - g0
        outer[stack[0] if stack else "(no op: Python between ops)"] += g1 - g0
    syncs = Counter()
    for e in spans:
        if e.get("cat") in LAUNCH and e.get("name") in SYNCS:
            syncs[e["name"]] += e["dur"]
    ms = lambda us: round(us / 1e3 / steps, 3)  # noqa: E731
    return {"steps": steps, "span_ms": ms(span), "gpu_busy_ms": ms(busy), "idle_ms": ms(span - busy),
            "idle_waiting_for_host_ms": ms(sum(g1 - g0 for g0, g1, _ in starved)), "idle_other_ms": ms(other),
            "gaps": len(gaps) // steps,
            "by_innermost_op": {k: ms(v) for k, v in inner.most_common(top)},
            "by_outermost_op": {k: ms(v) for k, v in outer.most_common(top)},
            "host_sync_calls_ms": {k: ms(v) for k, v in syncs.most_common()}}


def enclosing(spans: list[dict], queries: list[tuple[int, float]]) -> list[list[str]]:
    """The names of the host ops open at each (thread, time), outermost first, by one sweep per thread."""
    ops = defaultdict(list)
    for e in spans:
        if e.get("cat") in HOST:
            ops[e["tid"]].append(e)
    for tid in ops:
        ops[tid].sort(key=lambda e: (e["ts"], -e["dur"]))
    answers: list[list[str]] = [[] for _ in queries]
    by_thread = defaultdict(list)
    for i, (tid, t) in enumerate(queries):
        by_thread[tid].append((t, i))
    for tid, asked in by_thread.items():
        stack, pending, k = [], ops.get(tid, []), 0
        for t, i in sorted(asked):
            while k < len(pending) and pending[k]["ts"] <= t:
                op = pending[k]
                while stack and stack[-1]["ts"] + stack[-1]["dur"] < op["ts"]:
                    stack.pop()
                stack.append(op)
                k += 1
            answers[i] = [op["name"] for op in stack if op["ts"] + op["dur"] >= t]
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace")
    parser.add_argument("--steps", type=int, default=1, help="steps the trace holds (figures are per step)")
    args = parser.parse_args()
    print(json.dumps(summarise(load(args.trace), args.steps), indent=2))


if __name__ == "__main__":
    main()
