"""QLoRA's kept dequantised weights: sized from the memory left with every layer recomputed, before the
checkpointing share; and the fused 4-bit layers that keep one train on the same numbers."""

import pytest
import torch
from helpers import llama_8b_config
from torch import nn

from inhouse import recipe as recipe_mod
from inhouse.model import tiny
from inhouse.train import memory
from inhouse.train import speed as speed_mod
from inhouse.train.speed import plan

GIB = 1 << 30
WEIGHTS_8B = 32 * 2 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 4096 * 14336)  # every projection, bf16


@pytest.mark.parametrize("tokens", [2048, 32768])
def test_kept_weights_take_only_what_is_left_with_every_layer_recomputed(tokens):
    config, trainable = llama_8b_config(), 44_000_000
    per_layer = memory.layer_bytes_per_token(config)
    least = memory.RESERVE + memory.ADAPTER_BYTES * trainable + tokens * (per_layer + 32 * 2 * 4096)
    frees = (4, 12, 16, 20, 40, 140)
    shares = [memory.weights_to_keep_dequantized(config, tokens, f * GIB, trainable, WEIGHTS_8B) for f in frees]
    assert shares == sorted(shares) and shares[0] == 0 and shares[-1] == 1
    for free, share in zip(frees, shares):
        n = round(share * 32)
        assert share * 32 == n  # whole decoder layers
        room = memory.HEADROOM * free * GIB
        assert least + WEIGHTS_8B * n / 32 <= room or n == 0
        if n < 32:
            assert room < least + WEIGHTS_8B * (n + 1) / 32
    assert any(0 < s < 1 for s in shares)


def test_kept_weights_get_what_the_recomputed_share_asked_for_leaves():
    config, trainable, tokens = llama_8b_config(), 44_000_000, 8192
    shares = [memory.weights_to_keep_dequantized(config, tokens, 60 * GIB, trainable, WEIGHTS_8B, recomputed=r)
              for r in (1.0, 0.5, 0.0)]
    assert shares[0] == 1 and shares == sorted(shares, reverse=True) and shares[-1] < 1


def test_what_the_weights_take_the_checkpointing_share_cannot():
    config, trainable, tokens = llama_8b_config(), 44_000_000, 8192
    for free in (30, 60, 100):
        plain = memory.layers_to_checkpoint(config, tokens, free * GIB, trainable)
        reserved = memory.layers_to_checkpoint(config, tokens, free * GIB, trainable, reserved=10 * GIB)
        smaller = memory.layers_to_checkpoint(config, tokens, int((free - 10 / memory.HEADROOM) * GIB), trainable)
        assert reserved == pytest.approx(smaller) and reserved >= plain


def quantized_tiny() -> nn.Module:
    """The tiny model with its projections tagged as bitsandbytes tags a 4-bit weight (`quant_state`): what
    the plan reads, without bitsandbytes."""
    model, _ = tiny.build()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and "lm_head" not in name:
            module.weight.quant_state = object()
    return model


def test_dequantized_bytes_count_the_4bit_layers_lora_wraps():
    model = quantized_tiny()
    c = model.config
    per_layer = {"q_proj": c.hidden_size * c.num_attention_heads * c.head_dim,
                 "v_proj": c.hidden_size * c.num_key_value_heads * c.head_dim}
    everything = memory.dequantized_bytes(model, ["all-linear"])
    assert memory.dequantized_bytes(model, ["q_proj", "v_proj"]) == 2 * c.num_hidden_layers * sum(per_layer.values())
    assert memory.dequantized_bytes(model, ["q_proj"]) < memory.dequantized_bytes(model, ["q_proj", "v_proj"])
    assert everything > memory.dequantized_bytes(model, ["q_proj", "v_proj"])
    assert memory.dequantized_bytes(tiny.build()[0], ["all-linear"]) == 0  # no 4-bit weights, nothing to keep
    assert memory.dequantized_bytes(model, ["lm_head"]) == 0  # the head is not quantised


def test_the_plan_keeps_weights_first_then_sizes_checkpointing(monkeypatch):
    model = quantized_tiny()
    monkeypatch.setattr(speed_mod.world, "gpu", lambda: True)
    monkeypatch.setattr(speed_mod, "refuse_unrunnable", lambda *a: None)
    monkeypatch.setattr(speed_mod, "liger_apply_fn", lambda model_type: lambda **kw: None)
    free = {"bytes": 80 * GIB}
    monkeypatch.setattr(speed_mod.torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 1 << 40))

    def chosen(**switches):
        recipe = recipe_mod.build(bf16=True, lora_dropout=0, batch_size=4, **{"method": "qlora", **switches})
        speed = plan(recipe, model, [2048] * 8)
        return speed.dequantized_fraction, speed.checkpoint_fraction

    assert chosen() == (1.0, 0.0)  # room for everything
    assert chosen(dequantized_fraction=0.5) == (0.5, 0.0)  # asked: as asked
    assert chosen(fused_lora=False) == (0.0, 0.0)  # only the fused 4-bit layers can keep a weight
    assert chosen(method="lora") == (0.0, 0.0)
    free["bytes"] = 1 << 20  # no room: every layer recomputes, no weight is kept
    assert chosen() == (0.0, 1.0)
    # Room for every layer recomputed and the kept weights, not for a layer's activations besides.
    config, tokens = model.config, 4 * 2048
    per_layer = memory.layer_bytes_per_token(config)
    weights = memory.dequantized_bytes(model, ["all-linear"])
    held = memory.RESERVE + memory.ADAPTER_BYTES * memory.adapter_params_bound(model, 16) + weights \
        + tokens * (per_layer + config.num_hidden_layers * 2 * config.hidden_size)
    free["bytes"] = int(held / memory.HEADROOM) + (1 << 10)
    assert chosen() == (1.0, 1.0)
    # Asked to recompute nothing: the weights get only what the activations of every layer leave.
    assert chosen(gradient_checkpointing=False) == (0.0, 0.0)


def test_a_plan_that_keeps_weights_says_so():
    speed = speed_mod.SpeedPlan(bf16=True, gradient_checkpointing=False, activation_offload=False, packing=True,
                                attention="varlen", liger=True, compile=False, optimizer="adamw_torch_fused",
                                fused_lora=True, checkpoint_fraction=0.0, dequantized_fraction=0.5)
    assert "dequantized weights kept (50% of 4-bit LoRA layers)" in speed.describe()


def test_kept_layers_are_spread_evenly_and_train_on_the_same_numbers():
    """A real bitsandbytes 4-bit base (where bitsandbytes runs on this CPU): the kept layers' outputs and
    gradients equal those of the layers that dequantise in every pass."""
    bnb = pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model

    from inhouse.train import fused_lora

    torch.manual_seed(0)
    base = nn.Sequential(*[nn.Linear(64, 64, bias=False) for _ in range(4)])
    quantized = nn.Sequential(*[bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32,
                                                  quant_type="nf4") for _ in range(4)])
    quantized.load_state_dict(base.state_dict())
    try:
        quantized = quantized.to("cpu")
        config = fused_lora.register(LoraConfig(r=4, target_modules=["0", "1", "2", "3"], init_lora_weights=False),
                                     quantized=True)
        model = get_peft_model(quantized, config)
    except Exception as exc:  # bitsandbytes without a CPU backend
        pytest.skip(f"bitsandbytes 4-bit on CPU: {exc}")
    assert fused_lora.keep_dequantized(model, 0.5) == 2
    layers = [m for m in model.modules() if isinstance(m, fused_lora.fused_4bit_class())]
    assert [m.keep_dequantized for m in layers] == [False, True, False, True]
    x = torch.randn(8, 64, requires_grad=True)
    outputs = []
    for share in (0.0, 1.0):
        fused_lora.keep_dequantized(model, share)
        x.grad = None
        y = model(x)
        y.square().sum().backward()
        outputs.append((y.detach(), x.grad.clone()))
    assert all(m._kept is not None for m in layers)
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs[0][1], outputs[1][1], rtol=1e-5, atol=1e-5)
