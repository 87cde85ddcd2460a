"""The one preference-pair type every preference format is converted into.

A pair is one prompt answered two ways. Each side, as a `Conversation` (the prompt's messages plus
that answer), renders through the chat template and is masked exactly as supervised fine-tuning
masks assistant turns, so DPO trains on the same tokens SFT would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from inhouse.data.conversation import Conversation, Message

Side = Literal["chosen", "rejected"]


@dataclass(frozen=True)
class PreferencePair:
    prompt: tuple[Message, ...]  # system / user / earlier turns, ending before the answers
    chosen: tuple[Message, ...]  # the preferred answer: assistant message(s)
    rejected: tuple[Message, ...]  # the other answer
    source: str = ""
    line: int = 0
    meta: dict = field(default_factory=dict, compare=False)
    tools: tuple[Any, ...] = field(default=(), compare=False)

    def side(self, which: Side) -> Conversation:
        answer = self.chosen if which == "chosen" else self.rejected
        return Conversation(self.prompt + answer, self.source, self.line, dict(self.meta), self.tools)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.source else f"line {self.line}"
