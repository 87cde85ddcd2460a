"""Recognise a dataset's format and turn its records into `Conversation`s.

JSON/JSONL files are recognised by their keys: OpenAI chat fine-tuning files,
ShareGPT conversations, Alpaca instruction files and prompt/completion
pairs. CSV/TSV and Parquet files are recognised by extension and read
through a column mapping. Validation uses OpenAI's problem codes so people
who know that tooling recognise them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inhouse.data import tools as tool_rules
from inhouse.data.conversation import ROLES, Conversation, Message, Problem, ToolCall
from inhouse.data.keys import HARMLESS as HARMLESS_KEYS
from inhouse.data.keys import PREFERENCE as PREFERENCE_KEYS
from inhouse.data.keys import KeyProblem, check_example, check_part, preference_refusal
from inhouse.data.tools import ToolProblem, tools_of
from inhouse.data.read import Record, read_records, read_table, table_kind
from inhouse.errors import InhouseError, InvalidInputError
from inhouse.paths import shown

CHAT = "chat"
SHAREGPT = "sharegpt"
ALPACA = "alpaca"
PROMPT_COMPLETION = "prompt_completion"
# Preference pairs (DPO) are read by `preference_formats`; here they are recognised so that supervised
# training refuses them by name instead of dropping the rejected answers.
PREFERENCE = "preference"
FORMATS: dict[str, str] = {
    CHAT: '{"messages": [{"role": ..., "content": ...}, ...]}',
    SHAREGPT: '{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}',
    ALPACA: '{"instruction": ..., "input": ..., "output": ...}',
    PROMPT_COMPLETION: '{"prompt": ..., "completion": ...}',
    PREFERENCE: '{"prompt": ..., "chosen": ..., "rejected": ...} or {"input": {"messages": [...]}, '
                '"preferred_output": [...], "non_preferred_output": [...]} (for method dpo)',
}
MESSAGE_KEYS = ("role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call")
# ShareGPT speaker names seen in the wild, compared case-insensitively.
SHAREGPT_ROLES: dict[str, str] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
}
# Tried in order when a table comes without a column mapping (case-insensitive).
DEFAULT_COLUMNS = (("instruction", "output"), ("prompt", "completion"), ("prompt", "response"), ("question", "answer"))


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of a CSV/TSV/Parquet file hold which part of an example.

    `prompt` is the instruction or question and `response` the answer to
    train on; `input` (Alpaca's extra context) is appended to the prompt
    after a blank line. `category` lands in `Conversation.meta["category"]`
    for stratified splits; `meta` columns are copied into `meta` by name.
    """

    prompt: str
    response: str
    input: str | None = None
    system: str | None = None
    category: str | None = None
    meta: tuple[str, ...] = ()

    def names(self) -> list[str]:
        """Every column the mapping reads, without repeats."""
        named = [self.prompt, self.response, self.input, self.system, self.category, *self.meta]
        return list(dict.fromkeys(c for c in named if c is not None))


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
    if any(k in value for k in PREFERENCE_KEYS):
        return PREFERENCE
    if "messages" in value:
        return CHAT
    if isinstance(value.get("conversations"), list):
        return SHAREGPT
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


class UnrecognisedFormat(InvalidInputError):
    """No record of the file looks like a known data format."""


def _unrecognised(path: str, seen: list[Record]) -> InhouseError:
    if not seen:
        return UnrecognisedFormat(f"{path}: contains no examples; add one JSON example per line")
    parsed = [r for r in seen if r.ok]
    if not parsed:
        return UnrecognisedFormat(f"{seen[0].problem} (no example in the file could be parsed)")
    expected = "; ".join(f"{name} {shape}" for name, shape in FORMATS.items())
    first = parsed[0]
    value = first.value
    found = f"keys {sorted(value)}" if isinstance(value, dict) else f"a JSON {_json_type(value)}"
    return UnrecognisedFormat(
        f"{path}: could not recognise the format (line {first.line} has {found}); expected one of: {expected}"
    )


# --- conversion ----------------------------------------------------------------


CHAT_USED = frozenset({"messages", "tools", "functions", "parallel_tool_calls", "category"})
SHAREGPT_USED = frozenset({"conversations", "tools", "system", "category"})
ALPACA_USED = frozenset({"instruction", "input", "output", "system", "history", "category"})
PROMPT_COMPLETION_USED = frozenset({"prompt", "completion", "category"})
Parsed = tuple[list[Message], tuple[Any, ...]]


def _chat(value: Any) -> Parsed:
    obj = _require_object(value)
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Bad("missing_messages_list", "messages", "'messages' must be a non-empty list of messages")
    check_example(obj, CHAT_USED)
    tools, parsed, serial = tools_of(obj), [], [0]
    for i, m in enumerate(messages):
        parsed.append(_message(m, f"messages[{i}]", parsed, serial))
    tool_rules.check(parsed, tools, "messages")
    return _require_assistant(parsed, "messages"), tools


def _require_assistant(messages: list[Message], where: str) -> list[Message]:
    if not any(m.role == "assistant" and m.weight == 1 for m in messages):
        raise _Bad(
            "example_missing_assistant_message",
            where,
            "needs at least one assistant message with weight 1, or there is nothing to train on",
        )
    return messages


def _role_key(role: Any) -> str:
    """Roles compare without case or surrounding blanks: " Assistant " is assistant.

    This is the one place role spellings are normalised."""
    return role.strip().lower() if isinstance(role, str) else ""


def _require_keys(obj: Any, keys: tuple[str, ...], where: str, noun: str) -> dict:
    """A chat message or ShareGPT turn must be an object holding `keys`."""
    if not isinstance(obj, dict):
        raise _Bad("wrong_type", where, f"a {noun} must be an object, got a JSON {_json_type(obj)}")
    for key in keys:
        if key not in obj:
            raise _Bad("message_missing_key", where, f"{noun} has no {key!r} key")
    return obj


def _message(m: Any, where: str, before: list[Message], serial: list[int]) -> Message:
    """One OpenAI chat message; `name` (a speaker's name) is metadata chat templates do not use."""
    _require_keys(m, ("role",), where, "message")
    for key in m:
        if key not in MESSAGE_KEYS:
            allowed = ", ".join(MESSAGE_KEYS)
            raise _Bad("message_unrecognized_key", f"{where}.{key}", f"unknown key {key!r}; allowed: {allowed}")
    role = _role_key(m["role"])
    if role == "function":  # the older form of a tool result
        return Message("tool", _plain(m.get("content"), f"{where}.content", True), 1,
                       tool_call_id=tool_rules.answer_legacy(before, m.get("name")))
    if role not in ROLES:
        raise _Bad("unrecognized_role", f"{where}.role", f"role {m['role']!r} is not one of {', '.join(ROLES)}")
    if "name" in m and not isinstance(m["name"], str):
        raise _Bad("wrong_type", f"{where}.name", f"'name' must be a string, got a JSON {_json_type(m['name'])}")
    calls = _calls(m, where, role, serial)
    if "content" not in m and not calls:
        raise _Bad("message_missing_key", where, "message has no 'content' key")
    content = _plain(m.get("content"), f"{where}.content", bool(calls) or role == "tool")
    tool_call_id = m.get("tool_call_id") if role == "tool" else None
    if role == "tool" and not isinstance(tool_call_id, str):
        raise _Bad("message_missing_key", f"{where}.tool_call_id", "a tool message needs the 'tool_call_id' it answers")
    return Message(role, content, _weight(m.get("weight", 1), f"{where}.weight"), calls, tool_call_id)  # type: ignore[arg-type]


def _calls(m: dict, where: str, role: str, serial: list[int]) -> tuple[ToolCall, ...]:
    if "tool_calls" not in m and "function_call" not in m:
        return ()
    if role != "assistant":
        raise _Bad("wrong_type", f"{where}.tool_calls", "only assistant messages make tool calls")
    if "tool_calls" in m:
        return tool_rules.parse_calls(m["tool_calls"], f"{where}.tool_calls", serial)
    return (tool_rules.function_call(m["function_call"], f"{where}.function_call",
                                     f"call_{tool_rules.next_id(serial)}"),)


def _plain(value: Any, where: str, may_be_empty: bool) -> str:
    """Message content: a string, or a list of text parts (media parts are refused by name)."""
    if isinstance(value, list):
        value = "".join(check_part(part, f"{where}[{j}]") for j, part in enumerate(value))
    if may_be_empty and (value is None or value == ""):
        return ""
    return _text(value, where)


def _sharegpt(value: Any) -> Parsed:
    obj = _require_object(value)
    turns = obj.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise _Bad("missing_messages_list", "conversations", "'conversations' must be a non-empty list of turns")
    check_example(obj, SHAREGPT_USED)
    tools, parsed, serial = tools_of(obj), [], [0]
    system = _optional_text(obj, "system")
    if system.strip():
        parsed.append(Message("system", system))
    for i, t in enumerate(turns):
        parsed.append(_turn(t, f"conversations[{i}]", parsed, serial))
    tool_rules.check(parsed, tools, "conversations")
    return _require_assistant(parsed, "conversations"), tools


def _turn(t: Any, where: str, before: list[Message], serial: list[int]) -> Message:
    """One ShareGPT turn. 'markdown' (the same text as HTML, in exports of the ShareGPT site) is not used."""
    _require_keys(t, ("from", "value"), where, "turn")
    for key in t:
        if key not in ("from", "value", "markdown", "weight"):
            raise _Bad("message_unrecognized_key", f"{where}.{key}", f"unknown key {key!r}; allowed: from, value")
    speaker = _role_key(t["from"])
    if speaker == "function_call":
        return Message("assistant", "", _weight(t.get("weight", 1), f"{where}.weight"),
                       tool_rules.sharegpt_calls(t["value"], f"{where}.value", serial))
    if speaker in ("observation", "tool", "function"):
        return Message("tool", _plain(t["value"], f"{where}.value", True), 1,
                       tool_call_id=tool_rules.answer_legacy(before, None))
    if (role := SHAREGPT_ROLES.get(speaker)) is None:
        known = ", ".join([*SHAREGPT_ROLES, "function_call", "observation"])
        raise _Bad("unrecognized_role", f"{where}.from", f"'from' {t['from']!r} is not one of {known}")
    return Message(role, _text(t["value"], f"{where}.value"), _weight(t.get("weight", 1), f"{where}.weight"))  # type: ignore[arg-type]


def _weight(w: Any, where: str) -> int:
    """OpenAI's per-message weight: 0 (context only) or 1 (train on it)."""
    if isinstance(w, bool) or not isinstance(w, int | float):
        raise _Bad("wrong_type", where, f"'weight' must be the number 0 or 1, got a JSON {_json_type(w)}")
    if w not in (0, 1):
        raise _Bad("invalid_weight", where, f"'weight' must be 0 or 1, got {w!r}")
    return int(w)


def _alpaca(value: Any) -> Parsed:
    obj = _require_object(value)
    check_example(obj, ALPACA_USED)
    instruction = _text(_require(obj, "instruction"), "instruction")
    output = _text(_require(obj, "output"), "output")
    history = _history(obj.get("history"))
    messages = _instruction(instruction, output, _optional_text(obj, "input"), _optional_text(obj, "system"))
    return [*messages[:-2], *history, *messages[-2:]], ()


def _history(raw: Any) -> list[Message]:
    """Alpaca's (LLaMA-Factory's) earlier turns: [[question, answer], ...], kept as context and trained."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _Bad("wrong_type", "history", "'history' must be a list of [question, answer] pairs")
    turns = []
    for i, pair in enumerate(raw):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise _Bad("wrong_type", f"history[{i}]", "each history item must be a [question, answer] pair")
        turns += [Message("user", _text(pair[0], f"history[{i}][0]")),
                  Message("assistant", _text(pair[1], f"history[{i}][1]"))]
    return turns


def _instruction(prompt: str, response: str, extra: str, system: str) -> list[Message]:
    """Alpaca's layout, shared by tables: input follows the prompt after a blank line."""
    user = f"{prompt}\n\n{extra}" if extra.strip() else prompt
    head = [Message("system", system)] if system.strip() else []
    return [*head, Message("user", user), Message("assistant", response)]


def _prompt_completion(value: Any) -> Parsed:
    obj = _require_object(value)
    check_example(obj, PROMPT_COMPLETION_USED)
    prompt = _text(_require(obj, "prompt"), "prompt")
    completion = _text(_require(obj, "completion"), "completion")
    return [Message("user", prompt), Message("assistant", completion)], ()


def _preference(value: Any) -> Parsed:
    check_example(_require_object(value), frozenset())
    raise AssertionError("unreachable: preference keys always raise")


_CONVERTERS: dict[str, Callable[[Any], Parsed]] = {
    PREFERENCE: _preference,
    CHAT: _chat,
    SHAREGPT: _sharegpt,
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


def _optional_text(obj: dict, key: str | None) -> str:
    value = obj.get(key) if key is not None else None
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
    return _convert(record, source, _CONVERTERS[fmt], _json_meta)


def _convert(
    record: Record, source: str, to_messages: Callable[[Any], Parsed], to_meta: Callable[[Any], dict]
) -> Conversation | Problem:
    if record.problem is not None:
        return record.problem
    try:
        messages, tools = to_messages(record.value)
    except (_Bad, ToolProblem, KeyProblem) as bad:
        return Problem(bad.code, source, record.line, bad.message, bad.field)
    return Conversation(tuple(messages), source=source, line=record.line, meta=to_meta(record.value), tools=tools)


def _json_meta(value: Any) -> dict:
    """A top-level 'category' and the harmless metadata fields (id, source, topic, ...) ride along:
    stratified splits can use any of them, and prepared files keep them."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if k == "category" or k in HARMLESS_KEYS}


def load_dataset(path: str | Path, columns: ColumnMap | None = None) -> LoadResult:
    """Load a whole file; per-example problems are collected, never raised.

    `columns` maps a CSV/TSV/Parquet file's columns; without it the usual
    names (DEFAULT_COLUMNS) are tried. JSON/JSONL files need no mapping.
    """
    fmt, outcomes = each_record(path, columns)
    result = LoadResult(shown(path), fmt)
    for _, item in outcomes:
        result.total += 1
        (result.problems if isinstance(item, Problem) else result.conversations).append(item)
    return result


def each_record(path: str | Path, columns: ColumnMap | None = None
                ) -> tuple[str, Iterator[tuple[Record, Conversation | Problem]]]:
    """The file's format, and each raw record with what it became (streamed).

    Raises UnrecognisedFormat (before any record is yielded) when no record
    looks like a known format.
    """
    if (kind := table_kind(path)) is not None:
        return kind, _table_records(path, columns)
    if columns is not None:
        raise InhouseError(f"{path}: a column mapping applies only to .csv, .tsv and .parquet files, not JSON/JSONL")
    source = shown(path)
    records = read_records(path)
    fmt, head = _detect(source, records)
    return fmt, ((rec, convert(rec, fmt, source)) for rec in _chain(head, records))


def _table_records(path: str | Path, columns: ColumnMap | None) -> Iterator[tuple[Record, Conversation | Problem]]:
    source = shown(path)
    table = read_table(path)
    cols = _resolve_columns(source, columns, table.columns)

    def to_conversation(rec: Record) -> Conversation | Problem:
        return _convert(rec, source, lambda row: _row_messages(row, cols), lambda row: _row_meta(row, cols))

    return ((rec, to_conversation(rec)) for rec in table.read(cols.names()))


def _chain(head: list[Record], rest: Iterator[Record]) -> Iterator[Record]:
    yield from head
    yield from rest


def _resolve_columns(path: str, columns: ColumnMap | None, available: tuple[str, ...]) -> ColumnMap:
    """The mapping to use, checked against the header before any row is read."""
    cols = columns or _default_columns(path, available)
    for name in cols.names():
        if name not in available:
            raise InhouseError(f"{path}: has no column {name!r}; its columns are: {_names(available)}")
    return cols


def _default_columns(path: str, available: tuple[str, ...]) -> ColumnMap:
    by_lower: dict[str, str] = {}
    for name in available:
        by_lower.setdefault(name.lower(), name)
    for prompt, response in DEFAULT_COLUMNS:
        if prompt in by_lower and response in by_lower:
            optional = {key: by_lower.get(key) for key in ("input", "system", "category")}
            return ColumnMap(by_lower[prompt], by_lower[response], **optional)
    usual = "; ".join(f"{p}/{r}" for p, r in DEFAULT_COLUMNS)
    raise InhouseError(
        f"{path}: columns {_names(available)} match none of the usual pairs ({usual}); name them with --prompt-column and --response-column"
    )


def _names(columns: Iterable[str]) -> str:
    """Column names quoted, so a name with a newline keeps the message on one line."""
    return ", ".join(repr(c) for c in columns) or "(none)"


def _row_messages(row: dict, cols: ColumnMap) -> Parsed:
    prompt = _text(row[cols.prompt], cols.prompt)
    response = _text(row[cols.response], cols.response)
    return _instruction(prompt, response, _optional_text(row, cols.input), _optional_text(row, cols.system)), ()


def _row_meta(row: dict, cols: ColumnMap) -> dict:
    meta = {name: row[name] for name in cols.meta}
    if cols.category is not None:
        meta["category"] = row[cols.category]
    return meta


class PreferenceNotConversations(InvalidInputError):
    """A preference file given where conversations are read (supervised training, evaluation)."""


def load_conversations(path: str | Path, columns: ColumnMap | None = None) -> list[Conversation]:
    """Load for training: any problem at all stops the run, with a pointer to the report. A preference
    file is refused as a whole, in one line that names `method: dpo`."""
    result = load_dataset(path, columns)
    if result.format == PREFERENCE:
        raise PreferenceNotConversations(f"{shown(path)}: {preference_refusal('pairs of chosen and rejected answers')}")
    check = f"run 'inhouse data check {shlex.quote(shown(path))}'"
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
