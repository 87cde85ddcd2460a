"""`inhouse data prepare` for preference pairs: the steps conversations go through, done to pairs.

normalise every message -> deduplicate on prompt + chosen answer -> contradictions -> PII in every
message of both sides -> structured outputs of the chosen answer -> both sides' length -> split ->
balance. The report has the same shape as for conversations (counted in pairs), and the splits are
written as OpenAI's preference JSONL, which `read_pairs` reads back.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from inhouse.data import pii as pii_detect
from inhouse.data.conversation import Conversation
from inhouse.data.dedup import canonical_text
from inhouse.data.normalize import normalize_conversation
from inhouse.data.preference import PreferencePair
from inhouse.data.preference_formats import named_messages, read_pairs
from inhouse.data.prepare import (Event, Prepared, act_on_conflicts, dedup_kept, length_counter, message_records,
                                  pii_one, run_steps, structured_kept)
from inhouse.data.prepare_config import PrepareConfig
from inhouse.events import Events

PARTS = ("prompt", "chosen", "rejected")


def prepare_pairs(path: str | Path, config: PrepareConfig, events: Events | None = None) -> Prepared:
    """Run every step in memory; nothing is written (see `prepare.prepare`)."""
    events = events or Events()
    events.say(f"prepare: loading {path}")
    loaded = read_pairs(path)
    return run_steps(path, (loaded.pairs, loaded.problems, loaded.total), STEPS, config, events, "pairs")


def _joined(pair: PreferencePair) -> Conversation:
    """All of a pair's messages as one conversation, for steps that look at every message."""
    return Conversation(pair.prompt + pair.chosen + pair.rejected, pair.source, pair.line, dict(pair.meta), pair.tools)


def _parted(pair: PreferencePair, conv: Conversation) -> PreferencePair:
    """The pair again, its messages taken back from a joined conversation a step changed."""
    a, b = len(pair.prompt), len(pair.prompt) + len(pair.chosen)
    m = conv.messages
    return replace(pair, prompt=m[:a], chosen=m[a:b], rejected=m[b:], meta=dict(conv.meta))


def _part(pair: PreferencePair, i: int) -> str:
    """Where message i of the joined conversation (or of a side) is: prompt[i], chosen[j] or rejected[k]."""
    return named_messages(pair)[i][0]


def _normalize(pairs, config, events):
    return [_normalized(pair, events) for pair in pairs] if config.normalize else pairs


def _normalized(pair: PreferencePair, events: list[Event]) -> PreferencePair:
    conv, reasons = normalize_conversation(_joined(pair))
    if reasons:
        events.append(Event("normalize", "changed", pair.where, ", ".join(reasons)))
    return _parted(pair, conv)


def _dedup(pairs, config, events):
    """Two pairs are copies when their prompt and chosen answer are (the rejected answer is not compared)."""
    if not config.dedup:
        return pairs
    kept = dedup_kept([pair.side("chosen") for pair in pairs], config, events, " (prompt and chosen answer)")
    return [pairs[i] for i in kept]


def _conflicts(pairs, config, events):
    """A pair that prefers what another pair with the same prompt rejects teaches the opposite lesson."""
    seen: dict[tuple[str, str, str], int] = {}
    found = []
    for i, pair in enumerate(pairs):
        prompt, chosen, rejected = (canonical_text(Conversation(getattr(pair, part))) for part in PARTS)
        if (first := seen.get((prompt, rejected, chosen))) is not None:
            found.append((first, i, f"prefers the answer {pairs[first].where} rejects, for the same prompt"))
        seen.setdefault((prompt, chosen, rejected), i)
    return act_on_conflicts(pairs, found, config, events, "another pair prefers the answer it rejects")


def _pii(pairs, config, events):
    if config.pii == "off":
        return pairs
    allow = pii_detect.parse_allow(config.pii_allow)
    out = []
    for pair in pairs:
        if (conv := pii_one(_joined(pair), config, allow, events, partial(_part, pair))) is not None:
            out.append(_parted(pair, conv))
    return out


def _structured(pairs, config, events):
    """Only the chosen answer must keep the contract: a rejected answer is often the broken one."""
    if not config.schema_file and not config.rules:
        return pairs
    sides = [pair.side("chosen") for pair in pairs]
    return [pairs[i] for i in structured_kept(sides, config, events, lambda i: f"chosen side messages[{i}]")]


def _length(pairs, config, events):
    """Each side (prompt + answer) must fit; a pair is never truncated (its answers are what it teaches)."""
    if config.max_seq_length is None:
        return pairs
    count, out = length_counter(config), []
    for pair in pairs:
        n = max(count(pair.side("chosen")), count(pair.side("rejected")))
        if n <= config.max_seq_length:
            out.append(pair)
        else:
            events.append(Event("length", "removed", pair.where, f"{n} tokens > max_seq_length "
                                f"{config.max_seq_length} (the longer side; pairs are not truncated)"))
    return out


STEPS = (("normalize", _normalize), ("dedup", _dedup), ("conflicts", _conflicts), ("pii", _pii),
         ("structured", _structured), ("length", _length))


def to_pair_record(pair: PreferencePair) -> dict[str, Any]:
    """OpenAI's preference JSONL: the prompt (and tools) under `input`, the answers as message lists,
    metadata (category, ids, scores) beside them."""
    tools = {"tools": list(pair.tools)} if pair.tools else {}
    return {"input": {"messages": message_records(pair.prompt)} | tools,
            "preferred_output": message_records(pair.chosen),
            "non_preferred_output": message_records(pair.rejected)} | dict(pair.meta)
