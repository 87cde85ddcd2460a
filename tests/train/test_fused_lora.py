"""Fused LoRA projections compute PEFT's numbers: forward, every gradient, a training curve, a saved adapter."""

import json

import pytest
import torch
from helpers import chat, write_jsonl
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from inhouse import recipe as recipe_mod
from inhouse.events import Events
from inhouse.model import tiny
from inhouse.train import fused_lora, sft
from inhouse.train.fused_lora import FusedLoraLinear
from inhouse.train.speed import plan


def count_calls(monkeypatch, function: type) -> list:
    """A list that grows by one at each `function.apply` (an autograd Function), which still runs."""
    calls: list = []
    original = function.apply
    monkeypatch.setattr(function, "apply", lambda *a: calls.append(1) or original(*a))
    return calls


class Block(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.up = nn.Linear(12, 20, bias=bias)
        self.down = nn.Linear(20, 12, bias=bias)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def lora_block(fused: bool, dropout: float, bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["up", "down"])
    model = get_peft_model(Block(bias), fused_lora.register(config) if fused else config)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero, which would leave A's gradient zero too
            nn.init.normal_(p, std=0.1)
    return model


def forward_backward(model: nn.Module, dropout_seed: int = 3) -> tuple[torch.Tensor, dict]:
    x = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(2), requires_grad=True)
    torch.manual_seed(dropout_seed)
    y = model(x)
    (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return y.detach(), grads | {"x": x.grad.clone()}


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_forward_and_every_gradient_match_peft(dropout):
    fused, plain = lora_block(True, dropout), lora_block(False, dropout)
    assert isinstance(fused.base_model.model.up, FusedLoraLinear)
    assert not isinstance(plain.base_model.model.up, FusedLoraLinear)
    y_fused, g_fused = forward_backward(fused)
    y_plain, g_plain = forward_backward(plain)
    torch.testing.assert_close(y_fused, y_plain, rtol=1e-5, atol=1e-6)
    assert set(g_fused) == set(g_plain) and any("lora_A" in n for n in g_fused)
    assert not any("bias" in n for n in g_fused)  # the frozen bias gets no gradient, as in PEFT
    for name in g_plain:
        torch.testing.assert_close(g_fused[name], g_plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_in_place_update_matches_the_plain_sum():
    """`LoraUpdate` (the 4-bit layers' path: the base output comes from bitsandbytes) adds PEFT's update
    and passes the gradient through to the base output unchanged."""
    g = torch.Generator().manual_seed(0)
    leaves = [torch.randn(*shape, generator=g, requires_grad=True) for shape in ((3, 5, 12), (20, 12), (4, 12), (20, 4))]

    def run(fused):
        x, w, a, b = (t.detach().clone().requires_grad_() for t in leaves)
        y = torch.nn.functional.linear(x, w)
        y = fused_lora.LoraUpdate.apply(y, x, a, b, 2.0) if fused else y + (x @ a.t() @ b.t()) * 2.0
        (y * torch.linspace(-1, 1, 20)).sum().backward()
        return [y.detach()] + [t.grad for t in (x, w, a, b)]

    for got, want in zip(run(True), run(False)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_fused_path_runs_and_the_special_cases_take_peft_forward(monkeypatch):
    calls = count_calls(monkeypatch, fused_lora.LoraMatmul)
    model = lora_block(True, 0.0)
    inner, x = model.base_model.model, torch.randn(2, 12)
    model(x)
    assert len(calls) == 2
    with model.disable_adapter():
        torch.testing.assert_close(model(x), inner.down.base_layer(torch.relu(inner.up.base_layer(x))))
    assert len(calls) == 2
    model.base_model.model.up.base_layer.weight.requires_grad_(True)  # a trainable base: PEFT's forward
    model(x)
    assert len(calls) == 3


def test_merged_two_active_adapters_and_dora_take_peft_forward(monkeypatch):
    calls = count_calls(monkeypatch, fused_lora.LoraMatmul)
    x = torch.randn(2, 12)
    model = lora_block(True, 0.0)
    before = model(x).detach()  # the fused path: two calls
    model.merge_adapter()
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    model.unmerge_adapter()
    model.add_adapter("other", LoraConfig(r=2, target_modules=["up", "down"]))
    model.base_model.set_adapter(["default", "other"])
    model(x)
    outputs = []
    for fused in (True, False):
        torch.manual_seed(0)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["up", "down"], use_dora=True)
        outputs.append(get_peft_model(Block(True), fused_lora.register(config) if fused else config)(x))
    assert len(calls) == 2
    torch.testing.assert_close(outputs[0], outputs[1])


def test_bf16_autocast_stays_close_to_peft():
    """Under bf16 autocast with bf16 base weights (the GPU recipe) the update is added in the GEMM's fp32
    accumulator instead of after rounding: the same values to bf16 precision."""
    outputs = []
    for fused in (True, False):
        model = lora_block(fused, 0.0).to(torch.bfloat16)
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.data = p.data.float()  # PEFT keeps adapters in float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs.append(forward_backward(model))
    (y_fused, g_fused), (y_plain, g_plain) = outputs
    assert y_fused.dtype == torch.bfloat16
    torch.testing.assert_close(y_fused.float(), y_plain.float(), rtol=2e-2, atol=2e-2)
    for name in g_plain:
        assert g_fused[name].dtype == g_plain[name].dtype, name
        torch.testing.assert_close(g_fused[name].float(), g_plain[name].float(), rtol=3e-2, atol=3e-2, msg=name)


def test_training_curve_and_saved_adapter_match_peft(tmp_path, tiny_dir, home, monkeypatch):
    """SFT with the fused layers asked for (a CPU plan never picks them) trains PEFT's curve, and the
    adapter it saves is a plain PEFT adapter."""
    rows = [chat(f"Where is order {100 + 7 * i}?", f"Order {100 + 7 * i} left.") for i in range(16)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)

    calls = count_calls(monkeypatch, fused_lora.LoraMatmul)

    def run(name, fused):
        recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, lora_dropout=0.1,
                                  learning_rate=3e-3, output_name=name, batch_size=4, max_steps=4, fused_lora=fused)
        result = sft.train(recipe, events=Events())
        info = json.loads((result.path / "inhouse.json").read_text())
        assert info["speed"]["fused_lora"] is fused
        return [h["loss"] for h in info["history"] if "loss" in h], result.path

    fused, fused_path = run("fused", True)
    assert calls  # the SFT trainer ran the fused layers
    plain, _ = run("plain", False)
    assert len(fused) == 4 and fused[0] != fused[-1]
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(plain), rtol=1e-4, atol=1e-5)
    assert "FusedLora" not in (fused_path / "adapter_config.json").read_text()
    base, _ = tiny.build(seed=0)
    loaded = PeftModel.from_pretrained(base, fused_path)
    assert not any(isinstance(m, FusedLoraLinear) for m in loaded.modules())


def test_fused_lora_is_planned_for_adapters_on_a_bf16_gpu_unless_turned_off(monkeypatch):
    from inhouse.train import speed as speed_mod

    model, _ = tiny.build()
    assert not plan(recipe_mod.build(bf16=True), model).fused_lora  # this CPU
    monkeypatch.setattr(speed_mod.world, "gpu", lambda: True)
    monkeypatch.setattr(speed_mod, "refuse_unrunnable", lambda *a: None)
    monkeypatch.setattr(speed_mod, "liger_apply_fn", lambda model_type: None)
    assert plan(recipe_mod.build(bf16=True), model).fused_lora
    assert plan(recipe_mod.build(bf16=True, method="dpo"), model).fused_lora
    assert plan(recipe_mod.build(bf16=True, method="qlora"), model).fused_lora
    assert not plan(recipe_mod.build(bf16=True, method="qlora", fused_lora=False), model).fused_lora
    assert not plan(recipe_mod.build(bf16=True, method="full"), model).fused_lora
    assert not plan(recipe_mod.build(bf16=True, method="full", fused_lora=True), model).fused_lora  # no adapter
    assert not plan(recipe_mod.build(bf16=False), model).fused_lora
    assert not plan(recipe_mod.build(bf16=True, fused_lora=False), model).fused_lora
