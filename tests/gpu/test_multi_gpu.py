"""Two GPUs: LoRA, QLoRA and full fine-tuning under FSDP2 and DDP, with packing, varlen attention and
Liger per rank, and resume from a checkpoint a two-GPU run wrote. Run on nvidia-h200-x2:

    python -m pytest -m gpu tests/gpu/test_multi_gpu.py -q

Each test drives the CLI (`inhouse train --devices 2`, which relaunches itself through torchrun), as a
user does; builtin:tiny keeps every run to seconds.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import chat, write_jsonl

SRC = Path(__file__).resolve().parents[2] / "src"

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")]


def rows(n=64):
    return [chat(f"Where is order {100 + 7 * i}?" * (1 + i % 4), f"Order {100 + 7 * i} left." * (1 + i % 3))
            for i in range(n)]


def command(tmp_path, tiny_dir, name, *flags):
    data = tmp_path / "d.jsonl"
    if not data.exists():
        write_jsonl(data, rows())
    return [sys.executable, "-m", "inhouse", "train", "--train-file", str(data), "--base-model", str(tiny_dir),
            "--validation-fraction", "0", "--max-steps", "8", "--batch-size", "2", "--learning-rate", "1e-3",
            "--seed", "0", "--output-name", name, "--quiet", *flags]


def environment(tmp_path):
    env = {**os.environ, "INHOUSE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(SRC)}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def train_cli(tmp_path, tiny_dir, name, *flags):
    proc = subprocess.run(command(tmp_path, tiny_dir, name, *flags), env=environment(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count(f"adapter '{name}' saved") + proc.stdout.count(f"model '{name}' saved") == 1
    return json.loads((tmp_path / "home" / "adapters" / name / "inhouse.json").read_text())


def finite_losses(lineage):
    found = [e["loss"] for e in lineage["history"] if "loss" in e]
    return bool(found) and all(x == x and x < 1e4 for x in found)


@pytest.mark.parametrize("method,strategy", [("lora", "fsdp"), ("qlora", "fsdp"), ("full", "fsdp"),
                                             ("lora", "ddp"), ("qlora", "ddp")])
def test_two_gpus_train_and_publish_once(method, strategy, tmp_path, tiny_dir):
    name = f"{method}-{strategy}"
    lineage = train_cli(tmp_path, tiny_dir, name, "--method", method, "--strategy", strategy, "--devices", "2")
    assert lineage["speed"]["strategy"] == strategy and finite_losses(lineage)
    assert lineage["metrics"]["steps"] == 8


def test_packing_varlen_and_liger_per_rank_match_one_gpu(tmp_path, tiny_dir):
    """The same global batch on one GPU and on two: the loss curves agree within bf16 noise."""
    fast = ("--packing", "--attention", "varlen", "--liger")
    one = train_cli(tmp_path, tiny_dir, "one", *fast, "--gradient-accumulation", "2")
    two = train_cli(tmp_path, tiny_dir, "two", *fast, "--devices", "2")
    curve = lambda lineage: [e["loss"] for e in lineage["history"] if "loss" in e]  # noqa: E731
    assert len(curve(two)) == len(curve(one)) and curve(two) == pytest.approx(curve(one), rel=0.05, abs=0.05)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_resume_from_a_checkpoint_a_two_gpu_run_wrote(strategy, tmp_path, tiny_dir):
    name, env = f"resume-{strategy}", environment(tmp_path)
    args = [*command(tmp_path, tiny_dir, name, "--devices", "2", "--strategy", strategy, "--save-every", "2")]
    args[args.index("--max-steps") + 1] = "200"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = tmp_path / "home" / "runs" / name / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 600
    while proc.poll() is None and not state.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training ended before it could be killed"
    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "resuming from checkpoint-" in done.stdout
    lineage = json.loads((tmp_path / "home" / "adapters" / name / "inhouse.json").read_text())
    assert lineage["metrics"]["steps"] == 200 and finite_losses(lineage)
