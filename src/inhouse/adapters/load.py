"""Load what a user names to chat with: an adapter on its base model, a full model, or a base model.

Resolving library names lives here, above the model layer: `inhouse.model`
knows how to load and run a model, not where the adapter library is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from inhouse.adapters import registry
from inhouse.adapters.lineage import Lineage
from inhouse.errors import NotFoundError
from inhouse.model import refs

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from inhouse.model.generate import ChatModel


def locate(ref: str) -> Path | str:
    """An adapter folder, or a model reference that can be loaded; a name that is neither fails here,
    at once and with a suggestion, before torch is imported."""
    try:
        return registry.resolve(ref)
    except NotFoundError:
        return refs.resolve_model(ref, known=registry.names())


def load_chat_model(ref: str, chat_template: str | None = None) -> ChatModel:
    """An adapter (library name or folder) on its base model, or a plain base model."""
    path = locate(ref)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inhouse.model import load as model_load
    from inhouse.model.generate import ready
    from inhouse.model.template import apply_template_choice

    if not isinstance(path, Path):
        model, tokenizer = model_load.load(path)
        apply_template_choice(tokenizer, chat_template)
        return ready(model, tokenizer, ref)
    info = registry.lineage(path)
    tokenizer = AutoTokenizer.from_pretrained(path)  # saved at training: same chat template
    if not (path / "adapter_config.json").is_file():  # full fine-tune or merged model
        model = AutoModelForCausalLM.from_pretrained(path, dtype=model_load.default_dtype()).to(model_load.device())
    else:
        model = _with_adapter(path, info)
    return ready(model, tokenizer, info.name or path.name)


def _with_adapter(path: Path, info: Lineage) -> PreTrainedModel:
    from peft import PeftModel

    from inhouse.model import load as model_load

    return PeftModel.from_pretrained(model_load.load_model(base_of(path, info)), path)


def base_of(path: Path, info: Lineage | None = None) -> str:
    """The base model an adapter folder was trained on: its lineage, else its PEFT config."""
    from peft import PeftConfig

    info = registry.lineage(path) if info is None else info
    return info.base_model or PeftConfig.from_pretrained(path).base_model_name_or_path
