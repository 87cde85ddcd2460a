"""The one conversation type every data format is converted into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    # Only meaningful for assistant turns: 0 keeps the turn as context but
    # trains nothing on it (OpenAI's per-message `weight`).
    weight: int = 1


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    # Where the example came from, so every later error can name file:line.
    source: str = ""
    line: int = 0
    meta: dict = field(default_factory=dict, compare=False)

    def as_chat(self) -> list[dict[str, str]]:
        """Messages as the dicts a Hugging Face chat template expects."""
        return [{"role": m.role, "content": m.content} for m in self.messages]

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.source else f"line {self.line}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one example, in OpenAI's vocabulary of codes."""

    code: str
    source: str
    line: int
    message: str
    field: str = ""

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        fld = f" [{self.field}]" if self.field else ""
        return f"{where}: {self.code}{fld}: {self.message}"
