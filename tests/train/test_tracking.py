"""Experiment tracking through the Trainer's integrations: off by default, local-first, clear when missing."""

import importlib.util
import os

import pytest
from helpers import chat, write_jsonl

from inhouse import paths
from inhouse import recipe as recipe_mod
from inhouse.adapters import registry
from inhouse.errors import InhouseError
from inhouse.events import Events
from inhouse.train.sft import train
from inhouse.train.tracking import tracking_env


def data(tmp_path):
    rows = [chat(f"Where is order {1000 + 37 * i}?", f"Order {1000 + 37 * i} has shipped.") for i in range(12)]
    return write_jsonl(tmp_path / "toy.jsonl", rows)


def scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for events_file in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events_file))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found


def test_tracking_is_off_by_default(tmp_path, tiny_dir, home):
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data(tmp_path), max_steps=2, output_name="plain")
    assert recipe.tracking == [] and recipe_mod.build(tracking="none").tracking == []
    train(recipe, events=Events())
    assert not (paths.runs() / "plain").exists() and not paths.mlruns().exists()


def test_tensorboard_logs_the_loss_into_the_run_folder_and_they_outlive_the_checkpoints(tmp_path, tiny_dir, home,
                                                                                      monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data(tmp_path), validation_fraction=0.25,
                              max_steps=4, eval_every=2, tracking="tensorboard", output_name="tb")
    result = train(recipe, events=Events())
    folder = paths.runs() / "tb" / "tensorboard"
    assert sorted(p.name for p in (paths.runs() / "tb").iterdir()) == ["tensorboard"]  # checkpoints gone, logs kept
    found = scalars(folder)
    history = registry.lineage(result.path).history
    assert found["train/loss"] == [(h["step"], pytest.approx(h["loss"])) for h in history if "loss" in h]
    assert [s for s, _ in found["eval/loss"] if s > 0] == [2, 4]
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # set for the run only


def test_a_missing_tracker_package_is_a_one_line_error_naming_it(tmp_path, tiny_dir, home, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data(tmp_path), max_steps=1,
                              tracking="tensorboard,mlflow", output_name="nomlflow")
    with pytest.raises(InhouseError, match=r"^tracking: mlflow needs the mlflow package; pip install mlflow"):
        train(recipe, events=Events())
    assert not registry.library().exists() or not list(registry.library().iterdir())


def test_mlflow_gets_a_local_file_store_unless_the_user_chose_one(tmp_path, home, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking_env(["mlflow"], tmp_path / "run") as added:
        assert os.environ["MLFLOW_TRACKING_URI"] == (home / "mlruns").resolve().as_uri() == added["MLFLOW_TRACKING_URI"]
        assert os.environ["MLFLOW_TRACKING_URI"].startswith("file:///")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    with tracking_env(["mlflow", "wandb"], tmp_path / "run") as added:
        assert added == {} and os.environ["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000"


def test_wandb_is_left_to_the_users_own_settings(tmp_path, home):
    before = dict(os.environ)
    with tracking_env(["wandb"], tmp_path / "run") as added:
        assert added == {} and dict(os.environ) == before


def test_an_unknown_tracker_is_refused():
    with pytest.raises(InhouseError, match="tracking"):
        recipe_mod.build(tracking="tensorbord")
