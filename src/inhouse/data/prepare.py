"""`inhouse data prepare`: a team's raw export -> a clean, private, well-split training set.

load -> normalise -> deduplicate -> PII -> structured outputs -> length -> split -> balance.
Every example removed or changed is recorded as an `Event` (step, file:line, reason),
the input file is only read, and the output folder appears all at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal


from inhouse import atomic, outputs
from inhouse.data import dedup, split
from inhouse.data.conflicts import find_conflicts
from inhouse.data import pii as pii_detect
from inhouse.data import schema as structured
from inhouse.data.conversation import Conversation, Message, Problem
from inhouse.data.formats import load_dataset
from inhouse.data.prepare_config import PrepareConfig
from inhouse.data.normalize import normalize_conversation
from inhouse.data.keys import UNSUPPORTED
from inhouse.data.preference_formats import is_preference_file
from inhouse.errors import InhouseError, InvalidInputError
from inhouse.events import Events, Stopped
from inhouse.paths import shown


@dataclass
class Event:
    """One example removed or changed by one step."""

    step: str
    action: Literal["removed", "changed", "kept_invalid", "flagged", "allowed"]
    where: str
    reason: str


@dataclass
class Prepared:
    train: list[Conversation]
    validation: list[Conversation]
    test: list[Conversation]
    events: list[Event] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    unit: str = "examples"  # or "pairs": the splits hold PreferencePairs, written as OpenAI's preference JSONL


def prepare(path: str | Path, config: PrepareConfig, events: Events | None = None) -> Prepared:
    """Run every step in memory; nothing is written. Each step is a `stage` event; a stop request
    between steps raises Stopped. A file of preference pairs goes through the same steps, done to pairs
    (`prepare_pairs`)."""
    if config.columns() is None and is_preference_file(path):
        from inhouse.data.prepare_pairs import prepare_pairs  # it builds on this module

        return prepare_pairs(path, config, events)
    events = events or Events()
    events.say(f"prepare: loading {path}")
    loaded = load_dataset(path, config.columns())
    return run_steps(path, (loaded.conversations, loaded.problems, loaded.total), STEPS, config, events)


Loaded = tuple[list[Any], list[Problem], int]  # usable items, problems, records read
Step = Callable[[list[Any], PrepareConfig, list[Event]], list[Any]]


def run_steps(path: str | Path, loaded: Loaded, steps: tuple[tuple[str, Step], ...], config: PrepareConfig,
              events: Events, unit: str = "examples") -> Prepared:
    """Refuse what cannot be represented, then each step in turn, then split and balance."""
    items, problems, total = loaded
    refuse_unsupported(problems)
    changes = [Event("load", "removed", f"{p.source}:{p.line}", f"{p.code}: {p.message}") for p in problems]
    counts: dict[str, Any] = {"loaded": total, "valid": len(items)} | ({"unit": unit} if unit != "examples" else {})
    for name, step in steps:
        if events.should_stop():
            raise Stopped(f"data preparation stopped on request before the {name} step; nothing was written")
        events.say(f"prepare: {name} ({len(items)} {unit})")
        items = step(items, config, changes)
        counts[f"after_{name}"] = len(items)
    if not items:
        removed = Counter(e.step for e in changes if e.action == "removed")
        raise InhouseError(f"{path}: no {unit[:-1]} survived preparation (removed by step: "
                           + ", ".join(f"{k} {v}" for k, v in removed.items()) + ")")
    return replace(_split_and_balance(items, config, changes, counts), unit=unit)


def refuse_unsupported(problems: list) -> None:
    """Data the loader cannot represent (preference pairs, media, unknown fields) stops preparation:
    writing splits without it would silently change what the file means."""
    first = next((p for p in problems if p.code in UNSUPPORTED), None)
    if first is not None:
        count = sum(p.code in UNSUPPORTED for p in problems)
        raise InvalidInputError(f"{first} ({count} example{'s' * (count != 1)} like this; nothing was written)")


def _normalize(convs, config, events):
    if not config.normalize:
        return convs
    out = []
    for conv in convs:
        new, reasons = normalize_conversation(conv)
        if reasons:
            events.append(Event("normalize", "changed", conv.where, ", ".join(reasons)))
        out.append(new)
    return out


def _dedup(convs, config, events):
    if not config.dedup:
        return convs
    return [convs[i] for i in dedup_kept(convs, config, events)]


def dedup_kept(convs: list[Conversation], config: PrepareConfig, events: list[Event], what: str = "") -> list[int]:
    """Indexes of the examples deduplication keeps; each removal is an event (`what` says what was compared)."""
    result = dedup.deduplicate(convs, threshold=config.near_duplicate_threshold)
    for kind, clusters in (("exact duplicate", result.exact), ("near duplicate", result.near)):
        for c in clusters:
            for r in c.removed:
                sim = "" if kind.startswith("exact") else f", Jaccard >= {c.similarity:.2f}"
                events.append(Event("dedup", "removed", convs[r].where,
                                    f"{kind}{what} of {convs[c.kept].where}{sim}"))
    return result.kept


def _conflicts(convs, config, events):
    found = []
    for c in find_conflicts(convs, config.near_duplicate_threshold):
        what = "the same prompt" if c.similarity == 1.0 else f"a near-identical prompt (Jaccard >= {c.similarity:.2f})"
        found.append((c.first, c.other, f"{what} as {convs[c.first].where} with a different answer"))
    return act_on_conflicts(convs, found, config, events, "its prompt is answered differently elsewhere")


def act_on_conflicts(items: list, found: list[tuple[int, int, str]], config: PrepareConfig, events: list[Event],
                     first_reason: str) -> list:
    """Report every conflict (first, other, reason) with both lines; with `first` or `drop`, remove what
    the option says (the first one's removal is said with `first_reason`)."""
    gone: set[int] = set()
    for first, other, reason in found:
        if config.conflicts == "keep":
            events.append(Event("conflicts", "flagged", items[other].where, reason))
            continue
        gone |= {other} | ({first} if config.conflicts == "drop" else set())
        events.append(Event("conflicts", "removed", items[other].where, reason))
    for i in sorted(i for i in gone if i not in {other for _, other, _ in found}):
        events.append(Event("conflicts", "removed", items[i].where, first_reason))
    return [item for i, item in enumerate(items) if i not in gone]


def _pii(convs, config, events):
    """Redact or drop; a value the allowlist lets stay is recorded as `allowed`, with the value itself
    (it is public by definition) and the entry that allowed it, so an over-broad entry shows."""
    if config.pii == "off":
        return convs
    allow = pii_detect.parse_allow(config.pii_allow)
    redacted = (pii_one(conv, config, allow, events, lambda i: f"messages[{i}]") for conv in convs)
    return [conv for conv in redacted if conv is not None]


def pii_one(conv: Conversation, config: PrepareConfig, allow: pii_detect.Allowlist, events: list[Event],
            name: Callable[[int], str]) -> Conversation | None:
    """One example redacted, or None when `drop` removes it; `name` says where message i is."""
    redacted, found = pii_detect.redact_conversation(conv, set(config.pii_kinds), allow)
    acted = [(i, f) for i, f in found if not f.allowed]
    events.extend(Event("pii", "allowed", conv.where, allowed_reason(f)) for _, f in found if f.allowed)
    if acted:
        what = ", ".join(f"{f.kind} {f.masked} in {name(i)}" for i, f in acted)
        events.append(Event("pii", "removed" if config.pii == "drop" else "changed", conv.where, what))
    return redacted if not acted or config.pii == "redact" else None


def allowed_reason(finding: pii_detect.Finding) -> str:
    """One line per allowed value, the same for every occurrence, so occurrences can be counted."""
    return f"{finding.kind} {' '.join(finding.text.split())} (allowed by {finding.allowed_by})"


def _structured(convs, config, events):
    if not config.schema_file and not config.rules:
        return convs
    return [convs[i] for i in structured_kept(convs, config, events, lambda i: f"messages[{i}]")]


def structured_kept(convs: list[Conversation], config: PrepareConfig, events: list[Event],
                    name: Callable[[int], str]) -> list[int]:
    """Indexes of the examples the schema and rules keep (all, with keep_invalid); every failure an event."""
    validator = structured.load_schema(config.schema_file) if config.schema_file else None
    failures = structured.check_structured(convs, validator, structured.parse_rules(config.rules), config.json_messages)
    action = "kept_invalid" if config.keep_invalid else "removed"
    for f in failures:
        events.append(Event("schema", action, f.where, f"{name(f.message_index)} {f.kind} at {f.path}: {f.reason}"))
    bad = set() if config.keep_invalid else {f.example for f in failures}
    return [i for i in range(len(convs)) if i not in bad]


def length_counter(config: PrepareConfig) -> Callable[[Conversation], int]:
    """Tokens of an example rendered with --model's tokenizer and chat template, as training counts them."""
    from inhouse.model.load import load_tokenizer
    from inhouse.model.template import apply_template_choice, token_counter

    tokenizer = load_tokenizer(config.model)
    apply_template_choice(tokenizer, None)
    return token_counter(tokenizer)


def _length(convs, config, events):
    if config.max_seq_length is None:
        return convs
    count = length_counter(config)
    out = []
    for conv in convs:
        n = count(conv)
        if n <= config.max_seq_length:
            fitted = conv
        else:
            fitted = _fit(conv, count, config) if config.too_long == "truncate" else None
        if fitted is None:
            events.append(Event("length", "removed", conv.where, f"{n} tokens > max_seq_length {config.max_seq_length}"))
        elif fitted is not conv:
            events.append(Event("length", "changed", conv.where, f"{n} tokens: kept the first "
                                f"{len(fitted.messages)} of {len(conv.messages)} messages"))
        if fitted is not None:
            out.append(fitted)
    return out


def _fit(conv: Conversation, count, config: PrepareConfig) -> Conversation | None:
    """Drop trailing turns (never cut inside a message) until it fits and ends on an assistant turn."""
    messages = list(conv.messages)
    while messages:
        messages.pop()
        while messages and messages[-1].role != "assistant":
            messages.pop()
        candidate = replace(conv, messages=tuple(messages))
        if messages and any(m.weight for m in messages if m.role == "assistant") \
                and count(candidate) <= config.max_seq_length:
            return candidate
    return None


STEPS = (("normalize", _normalize), ("dedup", _dedup), ("conflicts", _conflicts), ("pii", _pii),
         ("structured", _structured), ("length", _length))


def _split_and_balance(convs, config: PrepareConfig, events, counts) -> Prepared:
    parts = split.split_dataset(convs, config.validation, config.test, config.seed, config.stratify)
    train = parts.train
    counts["split"] = {"train": len(parts.train), "validation": len(parts.validation), "test": len(parts.test)}
    if config.stratify:
        counts["strata"] = parts.strata
    if config.cap_per_category or config.upsample_to:
        by = config.stratify or "category"
        split.require_field(train, by, "--stratify" if config.stratify else "--cap-per-category/--upsample-to (by category)")
        train, before, after = split.balance(train, by, config.cap_per_category, config.upsample_to, config.seed)
        counts["balance"] = {"by": by, "before": before, "after": after}
    counts |= example_counts(events)
    return Prepared(train, parts.validation, parts.test, events, counts)


def example_counts(events: list[Event]) -> dict[str, Any]:
    """How many *examples* each step removed or changed (an example with three schema errors is one
    example removed, not three): the numbers the summary, report.md and report.json all show."""
    removed = {e.where for e in events if e.action == "removed"}
    changed = {e.where for e in events if e.action in ("changed", "kept_invalid")} - removed
    by_step: dict[str, dict[str, int]] = {}
    for step in dict.fromkeys(e.step for e in events):
        mine = [e for e in events if e.step == step]
        gone = {e.where for e in mine if e.action == "removed"}
        by_step[step] = {"removed": len(gone), "changed": len({e.where for e in mine if e.action in ("changed",
                                                                                                "kept_invalid")} - gone),
                         "flagged": len({e.where for e in mine if e.action == "flagged"})}
    allowed = Counter(e.reason for e in events if e.action == "allowed")
    return {"examples_removed": len(removed), "examples_changed": len(changed), "by_step": by_step,
            "pii_allowed": dict(allowed.most_common())}


# --- writing ---------------------------------------------------------------------------------


def to_record(conv: Conversation) -> dict[str, Any]:
    """Chat JSONL (OpenAI fine-tuning format): weights, tool calls (arguments as JSON text), tool results,
    tool definitions and category preserved."""
    tools = {"tools": list(conv.tools)} if conv.tools else {}
    return {"messages": message_records(conv.messages)} | tools | dict(conv.meta)


def message_records(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Messages as OpenAI's files write them: weight 0 kept, tool-call arguments as the JSON text read."""
    out = []
    for m in messages:
        record = m.as_dict() | ({"weight": 0} if m.role == "assistant" and not m.weight else {})
        for call, raw in zip(record.get("tool_calls", []), m.tool_calls):
            call["function"]["arguments"] = raw.arguments
        out.append(record)
    return out


OUTPUT_KIND = "prepared data"


def claim_output(out: str | Path, source: str | Path, config: PrepareConfig, overwrite: bool = False,
                 recipe_file: str | Path | None = None) -> outputs.Output:
    """Check `out` before any work: never an input's place, never a folder inhouse did not write."""
    return outputs.claim(out, OUTPUT_KIND, [source, config.schema_file, recipe_file], overwrite)


def write_prepared(prepared: Prepared, source: str | Path, config: PrepareConfig, out: str | Path | outputs.Output,
                   overwrite: bool = False) -> Path:
    """Splits and reports, appearing at `out` all at once."""
    from inhouse.data.prepare_report import render_markdown

    target = out if isinstance(out, outputs.Output) else claim_output(out, source, config, overwrite)
    if prepared.unit == "pairs":
        from inhouse.data.prepare_pairs import to_pair_record as as_record
    else:
        as_record = to_record

    def write(folder: Path) -> None:
        for name in ("train", "validation", "test"):
            rows = getattr(prepared, name)
            if rows or name == "train":
                (folder / f"{name}.jsonl").write_text(
                    "".join(atomic.dumps(as_record(c)) + "\n" for c in rows), encoding="utf-8")
        report = {"source": shown(source), "config": config.model_dump(mode="json"), "counts": prepared.counts,
                  "events": [asdict(e) for e in prepared.events]}
        (folder / "report.json").write_text(atomic.dumps(report, indent=2), encoding="utf-8")
        (folder / "report.md").write_text(render_markdown(report), encoding="utf-8")

    return target.write(write)
