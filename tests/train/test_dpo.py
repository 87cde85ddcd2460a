"""DPO on TRL's DPOTrainer: learns a toy preference, masks as SFT does, keeps no copy of the base, publishes."""

import io
import json

import pytest
import torch
from helpers import chat, write_jsonl
from transformers import TrainerCallback

from inhouse import paths
from inhouse import recipe as recipe_mod
from inhouse.adapters import registry
from inhouse.adapters.load import load_chat_model
from inhouse.data.conversation import Message
from inhouse.data.preference import PreferencePair
from inhouse.errors import InhouseError
from inhouse.events import Events
from inhouse.model import load as model_load
from inhouse.model import tiny
from inhouse.model.template import IGNORE, encode, stop_token_ids
from inhouse.train import dpo
from inhouse.train.pairs import PairCollator, answer_side, as_rows, encode_pairs
from inhouse.train.rewards import REF_ADAPTER, reference
from inhouse.train.sft import train

TOPICS = ["the report", "my taxes", "a cover letter", "the garden", "this bug", "the move", "my homework",
          "the budget", "a birthday card", "the slides", "my bike", "the recipe", "a poem", "the invoice",
          "the schedule", "my essay", "the printer", "a speech", "the contract", "my resume", "the survey",
          "the website", "a toast", "the translation", "the puzzle", "my diet", "the flight", "a letter",
          "the spreadsheet", "the lesson", "my password", "the party"]


def polite_pair(topic, line=0):
    """Learnable: the chosen answer is courteous, the rejected one curt, whatever the request."""
    return PreferencePair((Message("user", f"Could you help me with {topic}?"),),
                          (Message("assistant", f"Of course! I would be glad to help with {topic}."),),
                          (Message("assistant", f"No. Do {topic} yourself."),), "toy", line)


PAIRS = [polite_pair(t, i + 1) for i, t in enumerate(TOPICS)]
TRAIN, HELD_OUT = PAIRS[:24], PAIRS[24:]  # held-out topics never seen in training
FAST = dict(method="dpo", batch_size=4, learning_rate=5e-3, warmup_ratio=0, lr_scheduler="constant")


class Recorder(Events):
    def __init__(self):
        self.seen = []

    def log(self, kind, **data):
        self.seen.append((kind, data))


class SeesModel(TrainerCallback):
    """What the trainer trains: its adapters and parameters, as training begins."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.adapters = list(model.peft_config)
        self.base_numel = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
        self.ref_trainable = any(p.requires_grad for n, p in model.named_parameters() if f".{REF_ADAPTER}." in n)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.ref_after = {n.replace(f".{REF_ADAPTER}.", ".default."): p.detach().clone()
                          for n, p in model.named_parameters() if f".{REF_ADAPTER}." in n}


@pytest.fixture(scope="module")
def trained(tiny_dir, tmp_path_factory):
    """One DPO run on the toy preference, shared by the tests that read its result."""
    home = tmp_path_factory.mktemp("dpo") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INHOUSE_HOME", str(home))
        events, seen = Recorder(), SeesModel()
        recipe = recipe_mod.build(base_model=str(tiny_dir), max_steps=12, eval_every=6, output_name="polite", **FAST)
        result = dpo.train_dpo(recipe, TRAIN, HELD_OUT, events=events, callbacks=[seen])
        yield result, events, seen, home


def test_dpo_raises_reward_accuracy_on_held_out_pairs(trained):
    result, _, _, _ = trained
    m = result.metrics
    print(f"reward accuracy {m['reward_accuracy_before']} -> {m['reward_accuracy']}, "
          f"margin {m['reward_margin_before']} -> {m['reward_margin']}")
    assert m["reward_accuracy_before"] == 0.5  # a fresh adapter is its reference: it prefers neither answer
    assert m["reward_margin_before"] == 0.0
    assert m["reward_accuracy"] > 0.9 and m["reward_margin"] > 0
    assert m["validation_loss"] < m["validation_loss_before"]


def test_the_run_publishes_a_dpo_adapter_with_lineage_and_eval_events(trained, tiny_dir):
    result, events, seen, home = trained
    info = json.loads((result.path / "inhouse.json").read_text())
    assert info["kind"] == "dpo" and info["recipe"]["dpo_beta"] == 0.1 and info["recipe"]["reference"] == "base"
    assert info["examples"] == {"train": 24, "validation": 8}
    assert {"reward_accuracy", "reward_margin", "chosen_loss", "reward_accuracy_before"} <= set(info["metrics"])
    assert info["history"][0] == {"step": 0, "eval_loss": pytest.approx(0.6931, abs=1e-3), "eval_reward_accuracy": 0.5,
                                  "eval_reward_margin": 0.0, "eval_chosen_loss": info["metrics"]["chosen_loss_before"]}
    evals = [d for kind, d in events.seen if kind == "eval"]
    assert [d["step"] for d in evals] == [0, 6, 12] and evals[0]["valid_reward_accuracy"] == 0.5
    assert evals[-1]["valid_reward_accuracy"] > 0.9
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in result.path.iterdir()}
    assert not (result.path / REF_ADAPTER).exists()  # the library gets the trained adapter alone
    assert "preference-tuned with DPO" in (result.path / "README.md").read_text()


def test_training_holds_no_reference_copy_of_the_weights(trained, tiny_dir):
    _, _, seen, _ = trained
    base, _ = tiny.build(seed=0)
    assert seen.adapters == ["default"]  # no frozen adapter copy: the reference is the adapter switched off
    assert seen.base_numel == sum(p.numel() for p in base.parameters())  # one copy of the base, not two


def pieces(tiny_dir, **kw):
    """A DPO trainer built as train_dpo builds it, without training."""
    recipe = recipe_mod.build(base_model=model_load.resolve(str(tiny_dir)), max_steps=1, output_name="pieces",
                              **FAST, **kw)
    model, tokenizer, stop_ids = dpo.load_for_training(recipe, Events())
    train_set = encode_pairs(TRAIN[:4], tokenizer, stop_ids, recipe.max_seq_length)
    val_set = encode_pairs(HELD_OUT[:4], tokenizer, stop_ids, recipe.max_seq_length)
    speed = dpo.dpo_speed(recipe, model)
    model = dpo.policy_model(dpo.prepare_model(model, speed, False), recipe, dpo.starting_adapter(recipe), speed)
    return dpo.build_dpo_trainer(recipe, model, tokenizer, speed, train_set, val_set, paths.runs() / "x", [])


def test_the_reference_is_the_base_model_itself(tiny_dir, home):
    trainer = pieces(tiny_dir)
    model = trainer.model
    assert trainer.ref_model is None and list(model.peft_config) == ["default"]
    pointers = [p.data_ptr() for n, p in model.named_parameters() if "lora_" not in n]
    assert len(pointers) == len(set(pointers))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)  # the adapter now changes the output
        ids = torch.tensor([[5, 6, 7, 8]])
        plain, _ = tiny.build(seed=0)
        with reference(model):
            ref = model(input_ids=ids).logits
        assert torch.equal(ref, plain(input_ids=ids).logits)
        assert not torch.equal(model(input_ids=ids).logits, ref)


def test_trl_receives_the_sft_mask_batch_untouched(tiny_dir, home):
    trainer = pieces(tiny_dir)
    batch = next(iter(trainer.get_eval_dataloader()))
    rows = as_rows(encode_pairs(HELD_OUT[:4], trainer.processing_class, stop_ids_of(trainer.processing_class),
                                2048).examples)
    expected = PairCollator(trainer.processing_class.pad_token_id)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "completion_mask"}
    for key, value in expected.items():
        assert torch.equal(batch[key].cpu(), value), key


def stop_ids_of(tokenizer):
    return stop_token_ids(tokenizer, tokenizer.eos_token_id)


def test_each_side_is_masked_exactly_as_sft_masks_its_answer():
    tok = tiny.build_tokenizer()
    stop = stop_ids_of(tok)
    pair = PreferencePair((Message("system", "Be kind."), Message("user", "Hi there"),
                           Message("assistant", "Hello! How can I help?"), Message("user", "Fix my bike")),
                          (Message("assistant", "Gladly, bring it over and we will fix it together."),),
                          (Message("assistant", "No."),))
    pairs = encode_pairs([pair], tok, stop, 2048)
    batch = PairCollator(tok.pad_token_id)(as_rows(pairs.examples))
    for row, side in enumerate(("chosen", "rejected")):
        sft = encode(pair.side(side), tok, stop)  # what supervised training would train on this conversation
        n = len(sft.input_ids)
        assert batch["input_ids"][row, :n].tolist() == sft.input_ids
        scored = batch["completion_mask"][row, :n].bool().tolist()
        trained = [label != IGNORE for label in sft.labels]
        # SFT trains both assistant turns; DPO scores the answer's alone (the earlier turn is context) ...
        first_answer_token = max(i for i, t in enumerate(trained) if t and not trained[i - 1])
        assert scored == [t and i >= first_answer_token for i, t in enumerate(trained)]
        assert any(trained[:first_answer_token])
        # ... exactly its text and end-of-turn token, as SFT's encoder marks them with the prompt turn untrained
        answer = [i for i, on in zip(sft.input_ids, scored) if on]
        assert tok.decode(answer) == (pair.chosen[0].content if side == "chosen" else "No.") + "<|im_end|>"
        assert scored == [label != IGNORE for label in encode(answer_side(pair, side), tok, stop).labels]
        assert not batch["attention_mask"][row, n:].any()


def test_a_pair_over_max_seq_length_is_dropped_and_reported():
    tok = tiny.build_tokenizer()
    long = PreferencePair((Message("user", "x" * 50),), (Message("assistant", "y" * 50),), (Message("assistant", "n"),),
                          "f.jsonl", 3)
    pairs = encode_pairs([long, PAIRS[0]], tok, stop_ids_of(tok), 110)  # the toy pair's longer side: 106
    assert len(pairs.examples) == 1 and pairs.too_long[0][0] == "f.jsonl:3"


def openai_pairs(pairs):
    """OpenAI's preference fine-tuning JSONL."""
    return [{"input": {"messages": [m.as_dict() for m in p.prompt]},
             "preferred_output": [m.as_dict() for m in p.chosen],
             "non_preferred_output": [m.as_dict() for m in p.rejected]} for p in pairs]


class InterruptAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise KeyboardInterrupt


def test_inhouse_train_on_a_preference_file_resumes_and_publishes(tmp_path, tiny_dir, home):
    data = write_jsonl(tmp_path / "prefs.jsonl", openai_pairs(PAIRS[:12]))
    held_out = write_jsonl(tmp_path / "held-out.jsonl", openai_pairs(HELD_OUT[:3]))
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_file=held_out, max_steps=4,
                              eval_every=1, output_name="from-file", **FAST)  # a checkpoint at every step
    with pytest.raises(InhouseError, match="interrupted.*--resume"):
        train(recipe, events=Events(), callbacks=[InterruptAt()])
    assert not (registry.library() / "from-file").exists()
    result = train(recipe, resume=True, events=Events())
    lineage = registry.lineage(result.path)
    assert lineage.kind == "dpo" and result.metrics["steps"] == 4
    assert [d["path"] for d in lineage.data] == [str(data.resolve()), str(held_out.resolve())]
    assert lineage.examples == {"train": 12, "validation": 3}


def test_reference_adapter_starts_from_a_library_adapter_and_keeps_it_frozen(tmp_path, tiny_dir, home):
    sft_data = write_jsonl(tmp_path / "sft.jsonl", [chat(f"Could you help me with {t}?", "Sure.") for t in TOPICS[:8]])
    train(recipe_mod.build(base_model=str(tiny_dir), train_file=sft_data, validation_fraction=0, max_steps=3,
                           learning_rate=1e-2, output_name="sft"), events=Events())
    start = load_chat_model("sft").model.state_dict()
    seen = SeesModel()
    recipe = recipe_mod.build(base_model=str(tiny_dir), max_steps=3, init_adapter="sft", reference="adapter",
                              output_name="dpo-from-sft", **FAST)
    result = dpo.train_dpo(recipe, TRAIN[:8], HELD_OUT[:4], events=Events(), callbacks=[seen])
    assert seen.adapters == ["default", REF_ADAPTER]  # the starting adapter's frozen LoRA copy, not the base's
    assert not seen.ref_trainable and seen.ref_after
    assert all(torch.equal(value, start[name]) for name, value in seen.ref_after.items())  # still the SFT adapter
    assert seen.base_numel == sum(p.numel() for p in tiny.build(seed=0)[0].parameters())
    assert result.metrics["reward_accuracy_before"] == 0.5  # policy and reference start equal
    assert result.metrics["reward_accuracy"] > 0.5
    tuned = load_chat_model("dpo-from-sft").model.state_dict()
    lora = [k for k in start if "lora_B" in k]
    assert lora and any(not torch.equal(start[k], tuned[k]) for k in lora)  # the adapter trained from there ...
    assert registry.lineage(result.path).recipe["init_adapter"] == "sft"
    assert not (result.path / REF_ADAPTER).exists()


def test_a_library_adapter_with_reference_base_holds_no_copy(tmp_path, tiny_dir, home):
    sft_data = write_jsonl(tmp_path / "sft.jsonl", [chat("hi", "hello")] * 4)
    train(recipe_mod.build(base_model=str(tiny_dir), train_file=sft_data, validation_fraction=0, max_steps=1,
                           output_name="sft"), events=Events())
    trainer = pieces(tiny_dir, init_adapter="sft")
    assert list(trainer.model.peft_config) == ["default"] and trainer.ref_model is None


def test_a_library_adapter_loads_into_the_fused_layers_with_its_weights(tmp_path, tiny_dir, home):
    """DPO from a library adapter trains in the speed plan's layers, as from a fresh one: the plan it prints
    and records is the one that ran."""
    from inhouse.train.fused_lora import FusedLoraLinear

    sft_data = write_jsonl(tmp_path / "sft.jsonl", [chat(f"Could you help me with {t}?", "Sure.") for t in TOPICS[:8]])
    train(recipe_mod.build(base_model=str(tiny_dir), train_file=sft_data, validation_fraction=0, max_steps=2,
                           learning_rate=1e-2, output_name="sft"), events=Events())
    saved = {k: v for k, v in load_chat_model("sft").model.state_dict().items() if "lora_" in k}
    trainer = pieces(tiny_dir, init_adapter="sft", fused_lora=True)
    assert trainer.speed.fused_lora
    fused = [m for m in trainer.model.modules() if isinstance(m, FusedLoraLinear)]
    assert len(fused) == sum(1 for k in saved if "lora_A" in k) > 0
    loaded = trainer.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert any(p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" in n)


def test_recipe_and_speed_refusals(tiny_dir, home):
    with pytest.raises(InhouseError, match="reference: adapter needs init_adapter"):
        recipe_mod.build(method="dpo", reference="adapter")
    with pytest.raises(InhouseError, match="settings of method dpo"):
        recipe_mod.build(method="lora", init_adapter="x")
    with pytest.raises(InhouseError, match="dpo-loss"):
        recipe_mod.build(method="dpo", dpo_loss="exo_pair")
    for switch in ({"packing": True}, {"attention": "varlen"}):
        with pytest.raises(InhouseError, match=next(iter(switch))):
            dpo.dpo_speed(recipe_mod.build(method="dpo", **switch), tiny.build()[0])
    with pytest.raises(InhouseError, match="no adapter 'missing'"):
        dpo.train_dpo(recipe_mod.build(base_model=str(tiny_dir), method="dpo", init_adapter="missing"), TRAIN, [],
                      events=Events())


def test_eval_on_held_out_pairs_reports_reward_accuracy(trained, tmp_path, monkeypatch):
    from inhouse.eval.config import EvalConfig
    from inhouse.eval.run import evaluate

    result, _, _, home = trained
    monkeypatch.setenv("INHOUSE_HOME", str(home))
    data = write_jsonl(tmp_path / "held-out.jsonl", openai_pairs(HELD_OUT))
    config = EvalConfig(data=data, out=tmp_path / "report", generation={"max_new_tokens": 8})
    report = evaluate("polite", config).report
    assert report["n"] == 8 and report["tuned"]["pairs"] == 8
    assert report["tuned"]["reward_accuracy"] == pytest.approx(result.metrics["reward_accuracy"])
    assert report["tuned"]["loss"] == pytest.approx(result.metrics["chosen_loss"], rel=1e-4)
    assert "reward_accuracy" not in report["base"]


# --- the jobs API -------------------------------------------------------------------------------


def uploaded(store, rows, name):
    from inhouse.jobs.files import save_upload

    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return save_upload(store, io.BytesIO(data), name, "fine-tune", 1 << 20)["id"]


def test_the_jobs_api_maps_openais_dpo_method_to_the_recipe(home):
    from inhouse.jobs import spec
    from inhouse.jobs.store import Store
    from inhouse.serve.openai import CreateJobRequest

    store, caps = Store(), spec.Capabilities("tiny", tiny.NAME)
    prefs = uploaded(store, openai_pairs(PAIRS[:4]), "prefs.jsonl")
    chats = uploaded(store, [chat("hi", "hello")] * 2, "chat.jsonl")
    body = CreateJobRequest(model="tiny", training_file=prefs, recipe={"dpo_loss": "ipo"},
                            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3, "n_epochs": 2}}})
    job = spec.create_job(store, body, caps)
    assert job["method"]["type"] == "dpo" and job["method"]["dpo"]["hyperparameters"]["beta"] == 0.3
    recipe = spec.recipe_for(job, store)
    assert (recipe.method, recipe.dpo_beta, recipe.dpo_loss, recipe.epochs) == ("dpo", 0.3, "ipo", 2)
    refused = [({"type": "dpo"}, chats, "training_file"), ({"type": "supervised"}, prefs, "training_file"),
               ({"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}}, prefs, "hyperparameters.beta"),
               ({"type": "supervised", "supervised": {"hyperparameters": {"beta": 1}}}, chats, "hyperparameters.beta"),
               ({"type": "reinforcement"}, prefs, "method.type")]
    for method, file, param in refused:
        with pytest.raises(spec.BadField) as err:
            spec.create_job(store, CreateJobRequest(model="tiny", training_file=file, method=method), caps)
        assert err.value.param == param, (method, err.value)
    with pytest.raises(spec.BadField, match="contradicts"):
        spec.create_job(store, CreateJobRequest(model="tiny", training_file=prefs, method={"type": "dpo"},
                                                recipe={"method": "lora"}), caps)
    with pytest.raises(spec.BadField, match="init_adapter"):
        spec.create_job(store, CreateJobRequest(model="tiny", training_file=prefs, method={"type": "dpo"},
                                                recipe={"init_adapter": "/etc"}), caps)


def test_a_dpo_job_runs_to_a_published_dpo_adapter(home):
    from inhouse.jobs import run as job_run
    from inhouse.jobs import spec
    from inhouse.jobs.store import Store
    from inhouse.serve.openai import CreateJobRequest

    store = Store()
    prefs = uploaded(store, openai_pairs(PAIRS[:8]), "prefs.jsonl")
    body = CreateJobRequest(model="tiny", training_file=prefs, suffix="polite", recipe={"max_steps": 2},
                            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}})
    job = spec.create_job(store, body, spec.Capabilities("tiny", tiny.NAME))
    store.update("jobs", job["id"], status="running")  # as the worker does before it starts the process
    job_run.run(job["id"], store)
    done = store.get("jobs", job["id"], "job")
    assert done["status"] == "succeeded", done["error"]
    lineage = registry.lineage(registry.resolve(done["fine_tuned_model"]))
    assert lineage.kind == "dpo" and lineage.recipe["dpo_beta"] == 0.2 and lineage.origin["job"] == job["id"]
    messages = [e["message"] for e in store.select("select * from events where job_id = ?", (job["id"],))]
    assert any("reward accuracy=0.5000" in m for m in messages)  # the validation point before training
