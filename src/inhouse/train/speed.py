"""Speed and memory switches: resolve the recipe's `auto` values, then apply them.

Every switch keeps the math: packing removes padding, not examples; Liger's
kernels compute the same functions fused; checkpointing recomputes instead of
storing. Each is applied through its library's public extension point.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer

from inhouse import world
from inhouse.errors import InhouseError
from inhouse.model import attention
from inhouse.recipe import Recipe
from inhouse.train import distributed, memory
from inhouse.train.host_steps import HostSteps


@dataclass(frozen=True)
class SpeedPlan:
    bf16: bool
    gradient_checkpointing: bool
    activation_offload: bool
    packing: bool
    attention: str
    liger: bool
    compile: bool
    optimizer: str
    strategy: str | None = None  # ddp / fsdp across processes (inhouse.train.distributed), None for one
    # LoRA inputs stay bf16 under autocast instead of PEFT's float32 copies (see `lora_input_casts`).
    bf16_lora_inputs: bool = False
    # LoRA's update accumulated into the base matmul, forward and backward (inhouse.train.fused_lora).
    fused_lora: bool = False
    checkpoint_fraction: float = 1.0  # share of the decoder layers recomputed when checkpointing
    # Share of a 4-bit base's fused LoRA layers that keep their dequantised weight (fused_lora.keep_dequantized).
    dequantized_fraction: float = 0.0

    def describe(self) -> str:
        on = [name for name in ("bf16", "gradient_checkpointing", "activation_offload", "packing", "liger", "compile",
                                "bf16_lora_inputs", "fused_lora") if getattr(self, name)]
        across = f"; {self.strategy} on {world.current().size} processes" if self.strategy else ""
        if self.gradient_checkpointing and self.checkpoint_fraction < 1:
            on[on.index("gradient_checkpointing")] += f" ({self.checkpoint_fraction:.0%} of layers)"
        if self.dequantized_fraction > 0:
            on.append(f"dequantized weights kept ({self.dequantized_fraction:.0%} of 4-bit LoRA layers)")
        return f"{', '.join(on) or 'no speed features'}; attention={self.attention}; optimizer={self.optimizer}{across}"


def liger_apply_fn(model_type: str):
    """Liger's apply function for this architecture, or None (not installed / unsupported)."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError:
        return None
    return MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)


def plan(recipe: Recipe, model: PreTrainedModel, lengths: Sequence[int] | None = None) -> SpeedPlan:
    """Fill in each `None` with the right default for this machine and model; `lengths` (the training
    examples' token counts) let the checkpointing default size itself to the GPU's free memory."""
    gpu = world.gpu()
    packing = gpu if recipe.packing is None else recipe.packing
    attn = recipe.attention
    if attn == "auto":
        attn = "varlen" if packing and attention.varlen_available() else "sdpa"
    liger = (gpu and liger_apply_fn(model.config.model_type) is not None) if recipe.liger is None else recipe.liger
    refuse_unrunnable(attn, liger, gpu)
    optimizer = recipe.optimizer or ("adamw_torch_fused" if gpu else "adamw_torch")
    if recipe.compile and gpu and (liger or attn == "varlen"):
        # Seen on an H100 (torch 2.11): inductor's autotuning hit an illegal memory access with
        # varlen attention + Liger + checkpointing + PEFT. Refuse rather than crash mid-run.
        raise InhouseError("compile is not supported with the GPU fast path yet (liger / varlen attention); "
                           "set compile: false, or liger: false and attention: sdpa")
    across = distributed.strategy(recipe)
    estimable = gpu and liger and attn != "eager" and recipe.method in ("lora", "qlora") and across != "fsdp"
    bf16 = (gpu and torch.cuda.is_bf16_supported()) if recipe.bf16 is None else recipe.bf16
    adapter = recipe.method != "full" and across != "fsdp"
    fused = (gpu and bf16 and adapter) if recipe.fused_lora is None else recipe.fused_lora
    sizing = Sizing.of(recipe, model, lengths, packing) if estimable else None
    kept, fraction, offload = memory_choices(recipe, model, gpu, sizing, fused, across)
    return SpeedPlan(
        bf16=bf16, bf16_lora_inputs=bf16 and adapter, fused_lora=fused and recipe.method != "full",
        gradient_checkpointing=fraction > 0, checkpoint_fraction=fraction, dequantized_fraction=kept,
        activation_offload=offload, packing=packing, attention=attn, liger=liger,
        compile=recipe.compile, optimizer=optimizer, strategy=across,
    )


@dataclass(frozen=True)
class Sizing:
    """What the memory estimate needs (`inhouse.train.memory`): the largest micro-batch's tokens, the most
    parameters the adapter can train, the GPU's free bytes, and whether LoRA dropout keeps its copies."""

    tokens: int
    trainable: int
    free: int
    dropout: bool

    @classmethod
    def of(cls, recipe: Recipe, model: PreTrainedModel, lengths: Sequence[int] | None, packing: bool) -> Sizing | None:
        if not lengths:
            return None
        return cls(memory.batch_tokens(lengths, recipe.batch_size, packing),
                   memory.adapter_params_bound(model, recipe.lora_r), torch.cuda.mem_get_info(model.device)[0],
                   recipe.lora_dropout > 0)


def memory_choices(recipe: Recipe, model: PreTrainedModel, gpu: bool, sizing: Sizing | None, fused: bool,
                   across: str | None) -> tuple[float, float, bool]:
    """(share of 4-bit LoRA layers keeping their weight dequantised, share of decoder layers recomputed, whether
    their inputs are offloaded): the copies first, then checkpointing from what is left, then the offload only
    where the inputs do not fit."""
    weights = memory.dequantized_bytes(model, recipe.lora_target_modules) if recipe.quantized() and fused else 0
    kept = dequantized_share(recipe, model, weights, sizing)
    reserved = int(kept * weights)
    fraction = checkpointing_share(recipe, model, gpu, sizing, reserved)
    if 0 < fraction < 1 and across == "fsdp":
        raise InhouseError("checkpoint_fraction below 1 is not supported with strategy fsdp, which checkpoints "
                           "every wrapped layer; set checkpoint_fraction: 1 or strategy: ddp")
    if recipe.activation_offload is not None:
        return kept, fraction, recipe.activation_offload
    # Offloading the checkpointed layers' inputs cost 8-10% of 8B LoRA's tokens/s on an H200 (docs/benchmarks.md):
    # by default only where every layer recomputes and the estimate cannot keep their inputs on the GPU (or cannot
    # estimate). Under FSDP the weights are sharded tensors that the offload hooks do not know: off by default.
    # With only some layers recomputed, the others' activations would all be copied out and back: off too.
    fits = sizing is not None and memory.inputs_fit(model.config, sizing.tokens, sizing.free, sizing.trainable,
                                                    sizing.dropout, reserved)
    return kept, fraction, gpu and fraction == 1 and across != "fsdp" and not fits


def dequantized_share(recipe: Recipe, model: PreTrainedModel, weights: int, sizing: Sizing | None) -> float:
    """The share of a 4-bit base's fused LoRA layers (`weights`: their bf16 bytes, 0 where there are none)
    that keep their dequantised weight: as asked; else as much as the memory left holds with the recomputed
    layers the recipe asks for, or every layer (`memory.weights_to_keep_dequantized`); else none."""
    if not weights:
        return 0.0
    if recipe.dequantized_fraction is not None:
        return recipe.dequantized_fraction
    if sizing is None:
        return 0.0
    recomputed = asked_checkpointing(recipe)
    share = memory.weights_to_keep_dequantized(model.config, sizing.tokens, sizing.free, sizing.trainable, weights,
                                               sizing.dropout, 1.0 if recomputed is None else recomputed)
    return share or 0.0


def asked_checkpointing(recipe: Recipe) -> float | None:
    """The share of decoder layers the recipe says to recompute, None where it leaves that to the plan."""
    if recipe.gradient_checkpointing is False:
        return 0.0
    if recipe.checkpoint_fraction is not None:
        return recipe.checkpoint_fraction
    return 1.0 if recipe.gradient_checkpointing else None


def checkpointing_share(recipe: Recipe, model: PreTrainedModel, gpu: bool, sizing: Sizing | None,
                        reserved: int = 0) -> float:
    """The share of decoder layers to recompute, 0 for no checkpointing. As asked; else, given the examples'
    sizing, as many as the free GPU memory needs beside the `reserved` bytes (`inhouse.train.memory`); else all
    of them for QLoRA and models over 2B parameters on a GPU, none otherwise."""
    asked = asked_checkpointing(recipe)
    if asked is not None:
        return asked
    if sizing is not None:
        share = memory.layers_to_checkpoint(model.config, sizing.tokens, sizing.free, sizing.trainable,
                                            sizing.dropout, reserved)
        if share is not None:
            return share
    big = sum(p.numel() for p in model.parameters()) > 2e9 or recipe.quantized()
    return 1.0 if gpu and big else 0.0


GPU_ONLY = {
    "varlen": "PyTorch's varlen attention is a CUDA flash-attention kernel",
    "flex": "FlexAttention has no backward pass on CPU",
}


def refuse_unrunnable(attn: str, liger: bool, gpu: bool) -> None:
    """Kernels this machine cannot run fail (or stall) only once training has started, after the model
    loaded; refusing them here costs the user seconds instead."""
    if attn in GPU_ONLY and not gpu:
        raise InhouseError(f"attention: {attn} needs a CUDA GPU ({GPU_ONLY[attn]}); "
                           "use attention: sdpa (or auto) on this machine")
    if attn == "varlen" and not attention.varlen_available():
        raise InhouseError("attention: varlen needs PyTorch with torch.nn.attention.varlen (2.9 or later); "
                           "use attention: sdpa (or auto)")
    if liger and not gpu:
        raise InhouseError("liger: Liger Kernel's fused kernels are Triton GPU kernels; set liger: false on this machine")


def set_attention(model: PreTrainedModel, kind: str) -> None:
    name = {"varlen": attention.NAME, "flex": "flex_attention"}.get(kind, kind)
    if kind == "varlen":
        attention.register()
    model.set_attn_implementation(name)


def apply_liger(model: PreTrainedModel, fused_cross_entropy: bool = True) -> None:
    """Fused RMSNorm, RoPE, SwiGLU and (unless the trainer brings its own fused head, as TRL's DPO does)
    linear cross-entropy on this model instance."""
    fn = liger_apply_fn(model.config.model_type)
    if fn is None:
        raise InhouseError(f"liger: no Liger kernels for model type {model.config.model_type!r} "
                           "(or liger-kernel is not installed); set liger: false")
    wanted = {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
              "fused_linear_cross_entropy": fused_cross_entropy, "model": model}
    accepted = inspect.signature(fn).parameters
    fn(**{k: v for k, v in wanted.items() if k in accepted})


def prepare_model(model: PreTrainedModel, speed: SpeedPlan, fused_cross_entropy: bool = True) -> PreTrainedModel:
    """Apply the switches that act on the model itself (before LoRA is attached)."""
    set_attention(model, speed.attention)
    # A KV cache is useless in training, and its presence hides packed positions
    # from transformers' mask builder (attention would cross example boundaries).
    model.config.use_cache = False
    if speed.liger:
        apply_liger(model, fused_cross_entropy)
    if speed.gradient_checkpointing and speed.strategy != "fsdp":  # FSDP checkpoints its own wrapped layers
        enable_checkpointing(model)
        keep_some_layers(model, speed.checkpoint_fraction)
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need grads
    return model


def keep_some_layers(model: PreTrainedModel, fraction: float) -> list[bool]:
    """Checkpoint only `fraction` of the decoder layers, spread evenly, so that the recompute (a third of a
    LoRA step's matmuls) is paid only where memory needs it. Each of transformers' checkpointable layers
    reads its own `gradient_checkpointing` flag on every call; returns the flags, layer by layer."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    flags = memory.spread_evenly(fraction, len(layers))
    for layer, flag in zip(layers, flags):
        layer.gradient_checkpointing = flag
    return flags


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Non-reentrant checkpointing; the method was renamed in transformers 5.2x."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def offload_context(speed: SpeedPlan, model: torch.nn.Module):
    """Saved activations wait in pinned CPU memory between forward and backward, when asked."""
    if speed.activation_offload and world.gpu():
        from inhouse.train.offload import AsyncOffload

        return AsyncOffload(model.parameters())
    return contextlib.nullcontext()


@contextlib.contextmanager
def lora_input_casts(speed: SpeedPlan, layers: Sequence[torch.nn.Module]):
    """PEFT copies every LoRA layer's input to the adapter's float32 before its low-rank matmuls, and
    autocast copies it straight back to bf16 for them: with LoRA on all seven projections these copies
    were a quarter of an 8B step's GPU time (profile in docs/benchmarks.md). Under bf16 autocast the
    matmuls see the same bf16 operands without them, so the step computes the same numbers. Switched
    off for the training step only, through PEFT's own switch (`cast_input_dtype_enabled`, what
    `peft.helpers.disable_input_dtype_casting` sets), on `layers` found once: that helper walks every
    module twice a step. Outside autocast the casts are needed."""
    if not speed.bf16_lora_inputs:
        yield
        return
    before = [layer.cast_input_dtype_enabled for layer in layers]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    try:
        yield
    finally:
        for layer, value in zip(layers, before):
            layer.cast_input_dtype_enabled = value


class SpeedSteps(HostSteps):
    """Trainer mixin: the speed plan's (`self.speed`) per-step contexts around each training step:
    activation offload, and LoRA inputs left in bf16; and the per-step host work kept light (HostSteps)."""

    speed: SpeedPlan

    def training_step(self, *args, **kwargs):
        with offload_context(self.speed, self.model), lora_input_casts(self.speed, self.tuner_layers()):
            return super().training_step(*args, **kwargs)
