"""Generate with a loaded model, through the same chat template as training (loading: inhouse.adapters.load)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from inhouse.generation import Completion, GenerationConfig
from inhouse.model import batch
from inhouse.model import load as model_load
from inhouse.model.template import render, stop_token_ids


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


def ready(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str) -> ChatModel:
    """Inference mode, a tokenizer prepared for generation, and the model's stop tokens."""
    model.eval()
    model_load.prepare_tokenizer(tokenizer)
    return ChatModel(model, tokenizer, stop_token_ids(tokenizer, model.generation_config.eos_token_id), name)
