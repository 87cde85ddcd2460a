"""A transformers config as GGUF metadata: the numbers llama.cpp builds its graph from."""

from __future__ import annotations

import math
from typing import Any

import gguf
import numpy as np

from inhouse.adapters.export.families import Family, head_dim
from inhouse.errors import InhouseError


def rope(config: Any) -> dict[str, Any]:
    """Rotary settings whether the config spells them the transformers 4 way or the 5 way."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", None) or 10000.0)
    params["rope_type"] = params.get("rope_type") or params.get("type") or "default"
    return params


def write_hparams(writer: gguf.GGUFWriter, family: Family, config: Any) -> None:
    dim = head_dim(config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_key_length(dim)
    writer.add_value_length(dim)
    writer.add_rope_dimension_count(dim)
    _write_rope(writer, config)
    if family.arch == gguf.MODEL_ARCH.GEMMA2:
        _write_gemma2(writer, config, dim)


def _write_rope(writer: gguf.GGUFWriter, config: Any) -> None:
    params = rope(config)
    writer.add_rope_freq_base(float(params["rope_theta"]))
    kind = params["rope_type"]
    if kind in ("default", "llama3"):
        return  # llama3's per-frequency factors travel as the rope_freqs tensor (rope_factors)
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(params["factor"]))
        return
    if kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(params["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(params["original_max_position_embeddings"]))
        return
    raise InhouseError(f"GGUF export does not support rope scaling {kind!r} (supported: none, linear, yarn, llama3)")


def rope_factors(config: Any) -> np.ndarray | None:
    """Llama 3.1's long-context rotary factors, one per frequency, as llama.cpp's rope_freqs tensor."""
    params = rope(config)
    if params["rope_type"] != "llama3":
        return None
    dim, base, factor = head_dim(config), float(params["rope_theta"]), float(params["factor"])
    low, high = float(params.get("low_freq_factor", 1.0)), float(params.get("high_freq_factor", 4.0))
    old_ctx = float(params.get("original_max_position_embeddings", 8192))
    factors = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi / (1.0 / base ** (i / dim))
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _write_gemma2(writer: gguf.GGUFWriter, config: Any, dim: int) -> None:
    scalar = getattr(config, "query_pre_attn_scalar", dim)
    if scalar not in (dim, config.hidden_size // config.num_attention_heads):
        raise InhouseError(f"GGUF export: Gemma 2 with query_pre_attn_scalar={scalar} is not one llama.cpp runs")
    writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping or 0.0))
    writer.add_final_logit_softcapping(float(config.final_logit_softcapping or 0.0))
    writer.add_sliding_window(int(config.sliding_window or config.max_position_embeddings))
