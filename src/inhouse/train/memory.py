"""How many decoder layers must recompute: training activations estimated against the GPU's free memory.

Checkpointing every layer re-runs the forward pass inside backward, a third of a LoRA step's matmuls: on an
H200, 8B LoRA on all projections trained at 35 % MFU (17 GiB) with every layer recomputed and at 56 %
(50 GiB) with none (docs/benchmarks.md). Where the GPU has room, recomputing fewer layers is free speed;
where it has none, every layer still recomputes. The estimate counts what one dense decoder layer keeps
for backward per token on the fast path (Liger's RMSNorm, SwiGLU and fused cross-entropy; flash
attention), in bf16, for the largest micro-batch the data can make, and leaves a margin. Shapes it does
not know (mixture-of-experts, models without Liger's kernels, eager attention) keep the old rule.

On a 4-bit base, the same budget first decides how many LoRA layers keep their dequantised weight
(`inhouse.train.fused_lora.keep_dequantized`), then how many decoder layers recompute with what is left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from transformers import PretrainedConfig
from torch import nn

GIB = 1 << 30
HEADROOM = 0.85  # of the free memory, for what the estimate counts
RESERVE = 2 * GIB  # allocator fragmentation, cuBLAS workspaces, the fused loss's chunks
ADAPTER_BYTES = 16  # per trainable parameter: fp32 weight, gradient and AdamW's two moments


def whole(share: float, total: int) -> int:
    """How many of `total` layers a share names, in whole layers and never fewer than asked (n / total gives n,
    whatever the rounding of the division)."""
    return math.ceil(share * total - 1e-9)


def spread_evenly(share: float, total: int) -> list[bool]:
    """Which of `total` layers a share picks, spread evenly (half: every other one)."""
    chosen = whole(share, total)
    return [(i + 1) * chosen // total > i * chosen // total for i in range(total)]


def layer_bytes_per_token(config: PretrainedConfig, dropout: bool = False) -> int | None:
    """Bytes one decoder layer keeps for backward per token, without checkpointing: the inputs of its
    projections and norms, q, k, v and the attention output and log-sum-exp, and SwiGLU's two inputs and
    output (7 hidden widths, 3 key/value widths, 3 MLP widths, in bf16). With LoRA dropout, each adapted
    projection also keeps its own dropped copy of its input and the mask (bf16 + bool: 3 bytes over 6 hidden
    widths and 1 MLP width when every projection is adapted). None for shapes it does not know."""
    text = config.get_text_config()
    names = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    if any(not isinstance(getattr(text, n, None), int) for n in names) or _has_experts(text):
        return None
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv = (getattr(text, "num_key_value_heads", None) or heads) * head_dim
    kept = 2 * (7 * text.hidden_size + 3 * kv + 3 * text.intermediate_size)
    return kept + (3 * (6 * text.hidden_size + text.intermediate_size) if dropout else 0)


def _has_experts(config: PretrainedConfig) -> bool:
    names = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size")
    return any(getattr(config, n, None) for n in names)


def batch_tokens(lengths: Sequence[int], batch_size: int, packed: bool) -> int:
    """The most tokens one micro-batch can hold: the longest examples packed in one row, or the longest
    padded `batch_size` times."""
    if not lengths:
        return 0
    if packed:
        return sum(sorted(lengths)[-batch_size:])
    return max(lengths) * min(batch_size, len(lengths))


def adapter_params_bound(model: nn.Module, rank: int) -> int:
    """LoRA on every linear layer is the most any target list trains: r x (inputs + outputs) each."""
    return sum(rank * (m.in_features + m.out_features) for m in model.modules() if isinstance(m, nn.Linear))


def _budget(tokens: int, free_bytes: int, trainable: int, per_layer: int) -> float:
    """What the layers' activations and kept weights may take: the free memory's headroom, less the reserve,
    the adapter's state, and the activations of the layer being recomputed."""
    return HEADROOM * free_bytes - RESERVE - ADAPTER_BYTES * trainable - tokens * per_layer


def dequantized_bytes(model: nn.Module, targets: Sequence[str]) -> int:
    """bf16 bytes of the 4-bit linear layers that LoRA wraps: all of them for ["all-linear"], else those named
    by a target or ending in "." + target, as PEFT matches names."""
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or not hasattr(module.weight, "quant_state"):
            continue
        if targets == ["all-linear"] or any(name == t or name.endswith("." + t) for t in targets):
            total += 2 * module.in_features * module.out_features
    return total


def layers_to_checkpoint(config: PretrainedConfig, tokens: int, free_bytes: int, trainable: int,
                         dropout: bool = False, reserved: int = 0) -> float | None:
    """The share of decoder layers to recompute so that the estimate fits: 0 (none) to 1 (all), in whole
    layers; None where the shape is not one the estimate knows. A checkpointed layer still keeps its input,
    and the layer being recomputed holds its activations once more. `reserved`: bytes already promised
    (dequantised weights kept)."""
    per_layer = layer_bytes_per_token(config, dropout)
    if per_layer is None:
        return None
    text = config.get_text_config()
    layers = text.num_hidden_layers
    budget = _budget(tokens, free_bytes, trainable, per_layer) - reserved
    excess = layers * tokens * per_layer - budget
    if excess <= 0:
        return 0.0
    saved_each = tokens * (per_layer - 2 * text.hidden_size)
    return min(layers, math.ceil(excess / saved_each)) / layers


def inputs_fit(config: PretrainedConfig, tokens: int, free_bytes: int, trainable: int, dropout: bool = False,
               reserved: int = 0) -> bool:
    """Whether, with every decoder layer recomputed, the inputs they keep fit the estimate on the GPU: where they
    do, offloading them to the CPU only costs time; False where the shape is not one the estimate knows."""
    per_layer = layer_bytes_per_token(config, dropout)
    if per_layer is None:
        return False
    text = config.get_text_config()
    inputs = text.num_hidden_layers * tokens * 2 * text.hidden_size
    return inputs <= _budget(tokens, free_bytes, trainable, per_layer) - reserved


def weights_to_keep_dequantized(config: PretrainedConfig, tokens: int, free_bytes: int, trainable: int,
                                weight_bytes: int, dropout: bool = False, recomputed: float = 1.0) -> float | None:
    """The share of a 4-bit base's LoRA layers that can keep their bf16 weight (`weight_bytes` for all of
    them), from the memory left with the `recomputed` share of decoder layers recomputing (by default all):
    0 to 1, in whole decoder layers; None where the shape is not one the estimate knows. Kept weights come
    before fewer recomputed layers: on an H200, 8B QLoRA with them and 3 layers recomputed beat none kept and
    none recomputed by 4-15%, and tied at 32k tokens (docs/benchmarks.md)."""
    per_layer = layer_bytes_per_token(config, dropout)
    if per_layer is None:
        return None
    text = config.get_text_config()
    layers = text.num_hidden_layers
    again = whole(recomputed, layers)  # each keeps only its input
    least = tokens * (again * 2 * text.hidden_size + (layers - again) * per_layer)
    room = _budget(tokens, free_bytes, trainable, per_layer) - least
    if weight_bytes <= 0 or room <= 0:
        return 0.0
    return min(layers, math.floor(room / weight_bytes * layers)) / layers
