"""Time and peak memory of `inhouse data check` (no --model) on many tiny chat examples.

    python bench/data_check_scale.py                   # 100,000 and 1,000,000 examples
    python bench/data_check_scale.py --sizes 10000     # quick check

Writes one JSONL file per size (three-message chat examples of ~150 bytes, a
category on every tenth), runs the real command in a subprocess and reads its
wall time and peak RSS (`ru_maxrss` of the child). Target (issue #16): one
million examples in under a minute on a 2-core machine, memory far below the
file's size times ten.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "data_check_scale.json"


def write_examples(path: Path, n: int) -> None:
    """Deterministic tiny examples, written in blocks so the writer itself stays small."""
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, n, 10_000):
            f.write("".join(_line(i) for i in range(start, min(n, start + 10_000))))


def _line(i: int) -> str:
    example = {"messages": [{"role": "system", "content": "You are helpful."},
                            {"role": "user", "content": f"Where is order {i}?"},
                            {"role": "assistant", "content": f"Order {i} ships tomorrow."}]}
    if i % 10 == 0:
        example["category"] = f"c{i % 7}"
    return json.dumps(example) + "\n"


def run_check(path: Path) -> dict:
    """One `inhouse data check` in a child process: seconds, peak RSS, exit code, last line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    clock = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "inhouse", "data", "check", str(path)],
                          capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - clock
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak_kb / 1024, 1), "exit": done.returncode,
            "verdict": (done.stdout.strip().splitlines() or [done.stderr.strip()])[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.sizes):  # smallest first: ru_maxrss of children only grows
            path = Path(tmp) / f"chat_{n}.jsonl"
            write_examples(path, n)
            rows.append({"examples": n, "file_mb": round(path.stat().st_size / 2**20, 1)} | run_check(path))
            path.unlink()
    print("| examples  | file MB | seconds | peak RSS MB | exit |")
    print("|-----------|---------|---------|-------------|------|")
    for r in rows:
        print(f"| {r['examples']:>9,} | {r['file_mb']:>7} | {r['seconds']:>7} | {r['peak_rss_mb']:>11} | {r['exit']:>4} |")
    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "python": platform.python_version(), "command": "inhouse data check FILE", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
