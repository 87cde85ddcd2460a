"""Load a base model and its tokenizer: builtin:tiny, a local folder, or a hub id."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from inhouse.errors import InhouseError, InvalidInputError, NotFoundError
from inhouse.model import tiny


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype() -> torch.dtype:
    """bf16 where the hardware does it natively, float32 on CPU (slow bf16 there)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _is_hub_id(name: str) -> bool:
    """'org/name' or 'name' as the hub spells them; anything else is meant as a path."""
    return not name.startswith((".", "/", "~")) and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None


def _hub_error(name: str, exc: Exception) -> InhouseError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    why = "HF_HUB_OFFLINE is set" if offline else "it is not in the local cache and the hub could not be reached"
    return InhouseError(
        f"model {name!r} is not a local folder and {why} ({type(exc).__name__}); "
        "pass a local path to a Hugging Face model folder (one with config.json), "
        "or unset HF_HUB_OFFLINE and connect to download it")


def resolve(name: str) -> str:
    """Check a model reference before loading anything heavy."""
    if name == tiny.NAME:
        return name
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InvalidInputError(f"{path}: not a Hugging Face model folder (no config.json)")
        return str(path.resolve())
    if not _is_hub_id(name):
        raise NotFoundError(f"{name}: no such model folder")
    return name


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
