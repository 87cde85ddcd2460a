"""Padding-free packing and the speed switches keep the math (CPU, fp32)."""

import contextlib
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import chat, write_jsonl

from inhouse.events import Events
from inhouse import recipe as recipe_mod
from inhouse.model import tiny
from inhouse.model.attention import cu_seqlens_from_positions
from inhouse.model.template import IGNORE, encode, stop_token_ids
from inhouse.data.conversation import Conversation, Message
from inhouse.train.dataset import PadCollator
from inhouse.train.packing import PackedCollator
from inhouse.train.sft import train
from inhouse.train import speed as speed_mod
from inhouse.train.speed import plan
from transformers import TrainerCallback

CONVS = [
    Conversation((Message("user", "Where is my order?"), Message("assistant", "It shipped on Monday."))),
    Conversation((Message("system", "Be terse."), Message("user", "Hi"), Message("assistant", "Hello."),
                  Message("user", "Refund?"), Message("assistant", "Within 30 days, yes."))),
    Conversation((Message("user", "Bulb type?"), Message("assistant", "E27 LED, 2700K."))),
]


def per_example_losses(logits, labels, bounds):
    out = []
    for a, b in bounds:
        lg, lb = logits[0, a:b - 1], labels[0, a + 1:b]
        out.append(F.cross_entropy(lg.float(), lb, ignore_index=IGNORE, reduction="sum").item())
    return out


def test_each_example_has_the_same_loss_packed_and_unpacked():
    model, tok = tiny.build(seed=3)
    model.eval()
    stops = stop_token_ids(tok)
    examples = [encode(c, tok, stops) for c in CONVS]
    items = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    alone = []
    with torch.no_grad():
        for item in items:
            batch = PadCollator(tok.pad_token_id)([item])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            alone += per_example_losses(logits, batch["labels"], [(0, len(item["input_ids"]))])
        packed = PackedCollator()(items)
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
    cu = packed["cu_seq_lens_q"].tolist()
    together = per_example_losses(logits, packed["labels"], list(zip(cu[:-1], cu[1:])))
    assert torch.allclose(torch.tensor(together), torch.tensor(alone), rtol=1e-5, atol=1e-5), (together, alone)
    # and attention really is confined: a different neighbour changes nothing
    assert all(x > 0 for x in alone)


def test_packed_rows_restart_positions_and_never_train_across_boundaries():
    items = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]
    batch = PackedCollator()(items)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]]
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5] and batch["max_length_q"] == 3
    cu, longest = cu_seqlens_from_positions(batch["position_ids"])
    assert cu.tolist() == [0, 3, 5] and longest == 3


def losses_for(tmp_path, tiny_dir, name, **switches):
    """Varied lengths, so padding really differs between layouts."""
    rows = [chat(f"Where is order {100 + 7 * i}?" * (1 + i % 4), f"Order {100 + 7 * i} left." * (1 + i % 3))
            for i in range(48)]
    data = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    layout = {"batch_size": 4, "gradient_accumulation": 2, "max_steps": 6} | switches
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0,
                              lora_dropout=0, learning_rate=3e-3, output_name=name, **layout)
    result = train(recipe, events=Events())
    import json
    history = json.loads((result.path / "inhouse.json").read_text())["history"]
    return [h["loss"] for h in history if "loss" in h]


def test_packing_layout_and_checkpointing_keep_the_loss_curve(tmp_path, tiny_dir, home):
    """Same examples per step -> same loss per step, however they are laid out."""
    base = losses_for(tmp_path, tiny_dir, "padded", packing=False)
    variants = {
        "packed": losses_for(tmp_path, tiny_dir, "packed", packing=True),
        "one-packed-row": losses_for(tmp_path, tiny_dir, "row", packing=True, batch_size=8, gradient_accumulation=1),
        "ckpt": losses_for(tmp_path, tiny_dir, "ckpt", packing=True, gradient_checkpointing=True),
        "half-ckpt": losses_for(tmp_path, tiny_dir, "half-ckpt", packing=True, gradient_checkpointing=True,
                                checkpoint_fraction=0.5),
    }
    assert len(base) == 6 and base[0] != base[-1]
    for name, losses in variants.items():
        assert torch.allclose(torch.tensor(losses), torch.tensor(base), rtol=1e-4, atol=1e-4), (name, base, losses)


def test_cpu_defaults_and_explicit_switches():
    model, _ = tiny.build()
    auto = plan(recipe_mod.build(), model)
    assert (auto.bf16, auto.packing, auto.liger, auto.gradient_checkpointing, auto.activation_offload) == (
        False, False, False, False, False)
    assert auto.attention == "sdpa" and auto.optimizer == "adamw_torch"
    chosen = plan(recipe_mod.build(packing=True, gradient_checkpointing=True, attention="eager"), model)
    assert chosen.packing and chosen.gradient_checkpointing and chosen.attention == "eager"


@pytest.mark.slow
def test_torch_compile_switch_keeps_the_loss_curve(tmp_path, tiny_dir, home):
    """compile=True goes through Trainer's torch_compile (inductor on CPU: about a minute)."""
    plain = losses_for(tmp_path, tiny_dir, "eager", packing=False, max_steps=3)
    compiled = losses_for(tmp_path, tiny_dir, "compiled", packing=False, compile=True, max_steps=3)
    assert torch.allclose(torch.tensor(compiled), torch.tensor(plain), rtol=1e-4, atol=1e-4), (plain, compiled)


class LoraInputDtypes(TrainerCallback):
    """Records the dtype of every input the LoRA A matrices see during training steps."""

    def __init__(self):
        self.seen: set[torch.dtype] = set()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        for name, module in model.named_modules():
            if name.endswith("lora_A.default"):
                module.register_forward_pre_hook(lambda _m, inputs: self.seen.add(inputs[0].dtype))


def test_bf16_lora_inputs_skip_peft_float32_copies_and_keep_the_loss_curve(tmp_path, tiny_dir, home, monkeypatch):
    """Under bf16 autocast (CPU autocast here) the LoRA layers take bf16 inputs as they are; with PEFT's
    casts back on they see float32 copies only, and the losses are the same."""
    rows = [chat(f"Where is order {100 + 7 * i}?", f"Order {100 + 7 * i} left.") for i in range(16)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)

    def run(name):
        dtypes = LoraInputDtypes()
        recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, lora_dropout=0,
                                  learning_rate=3e-3, output_name=name, batch_size=4, max_steps=4, bf16=True)
        result = train(recipe, events=Events(), callbacks=[dtypes])
        history = json.loads((result.path / "inhouse.json").read_text())["history"]
        return [h["loss"] for h in history if "loss" in h], dtypes.seen

    fast, fast_dtypes = run("bf16-inputs")
    monkeypatch.setattr(speed_mod, "lora_input_casts", lambda speed, model: contextlib.nullcontext())
    cast, cast_dtypes = run("peft-casts")
    # The tiny model's weights are float32 here, so only o_proj and down_proj get bf16 inputs (autocast's
    # outputs); with a bf16 model on a GPU every LoRA input is bf16.
    assert torch.bfloat16 in fast_dtypes and cast_dtypes == {torch.float32}
    assert len(fast) == 4 and fast == cast, (fast, cast)


def test_bf16_lora_inputs_follow_bf16_and_the_method():
    model, _ = tiny.build()
    assert plan(recipe_mod.build(bf16=True), model).bf16_lora_inputs
    assert not plan(recipe_mod.build(), model).bf16_lora_inputs  # no autocast on this CPU by default
    assert not plan(recipe_mod.build(bf16=True, method="full"), model).bf16_lora_inputs
