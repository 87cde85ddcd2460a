"""Load a base model and its tokenizer: builtin:tiny, a local folder, or a hub id."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from inhouse import world
from inhouse.errors import InhouseError
from inhouse.model import refs, tiny


def device() -> torch.device:
    """This rank's device (`inhouse.world`)."""
    return world.device()


def default_dtype() -> torch.dtype:
    """bf16 where the hardware does it natively, float32 on CPU (slow bf16 there)."""
    if world.bf16_supported():
        return torch.bfloat16
    return torch.float32


def _hub_error(name: str, exc: Exception) -> InhouseError:
    """A hub download that failed after the reference was checked (refs.check_hub)."""
    why = "HF_HUB_OFFLINE is set" if refs.offline() else "the hub did not deliver it"
    fix = "unset HF_HUB_OFFLINE to download it" if refs.offline() else "check the id and your network"
    return InhouseError(f"model {name!r} could not be loaded: {why} ({type(exc).__name__}: {exc}); "
                        f"pass a local model folder (one with config.json), or {fix}")


def resolve(name: str) -> str:
    """Check a model reference before loading anything heavy (see inhouse.model.refs)."""
    return refs.resolve_model(name)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    ref = resolve(name)
    if ref == tiny.NAME:
        return tiny.build_tokenizer()
    try:
        return AutoTokenizer.from_pretrained(ref)
    except OSError as exc:
        if Path(ref).exists():
            raise InhouseError(f"{ref}: cannot load its tokenizer: {exc}") from None
        raise _hub_error(name, exc) from None


def load_model(name: str, dtype: torch.dtype | None = None) -> PreTrainedModel:
    ref = resolve(name)
    dtype = dtype or default_dtype()
    if ref == tiny.NAME:
        model, _ = tiny.build()
        return model.to(dtype=dtype, device=device())
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype)
    except OSError as exc:
        if Path(ref).exists():
            raise InhouseError(f"{ref}: cannot load the model: {exc}") from None
        raise _hub_error(name, exc) from None
    return model.to(device())


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Set once, at load: a pad token (many chat models ship without one) and left padding, which
    batched generation needs (training pads with its own collators and does not read this)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load(name: str, dtype: torch.dtype | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer, the tokenizer prepared for generation."""
    return load_model(name, dtype), prepare_tokenizer(load_tokenizer(name))
