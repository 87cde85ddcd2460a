"""The tokens that end an assistant turn, found once and written into every export.

Peers' exports most often break here: a GGUF or Modelfile that knows only the tokenizer's EOS keeps
talking past `<|im_end|>` or `<|eot_id|>`. The set is the tokenizer's EOS, every id of the model's
generation config, and the known end-of-turn tokens the tokenizer really has; the end-of-turn token
proper is the one the chat template writes right after an assistant message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inhouse.model.template import stop_token_ids

SENTINEL = "\u2063inhouse-end-probe\u2063"


@dataclass(frozen=True)
class Stops:
    ids: tuple[int, ...]
    texts: tuple[str, ...]
    end_of_turn: int | None  # what the template writes after an assistant message, when it is a stop token
    eos: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "texts": list(self.texts), "end_of_turn": self.end_of_turn, "eos": self.eos}


def find_stops(tokenizer: Any, generation_eos: int | list[int] | None) -> Stops:
    ids = sorted(stop_token_ids(tokenizer, generation_eos))
    texts = [tokenizer.convert_ids_to_tokens(i) for i in ids]
    return Stops(tuple(ids), tuple(texts), _end_of_turn(tokenizer, dict(zip(texts, ids))), tokenizer.eos_token_id)


def _end_of_turn(tokenizer: Any, by_text: dict[str, int]) -> int | None:
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that needs more than this probe: fall back to EOS
        return None
    after = text.split(SENTINEL, 1)[-1] if SENTINEL in text else ""
    found = [(after.find(t), i) for t, i in by_text.items() if t and after.find(t) >= 0]
    return min(found)[1] if found else None
