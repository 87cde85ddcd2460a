"""Structured outputs: check that assistant replies which must be JSON really are.

A model fine-tuned to answer in JSON copies whatever the training data does,
including broken JSON and JSON that breaks the contract. This step finds those
examples before training and names each one (file:line, message, JSON path).

Three checks, in order, for every assistant message that must be JSON:

1. ``not_json``: the message is the JSON value itself, or one code fence
   (```` ```json ```` or a bare ```` ``` ````) with only whitespace around it.
   Prose around a fence, NaN/Infinity and duplicate object keys fail here.
2. ``schema``: the value against a JSON Schema (the ``jsonschema`` library,
   draft from ``$schema``, latest draft when absent; formats such as
   ``email`` and ``date`` are checked where the standard library can).
   Every error is reported, the most relevant first.
3. ``rule``: declarative count rules from the recipe (below).

Which messages must be JSON (``json_messages``): ``"all"`` assistant messages
(weight-0 context turns included: the model still reads them), only the
``"last"`` one, or only those that look like JSON (``"fenced"``: they start
with ``{`` or ``[`` or contain a code fence).

Rule syntax
-----------
A rule selects values with a *path* and constrains how many there are. No
expressions are evaluated; paths are parsed by this module, not a library.

* ``path``: ``$`` (optional) then steps: ``.name``, ``['odd name']``,
  ``[0]`` / ``[-1]`` (list index), ``[*]`` or ``.*`` (every item of a list or
  value of an object). The first ``.`` may be omitted: ``attendees[*].email``.
  A missing key or wrong type selects nothing (count 0), never an error.
* ``where`` (optional): ``{field: value, ...}``; keeps only selected objects
  whose fields equal those JSON values exactly (``true`` is not ``"true"``).
* ``count``: ``equals``, or ``min`` and/or ``max`` (non-negative integers).
* ``each`` (optional): a path; the rule is checked once per value it selects,
  with ``path`` relative to that value (e.g. one organizer *per* meeting).
* ``name`` and ``message`` (optional): shown in the failure.

Example 1, exactly one attendee whose role is organizer::

    - name: one organizer
      path: attendees[*]
      where: {role: organizer}
      count: {equals: 1}

Example 2, every meeting has 1 to 10 attendees, and a title::

    - each: meetings[*]
      path: attendees[*]
      count: {min: 1, max: 10}
    - path: meetings[*].title
      count: {min: 1}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from jsonschema.exceptions import SchemaError, best_match, relevance
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from referencing.exceptions import Unresolvable

from inhouse.data.conversation import Conversation, Problem
from inhouse.errors import InhouseError

JsonMessages = Literal["all", "last", "fenced"]
FailureKind = Literal["not_json", "schema", "rule"]

# Reasons quote values; a giant string must not turn into a giant report line.
MAX_REASON = 200
# Rule failures list at most this many matching paths.
SHOW_MATCHES = 3

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WILD = object()  # the `[*]` / `.*` step of a rule path
_BRACKET = re.compile(r"\[\s*(\*|-?\d+|'[^']*'|\"[^\"]*\")\s*\]")
_NAME = re.compile(r"[^.\[\]'\"\s]+")


def _one_line(text: str, limit: int = MAX_REASON) -> str:
    """Collapse whitespace and cut, so every failure prints on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def json_path(parts: Sequence[Any]) -> str:
    """`$.a[0]['odd key']` for keys, indexes and rule wildcards."""
    out = "$"
    for p in parts:
        if p is _WILD:
            out += "[*]"
        elif isinstance(p, int):
            out += f"[{p}]"
        elif _PLAIN_KEY.fullmatch(p):
            out += f".{p}"
        else:
            out += "['" + p.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return out


# --- JSON extraction -------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """Python keeps the last duplicate silently; a schema would then check a guess."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)


def _unfence(text: str) -> str | None:
    """The body of a message that is exactly one ```json / ``` fence, else None."""
    if len(text) < 6 or not (text.startswith("```") and text.endswith("```")):
        return None
    inner = text[3:-3]
    info, newline, body = inner.partition("\n")
    if not newline:  # ```{"a": 1}``` on one line
        return inner
    return body if info.strip().lower() in ("", "json") else None


def _parse(text: str) -> tuple[Any, str] | str:
    """(value, how) with how "whole" or "fence"; a one-line reason when not JSON."""
    s = text.strip().lstrip("\ufeff").strip()
    body, how = _unfence(s), "fence"
    if body is None:
        body, how = s, "whole"
    try:
        return _loads(body), how
    except (ValueError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
    fences = s.count("```")
    if fences >= 4:
        why = f"{fences // 2} code fences; expected the JSON alone or one fence"
    elif fences and how == "whole":
        why = "text around the code fence (or not a json fence); expected only the fence"
    return _one_line(f"not JSON ({how}): {why}")


def extract_json(text: str) -> tuple[Any, str] | None:
    """The JSON in an assistant message: (value, "whole" | "fence"), or None."""
    got = _parse(text)
    return None if isinstance(got, str) else got


def _looks_like_json(text: str) -> bool:
    s = text.lstrip().lstrip("\ufeff")
    return s[:1] in ("{", "[") or "```" in text


# --- Schema ----------------------------------------------------------------


def load_schema(path: str | Path) -> Any:
    """A ready jsonschema validator for a schema file; InhouseError names what is wrong."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InhouseError(f"schema file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InhouseError(f"cannot read schema file {p}: {_one_line(str(e))}") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as e:
        raise InhouseError(f"{p}:{e.lineno}: schema is not valid JSON: {e.msg} (column {e.colno})") from None
    return _validator(schema, str(p))


def _validator(schema: Any, where: str) -> Any:
    if not isinstance(schema, (dict, bool)):
        raise InhouseError(f"{where}: a JSON Schema must be an object or a boolean, got {type(schema).__name__}")
    uri = schema.get("$schema") if isinstance(schema, dict) else None
    if uri is not None and (not isinstance(uri, str) or validator_for(schema, default=None) is None):
        raise InhouseError(
            f"{where}: unknown $schema {uri!r}; use e.g. https://json-schema.org/draft/2020-12/schema"
        )
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as e:  # a broken regex in `pattern` is one too
        at, why = json_path(list(e.absolute_path)), _one_line(e.message)
        raise InhouseError(f"{where}: invalid JSON Schema at {at}: {why}") from None
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _schema_errors(validator: Any, value: Any) -> list[tuple[str, str]]:
    """(path, reason) for every error, most relevant first, each narrowed to its cause."""
    try:
        errors = sorted(validator.iter_errors(value), key=relevance, reverse=True)
    except Unresolvable as e:
        raise InhouseError(f"schema $ref cannot be resolved (remote refs are not fetched): {e}") from None
    out = []
    for err in errors:
        leaf = best_match([err]) or err  # anyOf/oneOf: the branch that came closest
        out.append((json_path(list(leaf.absolute_path)), _one_line(leaf.message)))
    return out


# --- Rules -----------------------------------------------------------------


class PathError(ValueError):
    pass


@lru_cache(maxsize=256)
def parse_path(text: str) -> tuple[Any, ...]:
    """Steps of a rule path: str keys, int indexes, and _WILD. Raises PathError."""
    s = text.strip()
    if not s:
        raise PathError("empty path; use $ for the whole value")
    s = s.removeprefix("$")
    steps: list[Any] = []
    i = 0
    while i < len(s):
        if s[i] == "[":
            m = _BRACKET.match(s, i)
            if not m:
                raise PathError(f"bad bracket at position {i} of {text!r}; use [*], [0] or ['key']")
            tok = m.group(1)
            steps.append(_WILD if tok == "*" else int(tok) if tok[0] not in "'\"" else tok[1:-1])
            i = m.end()
            continue
        if s[i] == ".":
            i += 1
        elif steps:
            raise PathError(f"expected '.' or '[' at position {i} of {text!r}")
        m = _NAME.match(s, i)
        if not m:
            raise PathError(f"empty or bad name at position {i} of {text!r}")
        steps.append(_WILD if m.group() == "*" else m.group())
        i = m.end()
    return tuple(steps)


def select(value: Any, steps: Sequence[Any], at: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(concrete path parts, value) for everything the steps reach; missing -> nothing."""
    if not steps:
        yield at, value
        return
    step, rest = steps[0], steps[1:]
    if step is _WILD:
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for k, v in items:
            yield from select(v, rest, (*at, k))
    elif isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
        idx = step % len(value)
        yield from select(value[idx], rest, (*at, idx))
    elif isinstance(step, str) and isinstance(value, dict) and step in value:
        yield from select(value[step], rest, (*at, step))


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0 but True is not 1 (Python says it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


class Count(BaseModel):
    """How many selected values are allowed: `equals`, or `min` and/or `max`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    equals: int | None = Field(default=None, ge=0, strict=True)
    min: int | None = Field(default=None, ge=0, strict=True)
    max: int | None = Field(default=None, ge=0, strict=True)

    @model_validator(mode="after")
    def _consistent(self) -> Count:
        if self.equals is None and self.min is None and self.max is None:
            raise ValueError("count needs equals, min or max")
        if self.equals is not None and (self.min is not None or self.max is not None):
            raise ValueError("count: use equals alone, or min/max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"count: min {self.min} > max {self.max}")
        return self

    def violation(self, n: int) -> str | None:
        """Why n breaks the constraint, or None."""
        if self.equals is not None and n != self.equals:
            return f"expected exactly {self.equals}"
        if self.min is not None and n < self.min:
            return f"expected at least {self.min}"
        if self.max is not None and n > self.max:
            return f"expected at most {self.max}"
        return None


class Rule(BaseModel):
    """A declarative count constraint on the JSON of an assistant message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    count: Count
    where: dict[str, Any] = Field(default_factory=dict)
    each: str | None = None
    name: str | None = None
    message: str | None = None

    @field_validator("path", "each")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        if v is not None:
            parse_path(v)  # PathError is a ValueError: pydantic reports it
        return v

    def check(self, value: Any) -> list[tuple[str, str]]:
        """(selector path, reason) per scope (the value, or each `each` match) that fails."""
        steps = parse_path(self.path)
        scopes = select(value, parse_path(self.each)) if self.each else [((), value)]
        out = []
        for at, scope in scopes:
            hits = [p for p, v in select(scope, steps, at) if self._matches(v)]
            why = self.count.violation(len(hits))
            if why:
                out.append((json_path((*at, *steps)), _one_line(self._reason(hits, why))))
        return out

    def _reason(self, hits: list[tuple], why: str) -> str:
        shown = ", ".join(json_path(p) for p in hits[:SHOW_MATCHES])
        more = ", …" if len(hits) > SHOW_MATCHES else ""
        found = f"found {len(hits)}" + (f" ({shown}{more})" if hits else "")
        cond = ", ".join(f"{k} == {json.dumps(v, ensure_ascii=False)}" for k, v in self.where.items())
        head = (f"{self.name}: " if self.name else "") + (f"where {cond}: " if cond else "")
        return f"{head}{found}, {why}" + (f" ({self.message})" if self.message else "")

    def _matches(self, v: Any) -> bool:
        if not self.where:
            return True
        return isinstance(v, dict) and all(k in v and _same_json(v[k], want) for k, want in self.where.items())


def parse_rules(items: Any, where: str = "rules") -> list[Rule]:
    """Rules from a recipe's list of mappings; one-line InhouseError naming the bad rule."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise InhouseError(f"{where}: expected a list of rules, got {type(items).__name__}")
    rules = []
    for i, item in enumerate(items, 1):
        try:
            rules.append(Rule.model_validate(item))
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "rule"
            msg = _one_line(err["msg"].removeprefix("Value error, "))
            raise InhouseError(f"{where}[{i}]: {loc}: {msg}") from None
    return rules


# --- Checking conversations ------------------------------------------------


@dataclass(frozen=True)
class StructuredFailure:
    """One reason one assistant message breaks the structured-output contract."""

    example: int  # index into the checked sequence
    source: str
    line: int
    message_index: int  # index into conv.messages
    kind: FailureKind
    path: str  # JSON path in the message's value, "$" for the whole
    reason: str

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.source else f"line {self.line}"

    def __str__(self) -> str:
        return f"{self.where}: message {self.message_index}: {self.kind} at {self.path}: {self.reason}"

    def as_problem(self) -> Problem:
        """The same failure in the data checker's vocabulary."""
        at = f"messages[{self.message_index}]"
        return Problem(self.kind, self.source, self.line, f"{self.path}: {self.reason}", at)


def json_message_indexes(conv: Conversation, policy: JsonMessages = "all") -> list[int]:
    """Which messages of a conversation must be JSON under the policy."""
    idx = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
    if policy == "last":
        return idx[-1:]
    if policy == "fenced":
        return [i for i in idx if _looks_like_json(conv.messages[i].content)]
    if policy == "all":
        return idx
    raise InhouseError(f"json_messages must be 'all', 'last' or 'fenced', not {policy!r}")


def check_structured(
    convs: Sequence[Conversation],
    schema_validator: Any | None,
    rules: Sequence[Rule] = (),
    json_messages: JsonMessages = "all",
) -> list[StructuredFailure]:
    """Every failure, in file order; a message that is not JSON gets only that failure."""
    out: list[StructuredFailure] = []
    for ex, conv in enumerate(convs):
        for mi in json_message_indexes(conv, json_messages):
            for kind, path, reason in _check_message(conv.messages[mi].content, schema_validator, rules):
                out.append(StructuredFailure(ex, conv.source, conv.line, mi, kind, path, reason))
    return out


def _check_message(text: str, validator: Any | None, rules: Sequence[Rule]) -> list[tuple[str, str, str]]:
    got = _parse(text)
    if isinstance(got, str):
        return [("not_json", "$", got)]
    value = got[0]
    errs = [("schema", p, r) for p, r in _schema_errors(validator, value)] if validator is not None else []
    return errs + [("rule", p, r) for rule in rules for p, r in rule.check(value)]


def filter_structured(
    convs: Sequence[Conversation], failures: Sequence[StructuredFailure], keep_invalid: bool
) -> tuple[list[Conversation], list[Conversation]]:
    """(kept, dropped) by the --keep-invalid policy; failures must come from these convs."""
    if keep_invalid:
        return list(convs), []
    bad = {f.example for f in failures}
    kept = [c for i, c in enumerate(convs) if i not in bad]
    dropped = [c for i, c in enumerate(convs) if i in bad]
    return kept, dropped
