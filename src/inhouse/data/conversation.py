"""The one conversation type every data format is converted into.

Tool calling is part of it: an assistant message may call tools (`tool_calls`,
trained like any assistant text), a `tool` message carries a result (context,
never trained), and the conversation carries the tool definitions it was
written against (`tools`, passed to the chat template).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    """One call of a function: `arguments` is the JSON text as written."""

    id: str
    name: str
    arguments: str

    def as_dict(self) -> dict[str, Any]:
        """OpenAI's shape, with the arguments parsed: chat templates print them with `tojson`."""
        try:
            arguments: Any = json.loads(self.arguments)
        except ValueError:
            arguments = self.arguments
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": arguments}}


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    # Only meaningful for assistant turns: 0 keeps the turn as context but
    # trains nothing on it (OpenAI's per-message `weight`).
    weight: int = 1
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # a tool message: which call it answers

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.as_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    # Where the example came from, so every later error can name file:line.
    source: str = ""
    line: int = 0
    meta: dict = field(default_factory=dict, compare=False)
    tools: tuple[Any, ...] = field(default=(), compare=False)  # OpenAI's tool definitions, as written

    def as_chat(self) -> list[dict[str, Any]]:
        """Messages as the dicts a Hugging Face chat template expects."""
        return [m.as_dict() for m in self.messages]

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
