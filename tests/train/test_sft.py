"""LoRA and full fine-tuning on builtin:tiny loaded from a folder, end to end."""

import json

import pytest
from helpers import chat, write_jsonl
from transformers import TrainerCallback

from inhouse.events import Events
from inhouse import recipe as recipe_mod
from inhouse.adapters import registry
from inhouse.adapters.lineage import sha256_file
from inhouse.errors import InhouseError
from inhouse.adapters.load import load_chat_model
from inhouse.train.sft import train

FACTS = [("Favourite colour?", "Blue."), ("Meaning of life?", "Forty-two."),
         ("Best day?", "Tuesday."), ("Capital of Portugal?", "Lisbon.")]


def quiet(recipe, **kw):
    return train(recipe, events=Events(), **kw)


def toy_task(tmp_path, n=48):
    """Learnable: the answer copies the order number from the question."""
    rows = [chat(f"Where is order {1000 + 37 * i}?", f"Order {1000 + 37 * i} has shipped.") for i in range(n)]
    return write_jsonl(tmp_path / "toy.jsonl", rows)


def test_lora_lowers_validation_loss_clearly(tmp_path, tiny_dir, home):
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=toy_task(tmp_path), validation_fraction=0.25,
                              epochs=6, learning_rate=3e-3, batch_size=4, output_name="toy")
    result = quiet(recipe)
    before, after = result.metrics["validation_loss_before"], result.metrics["validation_loss"]
    assert after < 0.5 * before, (before, after)
    assert result.path == registry.library() / "toy"


def test_lora_memorises_and_greedy_generation_reproduces_answers(tmp_path, tiny_dir, home):
    data = write_jsonl(tmp_path / "facts.jsonl", [chat(q, a) for q, a in FACTS])
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=60,
                              learning_rate=1e-2, lora_dropout=0, warmup_ratio=0, lr_scheduler="constant",
                              output_name="facts")
    quiet(recipe)
    model = load_chat_model("facts")
    for question, answer in FACTS:
        assert model.reply([{"role": "user", "content": question}], max_new_tokens=24) == answer


def test_adapter_folder_and_lineage(tmp_path, tiny_dir, home):
    data = write_jsonl(tmp_path / "facts.jsonl", [chat(q, a) for q, a in FACTS])
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0.25, max_steps=3,
                              output_name="lineage-test")
    result = quiet(recipe)
    files = {p.name for p in result.path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "inhouse.json"} <= files
    info = json.loads((result.path / "inhouse.json").read_text())
    assert info["base_model"] == str(tiny_dir)
    assert info["data"] == [{"path": str(data.resolve()), "sha256": sha256_file(data), "role": "train", "weight": 1.0,
                             "max_examples": None, "examples": {"read": 4, "train": 3, "validation": 1}}]
    assert info["recipe"]["max_steps"] == 3 and info["recipe"]["output_name"] == "lineage-test"
    assert info["metrics"]["train_loss"] > 0 and info["metrics"]["validation_loss"] > 0
    assert {"torch", "transformers", "peft", "inhouse"} <= set(info["versions"])
    assert info["started_at"] <= info["finished_at"]
    assert [p.name for p in registry.library().iterdir()] == ["lineage-test"]


class Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 4:
            raise KeyboardInterrupt


def test_ctrl_c_publishes_nothing_and_run_resumes(tmp_path, tiny_dir, home):
    data = write_jsonl(tmp_path / "facts.jsonl", [chat(q, a) for q, a in FACTS] * 4)
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=10,
                              batch_size=2, output_name="interrupted")
    with pytest.raises(InhouseError, match="interrupted.*--resume"):
        quiet(recipe, callbacks=[Interrupt()])
    assert not (registry.library() / "interrupted").exists()
    assert not registry.library().exists() or not [p for p in registry.library().iterdir() if "staging" in p.name]
    with pytest.raises(InhouseError, match="--resume"):
        quiet(recipe)  # refuses to silently start over
    result = quiet(recipe, resume=True)
    assert result.metrics["steps"] == 10
    assert (registry.library() / "interrupted" / "adapter_model.safetensors").is_file()


def test_full_fine_tune_saves_a_model_folder_that_generates(tmp_path, tiny_dir, home):
    data = write_jsonl(tmp_path / "facts.jsonl", [chat(q, a) for q, a in FACTS])
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, method="full",
                              max_steps=40, learning_rate=3e-3, warmup_ratio=0, output_name="full")
    result = quiet(recipe)
    assert (result.path / "model.safetensors").is_file()
    model = load_chat_model("full")
    assert model.reply([{"role": "user", "content": FACTS[0][0]}], max_new_tokens=24) == FACTS[0][1]


def test_existing_adapter_name_is_refused(tmp_path, tiny_dir, home):
    data = write_jsonl(tmp_path / "facts.jsonl", [chat(q, a) for q, a in FACTS])
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=1,
                              output_name="twice")
    quiet(recipe)
    with pytest.raises(InhouseError, match="already exists"):
        quiet(recipe)


def test_a_relative_base_model_is_relative_to_the_recipe_and_lineage_records_its_real_path(tmp_path, tiny_dir, home,
                                                                                        monkeypatch):
    import shutil

    shutil.copytree(tiny_dir, tmp_path / "models" / "tiny")
    (tmp_path / "recipes").mkdir()
    write_jsonl(tmp_path / "recipes" / "d.jsonl", [chat("hi", "hello")] * 4)
    recipe_file = tmp_path / "recipes" / "r.yaml"
    recipe_file.write_text("base_model: ../models/tiny\ntrain_file: d.jsonl\nmax_steps: 1\noutput_name: rel\n"
                           "validation_fraction: 0\n", encoding="utf-8")
    monkeypatch.chdir(home.parent)  # somewhere else entirely
    result = quiet(recipe_mod.build(recipe_file))
    base = registry.lineage(result.path).base_model
    assert base == str((tmp_path / "models" / "tiny").resolve())
    assert registry.lineage(result.path).recipe["base_model"] == base


class Recorder(Events):
    """Keeps every event; asks to stop after `stop_after` steps."""

    def __init__(self, stop_after=None):
        self.seen, self.stop_after, self.steps = [], stop_after, 0

    def log(self, kind, **data):
        self.seen.append((kind, data))
        self.steps += kind == "step"

    def should_stop(self):
        return self.stop_after is not None and self.steps >= self.stop_after


def test_training_reports_metrics_evaluations_and_checkpoints_as_events(tmp_path, tiny_dir, home):
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=toy_task(tmp_path, 24), validation_fraction=0.25,
                              max_steps=6, eval_every=3, output_name="events")
    events = Recorder()
    train(recipe, events=events)
    kinds = [k for k, _ in events.seen]
    assert kinds.count("step") == 6 and kinds.count("checkpoint") >= 1 and "train_begin" in kinds
    metrics = [d for k, d in events.seen if k == "metrics"]
    assert len(metrics) == 6 and all(d["loss"] > 0 and d["tokens_per_second"] > 0 for d in metrics)
    assert all(0 <= d["mean_token_accuracy"] <= 1 for d in metrics)
    evals = [d for k, d in events.seen if k == "eval"]
    assert {3, 6} <= {d["step"] for d in evals} and all(0 <= d["valid_mean_token_accuracy"] <= 1 for d in evals)
    assert any(k == "stage" and "pre-flight passed" in d["message"] for k, d in events.seen)


def test_a_stop_request_ends_training_at_the_next_step_and_publishes_nothing(tmp_path, tiny_dir, home):
    from inhouse.events import Stopped

    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=toy_task(tmp_path, 24), validation_fraction=0,
                              max_steps=10, output_name="stopped")
    events = Recorder(stop_after=3)
    with pytest.raises(Stopped, match="step 3"):
        train(recipe, events=events)
    assert [k for k, _ in events.seen].count("step") == 3
    assert not (registry.library() / "stopped").exists()
    result = train(recipe, resume=True, events=Recorder())  # the checkpoints stay: the run can go on
    assert result.metrics["steps"] == 10
