"""Selective checkpointing: only `checkpoint_fraction` of the layers recompute, the gradients do not move, and
the default share is sized to the GPU's free memory."""

import pytest
import torch
from helpers import chat, llama_8b_config, write_jsonl
from transformers import LlamaForCausalLM, MixtralConfig, TrainerCallback
from transformers.modeling_layers import GradientCheckpointingLayer

from inhouse import recipe as recipe_mod
from inhouse.errors import InhouseError
from inhouse.events import Events
from inhouse.model import tiny
from inhouse.train import memory
from inhouse.train import speed as speed_mod
from inhouse.train.sft import train
from inhouse.train.speed import keep_some_layers, plan, prepare_model


def deep_tiny(layers: int) -> LlamaForCausalLM:
    config = tiny.build_config(300)
    config.num_hidden_layers = layers
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


@pytest.mark.parametrize(("fraction", "expected"), [
    (1.0, [1] * 8), (0.5, [0, 1] * 4), (0.25, [0, 0, 0, 1] * 2), (0.3, [0, 0, 1, 0, 0, 1, 0, 1]),  # 2.4: 3
])
def test_the_checkpointed_layers_are_the_fraction_asked_spread_evenly(fraction, expected):
    model = deep_tiny(8)
    speed_mod.enable_checkpointing(model)
    flags = keep_some_layers(model, fraction)
    assert flags == [bool(e) for e in expected]
    assert [layer.gradient_checkpointing for layer in model.model.layers] == flags


def test_a_share_of_whole_layers_gives_exactly_those_layers():
    """The plan picks n / layers; rounding must not add one (7 / 25 * 25 is 7.000000000000001)."""
    model = deep_tiny(25)
    for n in range(1, 26):
        speed_mod.enable_checkpointing(model)
        assert sum(keep_some_layers(model, n / 25)) == n


def step(model: LlamaForCausalLM, speed) -> tuple[dict[str, torch.Tensor], list[int]]:
    """One forward and backward: the gradients, and how often each layer's MLP started (twice where recomputed)."""
    prepare_model(model, speed).train()
    runs = [0] * len(model.model.layers)
    for i, layer in enumerate(model.model.layers):
        layer.mlp.register_forward_pre_hook(lambda *a, i=i: runs.__setitem__(i, runs[i] + 1))
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, runs


def test_only_the_chosen_layers_recompute_and_the_gradients_are_unchanged():
    def speed(**switches):
        return plan(recipe_mod.build(attention="eager", **switches), deep_tiny(4))

    plain, plain_runs = step(deep_tiny(4), speed(gradient_checkpointing=False))
    half, half_runs = step(deep_tiny(4), speed(gradient_checkpointing=True, checkpoint_fraction=0.5))
    full, full_runs = step(deep_tiny(4), speed(gradient_checkpointing=True))
    assert plain_runs == [1, 1, 1, 1] and half_runs == [1, 2, 1, 2] and full_runs == [2, 2, 2, 2]
    for name, grad in plain.items():
        torch.testing.assert_close(half[name], grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(full[name], grad, rtol=1e-5, atol=1e-6)


def test_offload_follows_full_checkpointing_and_fsdp_refuses_a_fraction(monkeypatch):
    model, _ = tiny.build()
    monkeypatch.setattr(speed_mod.world, "gpu", lambda: True)
    monkeypatch.setattr(speed_mod, "refuse_unrunnable", lambda *a: None)
    monkeypatch.setattr(speed_mod, "liger_apply_fn", lambda model_type: None)
    full = plan(recipe_mod.build(bf16=True, gradient_checkpointing=True), model)
    assert full.activation_offload and full.checkpoint_fraction == 1
    part = plan(recipe_mod.build(bf16=True, gradient_checkpointing=True, checkpoint_fraction=0.5), model)
    assert not part.activation_offload and part.checkpoint_fraction == 0.5
    assert "gradient_checkpointing (50% of layers)" in part.describe()
    asked = recipe_mod.build(bf16=True, gradient_checkpointing=True, checkpoint_fraction=0.5, activation_offload=True)
    assert plan(asked, model).activation_offload
    monkeypatch.setattr(speed_mod.distributed, "strategy", lambda recipe: "fsdp")
    with pytest.raises(InhouseError, match="checkpoint_fraction"):
        plan(recipe_mod.build(bf16=True, method="full", gradient_checkpointing=True, checkpoint_fraction=0.5), model)
    with pytest.raises(InhouseError, match="--checkpoint-fraction: Input should be greater than 0"):
        recipe_mod.build(checkpoint_fraction=0)


class LayerFlags(TrainerCallback):
    """The decoder layers' checkpointing flags as the Trainer's steps see them."""

    seen: list[list[bool]]

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        self.seen = getattr(self, "seen", []) + [[layer.gradient_checkpointing for layer in layers]]


def test_the_fraction_reaches_the_training_run(tmp_path, tiny_dir, home):
    data = write_jsonl(tmp_path / "d.jsonl", [chat("Best day?", "Tuesday."), chat("Colour?", "Blue.")] * 4)
    flags = LayerFlags()
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=2,
                              gradient_checkpointing=True, checkpoint_fraction=0.5, output_name="half")
    train(recipe, events=Events(), callbacks=[flags])
    assert flags.seen == [[False, True]] * 2


def test_the_estimate_counts_a_dense_layers_saved_tensors_and_knows_what_it_does_not_know():
    # 7 x 4096 + 3 x 1024 + 3 x 14336 bf16 values per token: within 5 % of the 8B step measured on an H200
    # (50.3 GiB without checkpointing, 35.0 with half the layers: docs/benchmarks.md).
    assert memory.layer_bytes_per_token(llama_8b_config()) == 2 * (7 * 4096 + 3 * 1024 + 3 * 14336)
    with_dropout = memory.layer_bytes_per_token(llama_8b_config(), dropout=True)
    assert with_dropout == 2 * (7 * 4096 + 3 * 1024 + 3 * 14336) + 3 * (6 * 4096 + 14336)  # LoRA dropout's copies
    assert memory.layer_bytes_per_token(MixtralConfig()) is None
    assert memory.batch_tokens([5, 100, 7, 60], 2, packed=True) == 160
    assert memory.batch_tokens([5, 100, 7, 60], 2, packed=False) == 200
    assert memory.batch_tokens([], 2, packed=True) == 0


@pytest.mark.parametrize("tokens", [2048, 8192, 32768])
def test_the_share_recomputed_is_the_fewest_whole_layers_that_fit(tokens):
    config, trainable, gib = llama_8b_config(), 44_000_000, 1 << 30
    per_layer = memory.layer_bytes_per_token(config)

    def need(layers_recomputed: int) -> float:  # what the estimate holds against the headroom
        kept = (32 - layers_recomputed) * per_layer + layers_recomputed * 2 * 4096 + per_layer
        return tokens * kept + memory.RESERVE + memory.ADAPTER_BYTES * trainable

    shares = [memory.layers_to_checkpoint(config, tokens, free * gib, trainable) for free in (4, 20, 40, 80, 140)]
    assert shares == sorted(shares, reverse=True) and shares[0] == 1.0
    for free, share in zip((4, 20, 40, 80, 140), shares):
        n = round(share * 32)
        assert share * 32 == n
        if 0 < n < 32:
            assert need(n) <= memory.HEADROOM * free * gib < need(n - 1)
        if n == 0:
            assert need(0) <= memory.HEADROOM * free * gib


def test_the_plan_sizes_checkpointing_to_free_memory_on_a_gpu(monkeypatch):
    model, _ = tiny.build()
    monkeypatch.setattr(speed_mod.world, "gpu", lambda: True)
    monkeypatch.setattr(speed_mod, "refuse_unrunnable", lambda *a: None)
    monkeypatch.setattr(speed_mod, "liger_apply_fn", lambda model_type: lambda **kw: None)
    free = {"bytes": 0}
    monkeypatch.setattr(speed_mod.torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 1 << 40))

    def chosen(lengths=(2048,) * 8, **switches):
        speed = plan(recipe_mod.build(bf16=True, **switches), model, list(lengths))
        return speed.gradient_checkpointing, speed.checkpoint_fraction, speed.activation_offload

    free["bytes"] = 80 << 30  # the tiny model's activations fit many times over
    assert chosen() == (False, 0.0, False)
    assert chosen(gradient_checkpointing=True) == (True, 1.0, False)  # asked: as asked; the inputs fit: no offload
    assert chosen(gradient_checkpointing=True, activation_offload=True) == (True, 1.0, True)
    assert chosen(checkpoint_fraction=0.5) == (True, 0.5, False)
    assert chosen(method="dpo")[0] is False and chosen(liger=False)[0] is False  # the old rule: 2B and over
    free["bytes"] = 1 << 20  # no room at all: every layer recomputes, inputs offloaded
    assert chosen() == (True, 1.0, True)
    assert chosen(gradient_checkpointing=False) == (False, 0.0, False)
    # Room for one of the two layers' activations, one recomputing, the other's input, the adapter's state.
    held = memory.RESERVE + memory.ADAPTER_BYTES * memory.adapter_params_bound(model, 16) \
        + 4 * 2048 * (2 * memory.layer_bytes_per_token(model.config) + 2 * model.config.hidden_size)
    free["bytes"] = int(held / memory.HEADROOM) + (1 << 10)
    assert chosen(batch_size=4, lora_dropout=0) == (True, 0.5, False)
    assert chosen(batch_size=4) == (True, 1.0, False)  # the dropout's copies: every layer recomputes, inputs fit
    # Room for the adapter's state, one layer recomputing and one layer's input, not for both inputs: offloaded.
    free["bytes"] = int((held - 4 * 2048 * memory.layer_bytes_per_token(model.config)) / memory.HEADROOM)
    assert chosen(batch_size=4, lora_dropout=0) == (True, 1.0, True)
