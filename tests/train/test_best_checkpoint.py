"""Best-checkpoint selection and early stopping on validation loss, on builtin:tiny."""


import pytest
from helpers import chat, write_jsonl
from transformers import TrainerCallback

from inhouse import recipe as recipe_mod
from inhouse import paths
from inhouse.adapters import registry
from inhouse.errors import InhouseError
from inhouse.events import Events
from inhouse.train.sft import train


class Recorder(Events):
    def __init__(self):
        self.seen = []

    def log(self, kind, **data):
        self.seen.append((kind, data))


def overfitting(tmp_path, n=16):
    """Validation asks the training questions but wants other answers: the more the model learns the
    training answers, the worse validation gets, so the best checkpoint comes early, not last."""
    train_rows = [chat(f"Status of order {1000 + 37 * i}?", f"Order {1000 + 37 * i} shipped today.") for i in range(n)]
    val_rows = [chat(f"Status of order {1000 + 37 * i}?", "Cancelled: refund issued.") for i in range(n // 2)]
    return write_jsonl(tmp_path / "train.jsonl", train_rows), write_jsonl(tmp_path / "val.jsonl", val_rows)


def recipe_for(tmp_path, tiny_dir, **kw):
    train_file, val_file = overfitting(tmp_path)
    fields = dict(base_model=str(tiny_dir), train_file=train_file, validation_file=val_file, batch_size=4,
                  learning_rate=1e-2, warmup_ratio=0, lr_scheduler="constant", lora_dropout=0, eval_every=2)
    return recipe_mod.build(**(fields | kw))


def evals(lineage):
    return [(h["step"], h["eval_loss"]) for h in lineage.history if "eval_loss" in h and h["step"] > 0]


def test_the_published_adapter_is_the_best_validation_checkpoint_not_the_last(tmp_path, tiny_dir, home):
    result = train(recipe_for(tmp_path, tiny_dir, max_steps=12, output_name="best"), events=Events())
    lineage = registry.lineage(result.path)
    points = evals(lineage)
    assert [s for s, _ in points] == [2, 4, 6, 8, 10, 12]
    best_step, best_loss = min(points, key=lambda p: p[1])
    assert best_step < 12, points  # the data is built so that the last step is not the best
    m = lineage.metrics
    assert (m["published_step"], m["steps"], m["stopped_early"]) == (best_step, 12, False)
    assert m["best_validation_loss"] == pytest.approx(best_loss)
    # measured again on the published weights, after loading them: the best checkpoint's loss, not the last's
    assert m["validation_loss"] == pytest.approx(best_loss, rel=1e-4)
    assert not (paths.runs() / "best").exists() or not list((paths.runs() / "best").glob("checkpoint-*"))


def test_early_stopping_ends_the_run_after_patience_evaluations_without_improvement(tmp_path, tiny_dir, home):
    events = Recorder()
    result = train(recipe_for(tmp_path, tiny_dir, max_steps=60, early_stopping_patience=2, output_name="early"),
                   events=events)
    m = registry.lineage(result.path).metrics
    points = evals(registry.lineage(result.path))
    best_step, best_loss = min(points, key=lambda p: p[1])
    assert m["stopped_early"] is True and m["steps"] < 60
    assert [s for s, _ in points if s > best_step] == [best_step + 2, best_step + 4]  # patience 2, then stop
    assert m["steps"] == best_step + 4 and m["published_step"] == best_step
    assert m["validation_loss"] == pytest.approx(best_loss, rel=1e-4)
    stops = [d for k, d in events.seen if k == "early_stop"]
    assert stops == [{"step": best_step + 4, "best_step": best_step, "best_valid_loss": pytest.approx(best_loss),
                      "patience": 2}]


def test_a_run_that_never_stalls_is_not_reported_as_stopped_early(tmp_path, tiny_dir, home):
    rows = [chat(f"Where is order {1000 + 37 * i}?", f"Order {1000 + 37 * i} has shipped.") for i in range(24)]
    data = write_jsonl(tmp_path / "toy.jsonl", rows)
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0.25, max_steps=6,
                              eval_every=3, learning_rate=3e-3, early_stopping_patience=5, output_name="steady")
    events = Recorder()
    m = train(recipe, events=events).metrics
    assert m["stopped_early"] is False and m["steps"] == 6
    assert "early_stop" not in [k for k, _ in events.seen]


def test_early_stopping_without_validation_data_is_an_error(tmp_path, tiny_dir, home):
    data = write_jsonl(tmp_path / "d.jsonl", [chat("hi", "hello")] * 4)
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=2,
                              early_stopping_patience=2, output_name="nope")
    with pytest.raises(InhouseError, match="early_stopping_patience needs validation data"):
        train(recipe, events=Events())
    assert not (registry.library() / "nope").exists()


class Interrupt(TrainerCallback):
    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt


def test_resume_keeps_the_best_checkpoint_and_the_early_stopping_count(tmp_path, tiny_dir, home):
    """An interrupted and resumed run stops and publishes exactly as the uninterrupted one does."""
    whole = train(recipe_for(tmp_path, tiny_dir, max_steps=60, early_stopping_patience=3, output_name="whole"),
                  events=Events()).metrics
    assert whole["stopped_early"]
    # interrupt after the first evaluation without improvement, so the count (1) must survive the resume
    stop_at = whole["published_step"] + 3
    recipe = recipe_for(tmp_path, tiny_dir, max_steps=60, early_stopping_patience=3, output_name="resumed")
    with pytest.raises(InhouseError, match="interrupted"):
        train(recipe, events=Events(), callbacks=[Interrupt(stop_at)])
    kept = sorted(p.name for p in (paths.runs() / "resumed").glob("checkpoint-*"))
    # save_total_limit=1 keeps the latest checkpoint and the best one
    assert kept == sorted({f"checkpoint-{whole['published_step']}", f"checkpoint-{stop_at - 1}"}), kept
    again = train(recipe, resume=True, events=Events()).metrics
    for key in ("steps", "published_step", "stopped_early"):
        assert again[key] == whole[key], key
    assert again["validation_loss"] == pytest.approx(whole["validation_loss"], rel=1e-4)
