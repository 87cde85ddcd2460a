"""Which Hugging Face architectures become which GGUF architecture, and how their weights differ.

llama.cpp runs each family with its own graph, so a converter must know three things per family:
the GGUF architecture name, whether the query/key rows must be re-ordered for llama.cpp's rotary
layout (the Llama graph rotates adjacent pairs; Hugging Face Llama rotates halves), and whether norm
weights are stored as offsets from one (Gemma). Anything not listed here is refused, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gguf

from inhouse.errors import InhouseError


@dataclass(frozen=True)
class Family:
    arch: gguf.MODEL_ARCH
    permute_qk: bool = False
    norm_plus_one: bool = False

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]


FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": Family(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "MistralForCausalLM": Family(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "Qwen2ForCausalLM": Family(gguf.MODEL_ARCH.QWEN2),
    "GemmaForCausalLM": Family(gguf.MODEL_ARCH.GEMMA, norm_plus_one=True),
    "Gemma2ForCausalLM": Family(gguf.MODEL_ARCH.GEMMA2, norm_plus_one=True),
}
SUPPORTED = "Llama, Mistral, Qwen2, Gemma and Gemma 2"


BY_MODEL_TYPE = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM"}


def family_of(config: Any) -> Family:
    """By the config's architectures, or its model_type when built in memory (no architectures yet)."""
    names = list(getattr(config, "architectures", None) or [])
    if not names and getattr(config, "model_type", None) in BY_MODEL_TYPE:
        names = [BY_MODEL_TYPE[config.model_type]]
    for name in names:
        if name in FAMILIES:
            return FAMILIES[name]
    got = ", ".join(names) or getattr(config, "model_type", "unknown")
    raise InhouseError(f"GGUF export does not support the architecture {got}; supported: {SUPPORTED} "
                       "(export --to merged or --to vllm work for any architecture transformers loads)")


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def permute_rows(weight, n_head: int):
    """Hugging Face's rotate-half row order -> llama.cpp's interleaved pairs, per head.
    Works on a weight (out, in), a bias (out,) or a LoRA B (out, r): only the out axis moves."""
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return (weight.reshape(n_head, 2, rows // n_head // 2, *rest)
            .swapaxes(1, 2)
            .reshape(weight.shape))


def adjust(family: Family, config: Any, hf_name: str, array):
    """One tensor as llama.cpp expects it (a numpy array in, a numpy array out)."""
    if family.permute_qk and ".self_attn.q_proj." in hf_name:
        return permute_rows(array, config.num_attention_heads)
    if family.permute_qk and ".self_attn.k_proj." in hf_name:
        return permute_rows(array, config.num_key_value_heads or config.num_attention_heads)
    if family.norm_plus_one and hf_name.endswith("norm.weight"):
        return array + 1
    return array
