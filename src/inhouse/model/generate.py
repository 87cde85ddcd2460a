"""Generate with a base model or an adapter, through the same chat template as training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from inhouse.adapters import registry
from inhouse.errors import InhouseError
from inhouse.generation import Completion, GenerationConfig
from inhouse.model import batch
from inhouse.model import load as model_load
from inhouse.model.template import apply_template_choice, render, stop_token_ids


@dataclass
class ChatModel:
    """A model ready to answer, with the chat template it was trained with.

    `adapter` names the PEFT adapter to use when the model carries several
    (the server's pool); None uses the model as loaded.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    stop_ids: set[int]
    name: str
    adapter: str | None = None

    def prompt_ids(self, messages: list[dict[str, str]], config: GenerationConfig) -> list[int]:
        text = render(self.tokenizer, config.with_system(messages), generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def request(self, messages: list[dict[str, str]], config: GenerationConfig,
                on_text: Callable[[str], None] | None = None) -> batch.Request:
        return batch.Request(self.prompt_ids(messages, config), config, self.adapter, on_text)

    def complete_batch(self, conversations: list[list[dict[str, str]]], config: GenerationConfig | None = None,
                       **overrides: Any) -> list[Completion]:
        """Next messages for several conversations in one generate call."""
        config = settings(config, overrides)
        requests = [self.request(m, config) for m in conversations]
        return batch.generate(self.model, self.tokenizer, requests, self.stop_ids)

    def complete(self, messages: list[dict[str, str]], config: GenerationConfig | None = None,
                 on_text: Callable[[str], None] | None = None, **overrides: Any) -> Completion:
        """The assistant's next message; `on_text` receives it piece by piece as it is generated."""
        request = self.request(messages, settings(config, overrides), on_text)
        return batch.generate(self.model, self.tokenizer, [request], self.stop_ids)[0]

    def reply(self, messages: list[dict[str, str]], config: GenerationConfig | None = None,
              on_text: Callable[[str], None] | None = None, **overrides: Any) -> str:
        """Just the text of `complete`; greedy unless temperature > 0."""
        return self.complete(messages, config, on_text, **overrides).text


def settings(config: GenerationConfig | None, overrides: dict[str, Any]) -> GenerationConfig:
    """A config with some fields replaced (validated again)."""
    config = config or GenerationConfig()
    return GenerationConfig(**(config.model_dump() | overrides)) if overrides else config


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
        return _ready(model, tokenizer, ref)
    path = registry.resolve(ref)
    info = registry.lineage(path)
    tokenizer = AutoTokenizer.from_pretrained(path)  # saved at training: same chat template
    if not (path / "adapter_config.json").is_file():  # full fine-tune or merged model
        model = AutoModelForCausalLM.from_pretrained(path, dtype=model_load.default_dtype()).to(model_load.device())
    else:
        model = _with_adapter(path, info)
    return _ready(model, tokenizer, info.get("name", path.name))


def _with_adapter(path: Path, info: dict) -> PreTrainedModel:
    from peft import PeftConfig, PeftModel

    base = info.get("base_model") or PeftConfig.from_pretrained(path).base_model_name_or_path
    return PeftModel.from_pretrained(model_load.load_model(base), path)


def _ready(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str) -> ChatModel:
    model.eval()
    model_load.prepare_tokenizer(tokenizer)
    return ChatModel(model, tokenizer, stop_token_ids(tokenizer, model.generation_config.eos_token_id), name)
