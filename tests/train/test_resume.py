"""Crash-safe resume: a checkpoint whose save was cut short (kill -9 part-way) is never resumed from;
resume takes the newest complete one, says which, and removes the broken ones."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from helpers import chat, run_cli, write_jsonl
from transformers import TrainerCallback

from inhouse import paths
from inhouse import recipe as recipe_mod
from inhouse.errors import InhouseError
from inhouse.events import Events
from inhouse.train import checkpoints
from inhouse.train.sft import train

SRC = Path(__file__).resolve().parents[2] / "src"
NAME = "crash"
# What a LoRA checkpoint of builtin:tiny holds (transformers 5); the first test checks the list is whole.
FILES = ["README.md", "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "optimizer.pt",
         "rng_state.pth", "scheduler.pt", "tokenizer.json", "tokenizer_config.json", "trainer_state.json",
         "training_args.bin"]
# Resume cannot do without these (trainer_state.json is the last file a save writes).
NEEDED = {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "rng_state.pth", "scheduler.pt",
          "trainer_state.json"}
CHECKED = (".json", ".safetensors", ".pt", ".pth", ".bin")  # formats whose truncation is detectable


class InterruptAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


class Said(Events):
    def __init__(self):
        self.lines = []

    def log(self, kind, **data):
        if "message" in data:
            self.lines.append(f"{kind}: {data['message']}")


def crash_recipe(data, tiny_dir):
    # 6 steps: a checkpoint after every step (save_steps = max(1, 6 // 10)).
    return recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=6,
                            batch_size=2, output_name=NAME)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, tiny_dir):
    """A real run's folder holding complete checkpoint-2 and checkpoint-3, kept as a template."""
    root = tmp_path_factory.mktemp("crash")
    data = write_jsonl(root / "d.jsonl", [chat(f"Question {i}?", f"Answer {i}.") for i in range(8)])
    with mock.patch.dict(os.environ, {"INHOUSE_HOME": str(root / "home")}):
        run = paths.runs() / NAME
        with pytest.raises(InhouseError, match="interrupted"):
            train(crash_recipe(data, tiny_dir), events=Events(), callbacks=[InterruptAt(3)])
        shutil.copytree(run / "checkpoint-2", root / "keep-2")
        with pytest.raises(InhouseError, match="interrupted"):
            train(crash_recipe(data, tiny_dir), resume=True, events=Events(), callbacks=[InterruptAt(4)])
        shutil.copytree(root / "keep-2", run / "checkpoint-2")
        shutil.copytree(run, root / "template")
    assert [p.name for p in checkpoints.all_checkpoints(root / "template")] == ["checkpoint-3", "checkpoint-2"]
    return root / "template", data


def test_the_file_list_is_what_the_trainer_writes(two_checkpoints):
    template, _ = two_checkpoints
    assert sorted(p.name for p in (template / "checkpoint-3").iterdir()) == FILES
    assert checkpoints.problem(template / "checkpoint-3") is None
    assert checkpoints.last_complete(template) == template / "checkpoint-3"


def damage(file: Path, how: str) -> None:
    if how == "missing":
        file.unlink()
    else:
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


@pytest.mark.parametrize("how", ["missing", "truncated"])
@pytest.mark.parametrize("name", FILES)
def test_resume_takes_the_newest_complete_checkpoint(name, how, two_checkpoints, tiny_dir, home):
    template, data = two_checkpoints
    run = paths.runs() / NAME
    shutil.copytree(template, run)
    damage(run / "checkpoint-3" / name, how)
    broken = name in NEEDED if how == "missing" else name.endswith(CHECKED)
    events = Said()
    result = train(crash_recipe(data, tiny_dir), resume=True, events=events)
    assert result.metrics["steps"] == 6
    chosen = "checkpoint-2" if broken else "checkpoint-3"
    assert f"stage: resuming from {chosen} (step {chosen[-1]})" in events.lines
    removed = [line for line in events.lines if "incomplete" in line]
    assert len(removed) == broken, events.lines
    if broken:
        assert removed[0].startswith("warning: checkpoint-3 is incomplete") and name.split(".")[0] in removed[0]


def test_nothing_complete_to_resume_is_one_line_naming_what_is_missing(two_checkpoints, tiny_dir, home):
    template, data = two_checkpoints
    run = paths.runs() / NAME
    shutil.copytree(template / "checkpoint-3", run / "checkpoint-3")
    (run / "checkpoint-3" / "trainer_state.json").unlink()
    with pytest.raises(InhouseError, match=r"^nothing to resume: .*\(checkpoint-3: no trainer_state\.json\)$"):
        train(crash_recipe(data, tiny_dir), resume=True, events=Events())


def test_a_new_run_clears_the_debris_of_an_interrupted_save(two_checkpoints, tiny_dir, home):
    template, data = two_checkpoints
    run = paths.runs() / NAME
    shutil.copytree(template / "checkpoint-3", run / "checkpoint-3")
    (run / "checkpoint-3" / "optimizer.pt").unlink()
    events = Said()
    assert train(crash_recipe(data, tiny_dir), events=events).metrics["steps"] == 6
    assert any(line.startswith("warning: checkpoint-3 is incomplete (no optimizer.pt") for line in events.lines)


def test_the_jobs_runner_resumes_only_a_complete_checkpoint(two_checkpoints, home, monkeypatch):
    """jobs.run decides resume=True/False with the same test; the settling itself is train's."""
    from inhouse.jobs import run as job_run

    template, _ = two_checkpoints
    seen = {}
    monkeypatch.setattr("inhouse.train.sft.train", lambda recipe, resume, **_: seen.setdefault("resume", resume))
    monkeypatch.setattr(job_run.spec, "recipe_for", lambda job, store: None)
    monkeypatch.setattr(job_run, "succeeded", lambda *a: None)
    store = mock.Mock()
    store.get.return_value = {"id": "ftjob-1", "output_name": NAME, "training_file": "f", "validation_file": None}
    shutil.copytree(template / "checkpoint-3", paths.runs() / NAME / "checkpoint-3")
    (paths.runs() / NAME / "checkpoint-3" / "rng_state.pth").write_bytes(b"")
    job_run.run("ftjob-1", store)
    assert seen == {"resume": False}
    seen.clear()
    shutil.copytree(template / "checkpoint-2", paths.runs() / NAME / "checkpoint-2")
    job_run.run("ftjob-1", store)
    assert seen == {"resume": True}


def partial_checkpoint(run: Path, files: int) -> Path | None:
    """A checkpoint past the first whose save is under way (no trainer_state.json yet) and holds `files`."""
    for folder in checkpoints.all_checkpoints(run):
        try:
            names = {p.name for p in folder.iterdir()}
        except FileNotFoundError:
            continue  # rotated away meanwhile
        if folder.name != "checkpoint-1" and "trainer_state.json" not in names and len(names) >= files:
            return folder
    return None


@pytest.mark.parametrize("files", [0, 6])
def test_kill_9_during_a_save_then_resume_succeeds(files, tmp_path, tiny_dir, home):
    """A real `kill -9` of `inhouse train` while it writes a checkpoint (empty, or part-written), then --resume."""
    data = write_jsonl(tmp_path / "d.jsonl", [chat(f"Question {i}?", f"Answer {i}.") for i in range(16)])
    args = ["train", "--base-model", str(tiny_dir), "--train-file", str(data), "--validation-fraction", "0",
            "--max-steps", "19", "--batch-size", "1", "--output-name", "killed"]  # a checkpoint every step
    env = {**os.environ, "PYTHONPATH": str(SRC), "INHOUSE_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "inhouse", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    run, deadline, caught = home / "runs" / "killed", time.monotonic() + 240, None
    while proc.poll() is None and time.monotonic() < deadline and caught is None:
        caught = partial_checkpoint(run, files)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training ended before it could be killed"
    left = caught is not None and caught.is_dir() and not (caught / "trainer_state.json").exists()
    code, out, err = run_cli(*args, "--resume", "--quiet")
    assert code == 0, err
    assert "resuming from checkpoint-" in out
    assert not left or f"{caught.name} is incomplete" in out
    assert (home / "adapters" / "killed" / "adapter_model.safetensors").is_file()


def test_save_every_sets_the_checkpoint_interval(tmp_path, tiny_dir, home):
    """Checkpoints land every save_every steps, not after each step as 10% of this 6-step run would put them."""
    data = write_jsonl(tmp_path / "d.jsonl", [chat(f"Question {i}?", f"Answer {i}.") for i in range(8)])
    recipe = crash_recipe(data, tiny_dir).model_copy(update={"save_every": 2, "output_name": "spaced"})
    with pytest.raises(InhouseError, match="interrupted"):
        train(recipe, events=Events(), callbacks=[InterruptAt(5)])
    assert [p.name for p in checkpoints.all_checkpoints(paths.runs() / "spaced")] == ["checkpoint-4"]


def test_a_rank_without_its_random_state_makes_the_checkpoint_incomplete(two_checkpoints, tmp_path):
    """Several ranks write rng_state_0..N-1.pth, rank 0 its trainer_state.json without waiting for the rest."""
    folder = tmp_path / "checkpoint-3"
    shutil.copytree(two_checkpoints[0] / "checkpoint-3", folder)
    assert checkpoints.problem(folder) is None
    (folder / "rng_state.pth").rename(folder / "rng_state_0.pth")
    assert checkpoints.problem(folder) == "no rng_state_1.pth"  # numbered: two ranks at least
    shutil.copy(folder / "rng_state_0.pth", folder / "rng_state_2.pth")
    assert checkpoints.problem(folder) == "no rng_state_1.pth"
    shutil.copy(folder / "rng_state_0.pth", folder / "rng_state_1.pth")
    assert checkpoints.problem(folder) is None
