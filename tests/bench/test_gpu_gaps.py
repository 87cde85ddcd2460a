"""The bench's idle-gap analysis on a hand-made trace: its numbers steer what gets optimised."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("gpu_gaps", Path(__file__).parents[2] / "bench" / "gpu_gaps.py")
gpu_gaps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_gaps)


def span(cat, name, ts, dur, tid=1, corr=None):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "tid": tid,
            "args": {} if corr is None else {"correlation": corr}}


def test_gaps_are_split_into_waiting_for_the_host_and_other():
    events = [
        span("kernel", "k1", 0, 10, tid=7, corr=1), span("cuda_runtime", "cudaLaunchKernel", 0, 1, corr=1),
        span("user_annotation", "Optimizer.step", 20, 20), span("cpu_op", "aten::mm", 25, 10),
        span("cuda_runtime", "cudaLaunchKernel", 30, 2, corr=2), span("kernel", "k2", 32, 18, tid=7, corr=2),
        span("cuda_runtime", "cudaLaunchKernel", 5, 1, corr=3), span("kernel", "k3", 60, 10, tid=7, corr=3),
        span("cuda_runtime", "cudaStreamSynchronize", 70, 4),
    ]
    found = gpu_gaps.summarise(events, steps=1)
    assert found["span_ms"] == 0.07 and found["gpu_busy_ms"] == 0.038 and found["idle_ms"] == 0.032
    # k2 was launched at 30, after k1 ended at 10, inside aten::mm inside the optimizer step; k3 was queued early
    assert found["idle_waiting_for_host_ms"] == 0.022 and found["idle_other_ms"] == 0.01
    assert found["by_innermost_op"] == {"aten::mm": 0.022}
    assert found["by_outermost_op"] == {"Optimizer.step": 0.022}
    assert found["host_sync_calls_ms"] == {"cudaStreamSynchronize": 0.004}
    assert found["gaps"] == 2


def test_a_launch_outside_any_op_is_charged_to_python():
    events = [span("kernel", "k1", 0, 10, tid=7, corr=1), span("cuda_runtime", "cudaLaunchKernel", 0, 1, corr=1),
              span("cpu_op", "aten::add", 12, 3), span("cuda_runtime", "cudaLaunchKernel", 40, 2, corr=2),
              span("kernel", "k2", 45, 5, tid=7, corr=2)]
    found = gpu_gaps.summarise(events, steps=1)
    assert found["by_innermost_op"] == {"(no op: Python between ops)": 0.035}
