"""Read preference pairs for DPO: OpenAI's preference JSONL and TRL's prompt / chosen / rejected.

Recognised per file by their keys, like the conversation formats:

* OpenAI: `{"input": {"messages": [...], "tools": [...]}, "preferred_output": [...],
  "non_preferred_output": [...]}`, each output a list of assistant messages.
* TRL: `{"prompt": ..., "chosen": ..., "rejected": ...}`, each a string or a list of messages (also as
  CSV/TSV/Parquet columns). Without a prompt (TRL's "implicit prompt"), chosen and rejected are whole
  conversations and the turns they open with in common are the prompt; when both a prompt and such
  conversations are given, they must agree.

Messages are read by the rules conversations are read by (`formats._message`: roles, tool calls,
weights), so each side renders and masks exactly as a supervised example would. Every record becomes a
`PreferencePair` or a `Problem` naming file:line and field: nothing is dropped without a word.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

from inhouse.data import tools as tool_rules
from inhouse.data.conversation import Message, Problem
from inhouse.data.formats import (PREFERENCE, UnrecognisedFormat, _Bad, _json_type, _message, _require_assistant,
                                  _require_object, _text, _unrecognised, detect_format, each_record)
from inhouse.data.keys import HARMLESS, KeyProblem, check_example
from inhouse.data.keys import PREFERENCE as PREFERENCE_KEYS
from inhouse.data.normalize import normalize_text
from inhouse.data.preference import PreferencePair
from inhouse.data.read import Record, read_records, read_table, table_kind
from inhouse.data.tools import ToolProblem, tools_of
from inhouse.errors import InhouseError, InvalidInputError
from inhouse.paths import shown

OPENAI = "preference_openai"
TRL = "preference_trl"
FORMATS: dict[str, str] = {
    OPENAI: '{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", ...}], '
            '"non_preferred_output": [...]}',
    TRL: '{"prompt": ..., "chosen": ..., "rejected": ...} (strings or message lists; prompt optional when '
         'chosen and rejected are whole conversations)',
}
SIDES: dict[str, tuple[str, str]] = {OPENAI: ("preferred_output", "non_preferred_output"), TRL: ("chosen", "rejected")}
# Metadata a pair carries to prepared files (and back): a category to stratify by, TRL datasets' ids and scores.
PAIR_META = frozenset({"category", "prompt_id", "score_chosen", "score_rejected"})
OPENAI_USED = frozenset({"input", *SIDES[OPENAI]}) | PAIR_META
INPUT_USED = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
TRL_USED = frozenset({"prompt", "chosen", "rejected", "tools"}) | PAIR_META
ANSWER_ROLES = ("assistant", "tool")
Parts = tuple[tuple[Message, ...], tuple[Message, ...], tuple[Message, ...], tuple[Any, ...]]
Side = tuple[list[Message], str, int]  # an answer's messages, its key, the index its first message had there
T = TypeVar("T")


@dataclass
class PairsResult:
    """Every usable pair in a file plus everything wrong with it; `total` counts records read."""

    path: str
    format: str
    pairs: list[PreferencePair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    total: int = 0


class NotPreferenceData(InvalidInputError):
    """The file holds conversations (or nothing recognisable as pairs) where pairs were expected."""


# --- detection -------------------------------------------------------------------------------------


def pair_format(value: Any) -> str | None:
    """The preference shape a record's keys announce, or None."""
    if not isinstance(value, dict):
        return None
    if any(k in value for k in SIDES[OPENAI]):
        return OPENAI
    return TRL if any(k in value for k in SIDES[TRL]) else None


def is_preference_file(path: str | Path) -> bool:
    """Whether a file holds preference pairs (DPO) rather than conversations (SFT). Cheap: it reads up to
    the first record that announces a format, or a table's header. A file no record of which is
    recognisable is not a preference file; file-level faults (missing, binary) raise InhouseError."""
    if table_kind(path) is not None:
        return {"chosen", "rejected"} <= set(read_table(path).columns)
    try:
        fmt, _ = each_record(path)
    except UnrecognisedFormat:
        return False
    return fmt == PREFERENCE


def _detect(source: str, records: Iterator[Record]) -> tuple[str, Iterator[Record]]:
    """The file's pair format, and its records with those read to find it put back in front."""
    seen: list[Record] = []
    for rec in records:
        seen.append(rec)
        if rec.ok and (fmt := detect_format(rec.value)):
            if fmt != PREFERENCE:
                raise NotPreferenceData(f"{source}:{rec.line}: holds {fmt} conversations, not preference pairs "
                                        f"({_shapes()}); train conversations with method lora, qlora or full")
            return pair_format(rec.value) or TRL, chain(seen, records)
    raise _unrecognised(source, seen)


def _shapes() -> str:
    return "; ".join(f"{name} {shape}" for name, shape in FORMATS.items())


def _table(source: str, path: str | Path) -> tuple[str, Iterator[Record]]:
    """A table's prompt/chosen/rejected (and metadata) columns; other columns are not read, as with a
    conversation table's column mapping."""
    table = read_table(path)
    if not {"chosen", "rejected"} <= set(table.columns):
        names = ", ".join(repr(c) for c in table.columns) or "(none)"
        raise NotPreferenceData(f"{source}: has no 'chosen' and 'rejected' columns (its columns: {names})")
    return TRL, table.read([c for c in table.columns if c in TRL_USED])


# --- reading ---------------------------------------------------------------------------------------


def each_pair(path: str | Path) -> tuple[str, Iterator[tuple[Record, PreferencePair | Problem]]]:
    """The file's pair format, and each raw record with what it became (streamed). Raises before any
    record is yielded when the file holds conversations or nothing recognisable."""
    source = shown(path)
    fmt, records = _table(source, path) if table_kind(path) else _detect(source, read_records(path))
    return fmt, ((rec, to_pair(rec, fmt, source)) for rec in records)


def read_pairs(path: str | Path) -> PairsResult:
    """Every pair of a file; per-record problems are collected, never raised."""
    fmt, outcomes = each_pair(path)
    result = PairsResult(shown(path), fmt)
    for _, item in outcomes:
        result.total += 1
        (result.problems if isinstance(item, Problem) else result.pairs).append(item)
    return result


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Load for training: any problem at all stops the run, with a pointer to the report."""
    result = read_pairs(path)
    check = f"run 'inhouse data check {shlex.quote(shown(path))}'"
    if result.problems:
        first, more = result.problems[0], len(result.problems) - 1
        tail = f"and {more} more problem{'s' * (more != 1)}; {check}" if more else check
        raise InhouseError(f"{first} ({tail})")
    if not result.pairs:
        raise InhouseError(f"{shown(path)}: no usable preference pairs ({check})")
    return result.pairs


def to_pair(record: Record, fmt: str, source: str) -> PreferencePair | Problem:
    """One record as a pair, or the first problem that stops it being one."""
    if record.problem is not None:
        return record.problem
    try:
        prompt, chosen, rejected, tools = _PARSERS[fmt](record.value)
    except (_Bad, ToolProblem, KeyProblem) as bad:
        return Problem(bad.code, source, record.line, bad.message, bad.field)
    return PreferencePair(prompt, chosen, rejected, source, record.line, _meta(record.value), tools)


def named_messages(pair: PreferencePair) -> list[tuple[str, Message]]:
    """Every message of a pair with where it is ("prompt[0]", "chosen[0]", "rejected[1]"), for reports."""
    return [(f"{part}[{i}]", m) for part in ("prompt", "chosen", "rejected") for i, m in enumerate(getattr(pair, part))]


def _meta(value: dict) -> dict:
    """Metadata rides along (as `formats._json_meta` does for conversations); a null cell is no value."""
    return {k: v for k, v in value.items() if (k in PAIR_META or k in HARMLESS) and v is not None}


# --- the two shapes --------------------------------------------------------------------------------


def _openai(value: Any) -> Parts:
    obj = _require_object(value)
    _require_sides(obj, OPENAI)
    _check_keys(obj, OPENAI_USED)
    inp = _input(obj)
    tools, serial = _inside("input", lambda: tools_of(inp)), [0]
    prompt = _inside("input", lambda: _list(inp["messages"], "messages", serial, tools))
    sides = [(_list(obj[key], key, [serial[0]], tools), key, 0) for key in SIDES[OPENAI]]
    return _pair(prompt, f"input.messages[{len(prompt) - 1}]", sides, tools)


def _input(obj: dict) -> dict:
    """OpenAI's `input`: an object with a non-empty `messages` list (and optional tools)."""
    if "input" not in obj:
        raise _Bad("missing_prompt", "input", "no 'input' holding the prompt's messages")
    inp = obj["input"]
    if not isinstance(inp, dict):
        raise _Bad("wrong_type", "input", f"'input' must be an object with 'messages', got a JSON {_json_type(inp)}")
    _inside("input", lambda: check_example(inp, INPUT_USED))
    if not isinstance(inp.get("messages"), list) or not inp["messages"]:
        raise _Bad("missing_messages_list", "input.messages", "'input.messages' must be a non-empty list of messages")
    return inp


def _trl(value: Any) -> Parts:
    obj = _require_object(value)
    _require_sides(obj, TRL)
    _check_keys(obj, TRL_USED)
    tools, serial = tools_of(obj), [0]
    given = _trl_prompt(obj.get("prompt"), serial, tools)
    chosen = _answer(obj["chosen"], "chosen", [serial[0]], tools)
    rejected = _answer(obj["rejected"], "rejected", [serial[0]], tools)
    shared = _shared_turns(chosen, rejected)
    prompt, prompt_at = _trl_prompt_of(given, chosen[:shared])
    sides = [(chosen[shared:], "chosen", shared), (rejected[shared:], "rejected", shared)]
    return _pair(prompt, prompt_at, sides, tools)


def _trl_prompt(raw: Any, serial: list[int], tools: tuple[Any, ...]) -> list[Message] | None:
    """The `prompt`: a string (one user turn) or messages; None when absent (or a table's empty cell)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return [Message("user", _text(raw, "prompt"))]
    if isinstance(raw, list) and not raw:
        raise _Bad("missing_prompt", "prompt", "'prompt' is an empty list")
    return _list(raw, "prompt", serial, tools, "a string or a list of messages")


def _answer(raw: Any, key: str, serial: list[int], tools: tuple[Any, ...]) -> list[Message]:
    """`chosen` / `rejected`: a string (one assistant turn) or messages (possibly a whole conversation)."""
    if isinstance(raw, str):
        return [Message("assistant", _text(raw, key))]
    return _list(raw, key, serial, tools, "a string or a list of messages")


def _trl_prompt_of(given: list[Message] | None, head: list[Message]) -> tuple[list[Message], str]:
    """The prompt, from `prompt` or from the turns both conversations open with, and where its last
    message was written. Both given: one must end the other (the longer, fuller one is kept)."""
    if not head:
        if given is None:
            raise _Bad("missing_prompt", "prompt", "no 'prompt', and chosen and rejected do not open with shared "
                       "turns to take it from (plain strings need a 'prompt')")
        return given, f"prompt[{len(given) - 1}]"
    if given is None:
        return head, f"chosen[{len(head) - 1}]"
    longer, shorter = (given, head) if len(given) >= len(head) else (head, given)
    if _keys(longer[len(longer) - len(shorter):]) != _keys(shorter):
        raise _Bad("prompt_mismatch", "prompt", "'prompt' differs from the turns chosen and rejected open with; "
                   "give the prompt once (in 'prompt', or as the conversations' shared opening)")
    return longer, f"{'prompt' if longer is given else 'chosen'}[{len(longer) - 1}]"


# --- shared rules ----------------------------------------------------------------------------------


def _require_sides(obj: dict, fmt: str) -> None:
    other = next(f for f in SIDES if f != fmt)
    mixed = f" (this line has {', '.join(k for k in SIDES[other] if k in obj)}: one file holds one format)" \
        if pair_format(obj) == other else ""
    for key, side in zip(SIDES[fmt], ("chosen", "rejected"), strict=True):
        if obj.get(key) is None:
            raise _Bad(f"missing_{side}", key, f"no {key!r}: a preference pair needs a {side} answer{mixed}")


def _check_keys(obj: dict, used: frozenset[str]) -> None:
    """Every key used or harmless; the other shape's answer keys beside this one's are a mix-up."""
    if other := [k for k in PREFERENCE_KEYS if k in obj and k not in used]:
        raise _Bad("unrecognized_key", other[0], f"{other[0]!r} belongs to the other preference format; a pair is "
                   "either prompt/chosen/rejected or input/preferred_output/non_preferred_output")
    check_example(obj, used)


def _list(raw: Any, where: str, serial: list[int], tools: tuple[Any, ...], noun: str = "a list of messages"
          ) -> list[Message]:
    """Messages as conversations have them, tool calls checked against the tools within this list."""
    if not isinstance(raw, list):
        raise _Bad("wrong_type", where, f"{where!r} must be {noun}, got a JSON {_json_type(raw)}")
    parsed: list[Message] = []
    for i, m in enumerate(raw):
        parsed.append(_message(m, f"{where}[{i}]", parsed, serial))
    tool_rules.check(parsed, tools, where)
    return parsed


def _shared_turns(chosen: list[Message], rejected: list[Message]) -> int:
    """How many opening turns both sides share, ending before an assistant turn: an answer begins where
    the two conversations part, at the assistant turn that follows the last shared user or tool turn."""
    n = 0
    while n < min(len(chosen), len(rejected)) and _key(chosen[n]) == _key(rejected[n]):
        n += 1
    while n and chosen[n - 1].role == "assistant":
        n -= 1
    return n


def _pair(prompt: list[Message], prompt_at: str, sides: list[Side], tools: tuple[Any, ...]) -> Parts:
    last = prompt[-1].role
    if last not in ("user", "tool"):
        raise _Bad("prompt_not_ending_with_user", f"{prompt_at}.role", f"the prompt's last message is the {last}'s; "
                   "it must end with the user's turn (or a tool result) that the answers reply to")
    for answer, key, offset in sides:
        _check_answer(answer, key, offset)
    (chosen, _, _), (rejected, key, _) = sides
    if _keys(chosen) == _keys(rejected):
        raise _Bad("identical_answers", key, "is the same as the chosen answer (up to whitespace): the pair "
                   "prefers nothing")
    return tuple(prompt), tuple(chosen), tuple(rejected), tools


def _check_answer(answer: list[Message], key: str, offset: int) -> None:
    """An answer is the assistant's: it starts and ends with an assistant message, with only tool results
    (answering its calls) between, and trains at least one message (weight 1)."""
    if not answer:
        raise _Bad("empty_answer", key, "holds nothing after the prompt" if offset else "is empty")
    bad = next((i for i, m in enumerate(answer) if m.role not in ANSWER_ROLES), None)
    if bad is None:
        bad = next((i for i in (0, len(answer) - 1) if answer[i].role != "assistant"), None)
    if bad is not None:
        raise _Bad("answer_not_assistant", f"{key}[{offset + bad}].role", f"is a {answer[bad].role} message; an "
                   "answer is the assistant's message(s), starting and ending with the assistant")
    _require_assistant(answer, key)


def _key(m: Message) -> tuple:
    """What makes two messages the same turn: role, text up to whitespace, and the calls made."""
    return m.role, " ".join(normalize_text(m.content).split()), tuple((c.name, c.arguments) for c in m.tool_calls)


def _keys(messages: list[Message]) -> list[tuple]:
    return [_key(m) for m in messages]


def _inside(prefix: str, call: Callable[[], T]) -> T:
    """Run a check on a nested object, naming fields from the record's top (`input.tools`)."""
    try:
        return call()
    except (_Bad, ToolProblem, KeyProblem) as bad:
        raise _Bad(bad.code, f"{prefix}.{bad.field}", bad.message) from None


_PARSERS: dict[str, Callable[[Any], Parts]] = {OPENAI: _openai, TRL: _trl}
