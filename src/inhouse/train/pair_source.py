"""Where DPO's preference pairs come from: the one place training and evaluation read a pair file.

A small stand-in for the preference reader of `inhouse.data`: it reads OpenAI's preference
fine-tuning JSONL (`{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output":
[...]}`) with plain-text messages, enough for `inhouse train` and `inhouse eval` to run on files.
Training and evaluation call only these two functions, so the full reader replaces them here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inhouse.data.conversation import Message
from inhouse.data.keys import PREFERENCE
from inhouse.data.preference import PreferencePair
from inhouse.data.read import read_records
from inhouse.errors import InhouseError, InvalidInputError


def is_pair_file(path: Path) -> bool:
    """Whether the file's first example is preference data (a chosen and a rejected answer); a file that
    cannot be read as JSON is not."""
    try:
        first = next(iter(read_records(path)), None)
    except InhouseError:
        return False
    return first is not None and isinstance(first.value, dict) and any(k in first.value for k in PREFERENCE)


def read_pair_file(path: Path) -> list[PreferencePair]:
    """Every pair of the file; the first bad line stops the read, named file:line."""
    pairs = []
    for record in read_records(path):
        where = f"{path}:{record.line}"
        if record.problem is not None:
            raise InvalidInputError(str(record.problem))
        value = record.value if isinstance(record.value, dict) else {}
        prompt = _messages((value.get("input") or {}).get("messages"), f"{where}: input.messages")
        chosen = _messages(value.get("preferred_output"), f"{where}: preferred_output")
        rejected = _messages(value.get("non_preferred_output"), f"{where}: non_preferred_output")
        pairs.append(PreferencePair(prompt, chosen, rejected, str(path), record.line))
    if not pairs:
        raise InvalidInputError(f"{path}: no preference pairs")
    return pairs


def _messages(raw: Any, where: str) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidInputError(f"{where}: expected a non-empty list of messages")
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in raw):
        raise InvalidInputError(f"{where}: each message needs a role and a text content")
    return tuple(Message(m["role"], m["content"]) for m in raw)
