"""Recognise a dataset's format and turn its records into `Conversation`s.

Three formats cover what teams actually have: OpenAI chat fine-tuning files,
Alpaca instruction files and prompt/completion pairs. Validation uses
OpenAI's problem codes so people who know that tooling recognise them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inhouse.data.conversation import ROLES, Conversation, Message, Problem
from inhouse.data.read import Record, read_records
from inhouse.errors import InhouseError

CHAT = "chat"
ALPACA = "alpaca"
PROMPT_COMPLETION = "prompt_completion"
FORMATS: dict[str, str] = {
    CHAT: '{"messages": [{"role": ..., "content": ...}, ...]}',
    ALPACA: '{"instruction": ..., "input": ..., "output": ...}',
    PROMPT_COMPLETION: '{"prompt": ..., "completion": ...}',
}
MESSAGE_KEYS = ("role", "content", "name", "weight")


@dataclass
class LoadResult:
    """Everything usable in a file plus everything wrong with it."""

    path: str
    format: str
    conversations: list[Conversation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    total: int = 0


class _Bad(Exception):
    """Carries the first problem found in one example out of nested checks."""

    def __init__(self, code: str, fld: str, message: str) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, fld, message


# --- detection ---------------------------------------------------------------


def detect_format(value: Any) -> str | None:
    """The format a record's keys announce, or None if it announces none."""
    if not isinstance(value, dict):
        return None
    if "messages" in value:
        return CHAT
    if "instruction" in value and "output" in value:
        return ALPACA
    if "prompt" in value and "completion" in value:
        return PROMPT_COMPLETION
    return None


def _detect(path: str, records: Iterator[Record]) -> tuple[str, list[Record]]:
    """Read until a record announces the format; return it and what was read.

    The records read so far are handed back so a streaming file is read once.
    """
    seen: list[Record] = []
    for rec in records:
        seen.append(rec)
        if rec.ok and (fmt := detect_format(rec.value)):
            return fmt, seen
    raise _unrecognised(path, seen)


def _unrecognised(path: str, seen: list[Record]) -> InhouseError:
    if not seen:
        return InhouseError(f"{path}: contains no examples; add one JSON example per line")
    parsed = [r for r in seen if r.ok]
    if not parsed:
        return InhouseError(f"{seen[0].problem} (no example in the file could be parsed)")
    expected = "; ".join(f"{name} {shape}" for name, shape in FORMATS.items())
    first = parsed[0]
    value = first.value
    found = f"keys {sorted(value)}" if isinstance(value, dict) else f"a JSON {_json_type(value)}"
    return InhouseError(
        f"{path}: could not recognise the format (line {first.line} has {found}); expected one of: {expected}"
    )


# --- conversion ----------------------------------------------------------------


def _chat(value: Any) -> list[Message]:
    messages = _require_object(value).get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Bad("missing_messages_list", "messages", "'messages' must be a non-empty list of messages")
    out = [_message(m, f"messages[{i}]") for i, m in enumerate(messages)]
    if not any(m.role == "assistant" and m.weight == 1 for m in out):
        raise _Bad(
            "example_missing_assistant_message",
            "messages",
            "needs at least one assistant message with weight 1, or there is nothing to train on",
        )
    return out


def _message(m: Any, where: str) -> Message:
    if not isinstance(m, dict):
        raise _Bad("wrong_type", where, f"a message must be an object, got a JSON {_json_type(m)}")
    for key in ("role", "content"):
        if key not in m:
            raise _Bad("message_missing_key", where, f"message has no {key!r} key")
    for key in m:
        if key not in MESSAGE_KEYS:
            allowed = ", ".join(MESSAGE_KEYS)
            raise _Bad("message_unrecognized_key", f"{where}.{key}", f"unknown key {key!r}; allowed: {allowed}")
    if (role := m["role"]) not in ROLES:
        raise _Bad("unrecognized_role", f"{where}.role", f"role {role!r} is not one of {', '.join(ROLES)}")
    content = _text(m["content"], f"{where}.content")
    if "name" in m and not isinstance(m["name"], str):
        raise _Bad("wrong_type", f"{where}.name", f"'name' must be a string, got a JSON {_json_type(m['name'])}")
    return Message(role, content, _weight(m.get("weight", 1), f"{where}.weight"))


def _weight(w: Any, where: str) -> int:
    """OpenAI's per-message weight: 0 (context only) or 1 (train on it)."""
    if isinstance(w, bool) or not isinstance(w, int | float):
        raise _Bad("wrong_type", where, f"'weight' must be the number 0 or 1, got a JSON {_json_type(w)}")
    if w not in (0, 1):
        raise _Bad("invalid_weight", where, f"'weight' must be 0 or 1, got {w!r}")
    return int(w)


def _alpaca(value: Any) -> list[Message]:
    obj = _require_object(value)
    instruction = _text(_require(obj, "instruction"), "instruction")
    output = _text(_require(obj, "output"), "output")
    extra = _optional_text(obj, "input")
    system = _optional_text(obj, "system")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    head = [Message("system", system)] if system.strip() else []
    return [*head, Message("user", user), Message("assistant", output)]


def _prompt_completion(value: Any) -> list[Message]:
    obj = _require_object(value)
    prompt = _text(_require(obj, "prompt"), "prompt")
    completion = _text(_require(obj, "completion"), "completion")
    return [Message("user", prompt), Message("assistant", completion)]


_CONVERTERS: dict[str, Callable[[Any], list[Message]]] = {
    CHAT: _chat,
    ALPACA: _alpaca,
    PROMPT_COMPLETION: _prompt_completion,
}


def _require_object(value: Any) -> dict:
    if not isinstance(value, dict):
        raise _Bad("data_type", "", f"each example must be a JSON object, got a JSON {_json_type(value)}")
    return value


def _require(obj: dict, key: str) -> Any:
    if key not in obj:
        raise _Bad("missing_field", key, f"example has no {key!r} field")
    return obj[key]


def _text(value: Any, where: str) -> str:
    """A required, non-blank string; kept exactly as written (no stripping)."""
    if value is not None and not isinstance(value, str):
        raise _Bad("wrong_type", where, f"must be a string, got a JSON {_json_type(value)}")
    if value is None or not value.strip():
        raise _Bad("missing_content", where, "is empty")
    return value


def _optional_text(obj: dict, key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad("wrong_type", key, f"must be a string, got a JSON {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    """Name a Python value by its JSON type, the vocabulary the user wrote in."""
    kinds = ((bool, "boolean"), (int | float, "number"), (str, "string"), (list, "array"), (dict, "object"))
    return next((name for t, name in kinds if isinstance(value, t)), "null")


# --- loading -------------------------------------------------------------------


def convert(record: Record, fmt: str, source: str) -> Conversation | Problem:
    """One record as a Conversation, or the first Problem that stops it being one."""
    if record.problem is not None:
        return record.problem
    try:
        messages = _CONVERTERS[fmt](record.value)
    except _Bad as bad:
        return Problem(bad.code, source, record.line, bad.message, bad.field)
    return Conversation(tuple(messages), source=source, line=record.line)


def load_dataset(path: str | Path) -> LoadResult:
    """Load a whole file; per-example problems are collected, never raised."""
    source = str(path)
    records = read_records(path)
    fmt, head = _detect(source, records)
    result = LoadResult(source, fmt)
    for rec in _chain(head, records):
        result.total += 1
        item = convert(rec, fmt, source)
        if isinstance(item, Problem):
            result.problems.append(item)
        else:
            result.conversations.append(item)
    return result


def _chain(head: list[Record], rest: Iterator[Record]) -> Iterator[Record]:
    yield from head
    yield from rest


def load_conversations(path: str | Path) -> list[Conversation]:
    """Load for training: any problem at all stops the run, with a pointer to the report."""
    result = load_dataset(path)
    check = f"run 'inhouse data check {shlex.quote(str(path))}'"
    if result.problems:
        first, more = result.problems[0], len(result.problems) - 1
        tail = f"and {more} more problem{'s' * (more != 1)}; {check}" if more else check
        raise InhouseError(f"{first} ({tail})")
    if not result.conversations:
        raise InhouseError(f"{path}: no usable examples ({check})")
    return result.conversations


# --- reporting -----------------------------------------------------------------


def summarise(problems: Iterable[Problem], per_code: int = 3) -> list[str]:
    """Problems as lines for a human: a code seen on many lines is shown a few
    times in full and then counted, so 1000 copies do not bury the rest."""
    groups: dict[str, list[Problem]] = {}
    for p in problems:
        groups.setdefault(p.code, []).append(p)
    lines: list[str] = []
    for code, group in groups.items():
        lines += [str(p) for p in group[:per_code]]
        if rest := group[per_code:]:
            lines.append(_more_line(code, rest))
    return lines


def _more_line(code: str, rest: list[Problem]) -> str:
    examples = ", ".join(str(p.line) for p in rest[:3])
    dots = ", ..." if len(rest) > 3 else ""
    noun = "line" if len(rest) == 1 else "lines"
    return f"... {code} on {len(rest)} more {noun} (e.g. {examples}{dots})"
