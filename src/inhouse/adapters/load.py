"""Load what a user names to chat with: an adapter on its base model, a full model, or a base model.

Resolving library names lives here, above the model layer: `inhouse.model`
knows how to load and run a model, not where the adapter library is.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from inhouse.adapters import registry
from inhouse.errors import InhouseError
from inhouse.model import load as model_load
from inhouse.model.generate import ChatModel, ready
from inhouse.model.template import apply_template_choice


def _is_adapter(ref: str) -> bool:
    try:
        registry.resolve(ref)
        return True
    except InhouseError:
        return False


def load_chat_model(ref: str, chat_template: str | None = None) -> ChatModel:
    """An adapter (library name or folder) on its base model, or a plain base model."""
    if not _is_adapter(ref):
        model, tokenizer = model_load.load(ref)
        apply_template_choice(tokenizer, chat_template)
        return ready(model, tokenizer, ref)
    path = registry.resolve(ref)
    info = registry.lineage(path)
    tokenizer = AutoTokenizer.from_pretrained(path)  # saved at training: same chat template
    if not (path / "adapter_config.json").is_file():  # full fine-tune or merged model
        model = AutoModelForCausalLM.from_pretrained(path, dtype=model_load.default_dtype()).to(model_load.device())
    else:
        model = _with_adapter(path, info)
    return ready(model, tokenizer, info.get("name", path.name))


def _with_adapter(path: Path, info: dict) -> PreTrainedModel:
    from peft import PeftModel

    return PeftModel.from_pretrained(model_load.load_model(base_of(path, info)), path)


def base_of(path: Path, info: dict | None = None) -> str:
    """The base model an adapter folder was trained on: its lineage, else its PEFT config."""
    from peft import PeftConfig

    info = registry.lineage(path) if info is None else info
    return info.get("base_model") or PeftConfig.from_pretrained(path).base_model_name_or_path
