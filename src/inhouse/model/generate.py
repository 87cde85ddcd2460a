"""Generate with a base model or an adapter, through the same chat template as training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.streamers import BaseStreamer

from inhouse.adapters import registry
from inhouse.errors import InhouseError
from inhouse.model import load as model_load
from inhouse.model.template import apply_template_choice, render, stop_token_ids


@dataclass
class ChatModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    stop_ids: set[int]
    name: str

    def reply(self, messages: list[dict[str, str]], max_new_tokens: int = 256, temperature: float = 0.0,
              top_p: float = 1.0, streamer: BaseStreamer | None = None) -> str:
        """The assistant's next message; greedy unless temperature > 0."""
        return self.reply_batch([messages], max_new_tokens, temperature, top_p, streamer)[0]

    @torch.inference_mode()
    def reply_batch(self, conversations: list[list[dict[str, str]]], max_new_tokens: int = 256,
                    temperature: float = 0.0, top_p: float = 1.0, streamer: BaseStreamer | None = None) -> list[str]:
        """Next messages for several conversations in one left-padded generate call."""
        texts = [render(self.tokenizer, m, generation_prompt=True) for m in conversations]
        side, self.tokenizer.padding_side = self.tokenizer.padding_side, "left"
        try:
            enc = self.tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True)
        finally:
            self.tokenizer.padding_side = side
        enc = enc.to(self.model.device)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 \
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        out = self.model.generate(
            **enc, max_new_tokens=max_new_tokens, eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.tokenizer.pad_token_id, streamer=streamer, **sampling)
        new = out[:, enc["input_ids"].shape[1]:]
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in new]


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
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return ChatModel(model, tokenizer, stop_token_ids(tokenizer, model.generation_config.eos_token_id), name)
