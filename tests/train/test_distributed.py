"""Several processes: DDP on CPUs (gloo) trains like one process on the same global batch, only rank 0
writes, and the strategy settings reach the Trainer. FSDP needs GPUs (tests marked gpu)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import chat, write_jsonl

from inhouse import recipe as recipe_mod
from inhouse import world
from inhouse.errors import InvalidInputError
from inhouse.train import checkpoints, distributed

SRC = Path(__file__).resolve().parents[2] / "src"


def test_the_world_comes_from_the_launchers_environment(monkeypatch):
    assert world.current() == world.World(0, 0, 1) and world.current().is_main
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    here = world.current()
    assert (here.rank, here.local_rank, here.size, here.is_main, here.distributed) == (3, 1, 4, False, True)


def test_strategy_and_its_trainer_settings(monkeypatch, tiny_dir):
    lora = recipe_mod.build(base_model=str(tiny_dir), train_file="x.jsonl")
    assert distributed.strategy(lora) is None and distributed.trainer_settings(lora, ["L"], True) == {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.strategy(lora) == "ddp"
    full = lora.model_copy(update={"method": "full"})
    monkeypatch.setattr(world, "gpu", lambda: True)
    assert distributed.strategy(full) == "fsdp"
    monkeypatch.setattr(world, "gpu", lambda: False)  # accelerate shards on GPUs only
    assert distributed.strategy(full) == "ddp"
    with pytest.raises(InvalidInputError, match="^--strategy: fsdp needs GPUs"):
        distributed.check_world(lora.model_copy(update={"strategy": "fsdp"}))
    fsdp = distributed.trainer_settings(lora.model_copy(update={"strategy": "fsdp"}), ["LlamaDecoderLayer"], True)
    assert fsdp["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert fsdp["fsdp_config"]["version"] == 2 and fsdp["fsdp_config"]["activation_checkpointing"] is True
    assert distributed.trainer_settings(lora, ["L"], False) == {"ddp_find_unused_parameters": False}


def test_devices_must_match_the_processes(monkeypatch, tiny_dir):
    two = recipe_mod.build(base_model=str(tiny_dir), train_file="x.jsonl", devices=2)
    assert distributed.needs_launch(two)
    with pytest.raises(InvalidInputError, match="--devices: 2 asked for, but this run has 1 process"):
        distributed.check_world(two)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not distributed.needs_launch(two)
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(InvalidInputError, match="the launcher started 3 processes"):
        distributed.check_world(two)
    config = distributed.launch_config(2)
    assert (config.nproc_per_node, config.max_nodes, config.max_restarts, config.rdzv_endpoint) == (2, 1, 0, "localhost:0")


def train_cli(tmp_path, data, tiny_dir, name, *flags):
    env = {**os.environ, "INHOUSE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "inhouse", "train", "--train-file", str(data), "--base-model",
                           str(tiny_dir), "--validation-fraction", "0", "--max-steps", "4", "--lora-dropout", "0",
                           "--learning-rate", "1e-3", "--warmup-ratio", "0", "--seed", "0", "--output-name", name,
                           "--quiet", *flags], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def losses(home: Path, name: str) -> list[float]:
    lineage = json.loads((home / "adapters" / name / "inhouse.json").read_text())
    return [round(e["loss"], 4) for e in lineage["history"] if "loss" in e]


def test_ddp_on_two_cpu_processes_matches_one_process_on_the_same_global_batch(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "d.jsonl", [chat(f"What is item {i}?", f"Item {i} is a {'red' if i % 2 else 'blue'} "
                                                                          f"widget number {i * 7}.") for i in range(32)])
    train_cli(tmp_path, data, tiny_dir, "one", "--batch-size", "4")
    two = train_cli(tmp_path, data, tiny_dir, "two", "--batch-size", "2", "--devices", "2")
    home = tmp_path / "home"
    assert len(losses(home, "two")) == 4 and losses(home, "two") == pytest.approx(losses(home, "one"), abs=2e-3)
    assert sorted(p.name for p in (home / "adapters").iterdir() if not p.name.startswith(".")) == ["one", "two"]
    assert two.stdout.count("adapter 'two' saved") == 1  # rank 1 said nothing
    lineage = json.loads((home / "adapters" / "two" / "inhouse.json").read_text())
    assert lineage["speed"]["strategy"] == "ddp" and not (home / "runs" / "two").exists()


def test_accelerate_launch_runs_the_same_command(tmp_path, tiny_dir):
    """`accelerate launch -m inhouse train` (torchrun underneath; gloo on these CPUs) is rank-aware too."""
    data = write_jsonl(tmp_path / "d.jsonl", [chat(f"What is item {i}?", f"Item {i} is blue.") for i in range(8)])
    env = {**os.environ, "INHOUSE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "inhouse",
                           "train", "--train-file", str(data), "--base-model", str(tiny_dir), "--max-steps", "2",
                           "--validation-fraction", "0", "--output-name", "acc", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("adapter 'acc' saved") == 1 and "ddp on 2 processes" in proc.stdout
    assert json.loads((tmp_path / "home" / "adapters" / "acc" / "inhouse.json").read_text())["speed"]["strategy"] == "ddp"


def test_a_killed_two_process_run_resumes_on_two_processes(tmp_path, tiny_dir):
    """kill -9 of `inhouse train --devices 2` once a checkpoint is written: its ranks die with it (they do
    not train on and publish unseen); --resume --devices 2 restarts both from the checkpoint, each with its
    own random state, and rank 0 alone publishes."""
    import signal
    import time

    data = write_jsonl(tmp_path / "d.jsonl", [chat(f"What is item {i}?", f"Item {i} is blue.") for i in range(16)])
    home = tmp_path / "home"
    env = {**os.environ, "INHOUSE_HOME": str(home), "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    args = [sys.executable, "-m", "inhouse", "train", "--train-file", str(data), "--base-model", str(tiny_dir),
            "--validation-fraction", "0", "--max-steps", "200", "--save-every", "2", "--batch-size", "1",
            "--devices", "2", "--output-name", "ddp-resume", "--quiet"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run, deadline = home / "runs" / "ddp-resume", time.monotonic() + 600
    while proc.poll() is None and not both_ranks_saved(run) and time.monotonic() < deadline:
        time.sleep(0.01)  # a stat per checkpoint: fast enough to catch the first one
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training ended before it could be killed"
    time.sleep(5)  # what orphaned ranks would use to train on
    assert checkpoints.last_complete(run) is not None and not (home / "adapters" / "ddp-resume").exists()
    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("resuming from checkpoint-") == 1 and done.stdout.count("adapter 'ddp-resume' saved") == 1
    lineage = json.loads((home / "adapters" / "ddp-resume" / "inhouse.json").read_text())
    assert lineage["speed"]["strategy"] == "ddp" and lineage["metrics"]["steps"] == 200
    again = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and again.stderr.startswith("error: nothing to resume: no complete checkpoint")
    assert len(again.stderr.strip().splitlines()) == 1  # said once, by the launching process


def both_ranks_saved(run: Path) -> bool:
    try:
        return any((c / "trainer_state.json").is_file() and (c / "rng_state_1.pth").is_file()
                   for c in run.glob("checkpoint-*"))
    except OSError:  # a checkpoint rotated away meanwhile
        return False
