"""Variable-length (padding-free) attention, registered through transformers' AttentionInterface.

Packed rows hold several examples back to back; `cu_seq_lens` marks where each
starts. PyTorch's `varlen_attn` (flash attention, CUDA) attends causally within
each example and never across a boundary, without materialising a mask.
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers import AttentionInterface

from inhouse import world

NAME = "inhouse_varlen"


def varlen_available() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return world.gpu()


def cu_seqlens_from_positions(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Example boundaries are where positions restart at 0."""
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).reshape(-1)
    cu = torch.cat([starts, torch.tensor([flat.numel()], device=flat.device)]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


@functools.cache
def _options() -> tuple[dict, bool]:
    """How this PyTorch's `varlen_attn` spells causality, and whether it takes `enable_gqa`: the spellings
    changed across releases. Asked once: `inspect.signature` in every layer's forward was host time that
    the GPU waited for."""
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    return ({"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}), "enable_gqa" in params


def varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """query/key/value: (batch, heads, tokens, dim) as transformers passes them. Grouped-query models keep
    their fewer key/value heads: flash attention groups the query heads over them, where copies of the
    heads would cost memory traffic and a saved copy per layer (releases without `enable_gqa` pass them
    straight to the same kernel; tests/gpu checks both against repeated heads)."""
    from torch.nn.attention.varlen import varlen_attn

    cu, max_len = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    if cu is None:
        cu, max_len = cu_seqlens_from_positions(kwargs["position_ids"])
    batch, heads, tokens, dim = query.shape
    q = query.transpose(1, 2).reshape(batch * tokens, heads, dim)
    k = key.transpose(1, 2).reshape(batch * tokens, key.shape[1], dim)
    v = value.transpose(1, 2).reshape(batch * tokens, value.shape[1], dim)
    causal, gqa_keyword = _options()
    extra = {**causal, "enable_gqa": True} if gqa_keyword and k.shape[1] != heads else causal
    cu = cu.to(torch.int32)
    out = varlen_attn(q, k, v, cu, cu, int(max_len), int(max_len), scale=scaling, **extra)
    return out.reshape(batch, tokens, heads, dim), None


def register() -> str:
    AttentionInterface.register(NAME, varlen_attention)
    return NAME
