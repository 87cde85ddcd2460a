"""The report behind `inhouse data check FILE`: is this file ready to train on?

It answers before any GPU time is spent: what format, how many examples are
usable, what is wrong and where, and how long examples are in tokens.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from inhouse.data.conversation import ROLES, Conversation, Problem
from inhouse.data.formats import ColumnMap, each_record, summarise
from inhouse.paths import shown

if TYPE_CHECKING:
    from inhouse.data.preference_check import PairReport

# How many over-long examples to name before just counting them.
SHOW_TOO_LONG = 5


@dataclass(frozen=True)
class TokenStats:
    """Tokens per valid example; percentiles are nearest-rank, so always real values."""

    min: int
    median: int
    p95: int
    max: int
    total: int


@dataclass
class DatasetReport:
    path: str
    format: str
    total: int
    valid: int
    problems: list[Problem]
    tokens: TokenStats | None
    max_seq_length: int
    # (where, n_tokens) of examples longer than max_seq_length, in file order.
    too_long: list[tuple[str, int]] = field(default_factory=list)
    # Messages per role over valid examples, e.g. {"system": 10, "user": 12, ...}.
    role_counts: dict[str, int] = field(default_factory=dict)
    # Assistant turns trained on (weight 1) and kept only as context (weight 0).
    trained_turns: int = 0
    weight0_turns: int = 0
    # Valid examples with more than one assistant turn.
    multi_turn: int = 0
    tool_calls: int = 0
    # Valid examples without any user turn (allowed, but rarely meant): where each is.
    no_user: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.valid > 0


def nearest_rank(sorted_values: Sequence[int], pct: float) -> int:
    """The value at rank ceil(pct/100 * n): a real data point, no interpolation."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def token_stats(lengths: Sequence[int]) -> TokenStats | None:
    if not lengths:
        return None
    s = sorted(lengths)
    return TokenStats(s[0], nearest_rank(s, 50), nearest_rank(s, 95), s[-1], sum(s))


def check_file(
    path: str | Path,
    count_tokens: Callable[[Conversation], int] | None,
    max_seq_length: int,
    columns: ColumnMap | None = None,
) -> DatasetReport | PairReport:
    """`data check`: conversations, or preference pairs when the file holds them (same flags, same exit).
    The pair checker builds on this module, so it is imported here rather than at the top."""
    from inhouse.data.preference_check import check_pairs
    from inhouse.data.preference_formats import is_preference_file

    if columns is None and is_preference_file(path):
        return check_pairs(path, count_tokens, max_seq_length)
    return check_dataset(path, count_tokens, max_seq_length, columns)


def check_dataset(
    path: str | Path,
    count_tokens: Callable[[Conversation], int] | None,
    max_seq_length: int,
    columns: ColumnMap | None = None,
) -> DatasetReport:
    """Load and measure a file; raises InhouseError only for file-level faults. Without `count_tokens`
    nothing deep-learning is imported: a quick structural check.

    Streamed: each example is measured and let go, so a million examples cost a few
    numbers each, not a million Conversations (which also kept the garbage collector busy)."""
    fmt, outcomes = each_record(path, columns)
    report = DatasetReport(path=shown(path), format=fmt, total=0, valid=0, problems=[], tokens=None,
                           max_seq_length=max_seq_length)
    roles: Counter[str] = Counter()
    lengths: list[int] = []

    def take(item: Conversation) -> None:
        _count_turns(report, roles, item)
        if count_tokens:
            lengths.append(n := count_tokens(item))
            if n > max_seq_length:
                report.too_long.append((item.where, n))

    tally(outcomes, report, take)
    report.tokens = token_stats(lengths)
    report.role_counts = {role: roles[role] for role in ROLES if roles[role] or role != "tool"}
    return report


def _count_turns(report: DatasetReport, roles: Counter[str], conv: Conversation) -> None:
    roles.update(m.role for m in conv.messages)
    assistant = [m for m in conv.messages if m.role == "assistant"]
    report.trained_turns += sum(m.weight == 1 for m in assistant)
    report.weight0_turns += sum(m.weight == 0 for m in assistant)
    report.multi_turn += len(assistant) > 1
    report.tool_calls += sum(len(m.tool_calls) for m in assistant)
    if not any(m.role == "user" for m in conv.messages):
        report.no_user.append(conv.where)


def format_report(report: DatasetReport | PairReport) -> str:
    """Plain text for a terminal or a CI log (no colour codes)."""
    if not isinstance(report, DatasetReport):
        from inhouse.data.preference_check import format_pair_report

        return format_pair_report(report)
    lines = [_headline(report), _messages_line(report)]
    if report.no_user:
        more = f" (and {len(report.no_user) - 3} more)" if len(report.no_user) > 3 else ""
        lines.append(f"Warning: {plural(len(report.no_user), 'example')} without a user turn: "
                     f"{', '.join(report.no_user[:3])}{more}")
    lines += _token_lines(report)
    lines += problem_lines(report.problems)
    lines.append(_verdict(report))
    return "\n".join(lines)


def _headline(r: DatasetReport) -> str:
    bad = r.total - r.valid
    return f"{r.path}: {r.format} format, {plural(r.total, 'example')}, {r.valid} valid, {bad} with problems"


def _messages_line(r: DatasetReport) -> str:
    per_role = ", ".join(f"{n} {role}" for role, n in r.role_counts.items())
    calls = f"; tool calls: {r.tool_calls}" if r.tool_calls else ""
    return (
        f"Messages: {per_role}; assistant turns trained: {r.trained_turns}, "
        f"weight 0: {r.weight0_turns}; multi-turn examples: {r.multi_turn}{calls}"
    )


def _token_lines(r: DatasetReport) -> list[str]:
    t = r.tokens
    if t is None:
        return ["Tokens: not counted (give --model to measure lengths with its tokenizer and chat template)"] if r.valid else []
    lines = [f"Tokens per example: min {t.min}, median {t.median}, p95 {t.p95}, max {t.max} (total {t.total})"]
    if r.too_long:
        lines.append(f"Longer than max_seq_length {r.max_seq_length}: {plural(len(r.too_long), 'example')}")
        lines += [f"  {where}: {n} tokens" for where, n in r.too_long[:SHOW_TOO_LONG]]
        if len(r.too_long) > SHOW_TOO_LONG:
            lines.append(f"  ... and {len(r.too_long) - SHOW_TOO_LONG} more")
    return lines


def tally(outcomes, report, take: Callable) -> None:
    """Count a streamed file's outcomes into `report` (total, valid, problems kept); each usable item goes
    to `take` and is let go, so a file of a million examples costs a few numbers each."""
    for _, item in outcomes:
        report.total += 1
        if isinstance(item, Problem):
            report.problems.append(item)
            continue
        report.valid += 1
        take(item)


def problem_lines(problems: list[Problem]) -> list[str]:
    """The report's problems block: counts by code, then each problem (codes seen often summarised)."""
    if not problems:
        return []
    return [f"Problems ({problem_counts(problems)}):", *(f"  {line}" for line in summarise(problems))]


def problem_counts(problems: list[Problem]) -> str:
    counts = Counter(p.code for p in problems)
    return ", ".join(f"{code} {n}" for code, n in counts.items())


def _verdict(r: DatasetReport) -> str:
    if r.ok:
        return "OK: ready to train"
    if r.problems:
        return f"NOT READY: fix {plural(len(r.problems), 'problem')} above (training refuses a file with problems)"
    return "NOT READY: no usable examples"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
