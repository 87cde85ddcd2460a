"""The report behind `inhouse data check FILE` for a file of preference pairs: ready for `method: dpo`?

The same questions as for conversations (how many pairs are usable, what is wrong where, how long
they are), asked of both sides: DPO renders the prompt with each answer, so each side must fit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inhouse.data.check import SHOW_TOO_LONG, TokenStats, plural, problem_lines, tally, token_stats
from inhouse.data.conversation import Conversation, Problem
from inhouse.data.dedup import canonical_text
from inhouse.data.preference import PreferencePair
from inhouse.data.preference_formats import each_pair
from inhouse.paths import shown


@dataclass
class PairReport:
    path: str
    format: str
    total: int = 0
    valid: int = 0
    problems: list[Problem] = field(default_factory=list)
    max_seq_length: int = 0
    # Tokens of prompt + answer, per side; None without a tokenizer.
    chosen_tokens: TokenStats | None = None
    rejected_tokens: TokenStats | None = None
    # (where, tokens of the longer side) of pairs with a side longer than max_seq_length, in file order.
    too_long: list[tuple[str, int]] = field(default_factory=list)
    prompts: int = 0  # distinct prompts: several pairs may share one
    system: int = 0  # pairs whose prompt has a system message
    multi_turn: int = 0  # pairs whose prompt holds earlier assistant turns
    long_answers: int = 0  # pairs with an answer of several messages (tool calls and results)
    tool_calls: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and self.valid > 0


def check_pairs(path: str | Path, count_tokens: Callable[[Conversation], int] | None,
                max_seq_length: int) -> PairReport:
    """Load and measure a preference file, streamed; raises InhouseError only for file-level faults."""
    fmt, outcomes = each_pair(path)
    report = PairReport(shown(path), fmt, max_seq_length=max_seq_length)
    prompts: set[bytes] = set()
    lengths: tuple[list[int], list[int]] = ([], [])

    def take(pair: PreferencePair) -> None:
        _count(report, prompts, pair)
        if count_tokens:
            _measure(report, lengths, pair, count_tokens)

    tally(outcomes, report, take)
    report.prompts = len(prompts)
    report.chosen_tokens, report.rejected_tokens = token_stats(lengths[0]), token_stats(lengths[1])
    return report


def _count(report: PairReport, prompts: set[bytes], pair: PreferencePair) -> None:
    text = canonical_text(Conversation(pair.prompt)).encode("utf-8", "surrogatepass")
    prompts.add(hashlib.blake2b(text, digest_size=16).digest())
    report.system += any(m.role == "system" for m in pair.prompt)
    report.multi_turn += any(m.role == "assistant" for m in pair.prompt)
    report.long_answers += len(pair.chosen) > 1 or len(pair.rejected) > 1
    report.tool_calls += sum(len(m.tool_calls) for m in pair.chosen + pair.rejected)


def _measure(report: PairReport, lengths: tuple[list[int], list[int]], pair: PreferencePair,
             count_tokens: Callable[[Conversation], int]) -> None:
    chosen, rejected = count_tokens(pair.side("chosen")), count_tokens(pair.side("rejected"))
    lengths[0].append(chosen)
    lengths[1].append(rejected)
    if max(chosen, rejected) > report.max_seq_length:
        report.too_long.append((pair.where, max(chosen, rejected)))


def format_pair_report(r: PairReport) -> str:
    """Plain text for a terminal or a CI log, laid out like the conversation report."""
    lines = [f"{r.path}: {r.format} format, {plural(r.total, 'pair')}, {r.valid} valid, "
             f"{r.total - r.valid} with problems",
             f"Prompts: {r.prompts} distinct; with a system message: {r.system}; multi-turn: {r.multi_turn}; "
             f"answers of several messages: {r.long_answers}; tool calls: {r.tool_calls}"]
    lines += _token_lines(r)
    lines += problem_lines(r.problems)
    lines.append(_verdict(r))
    return "\n".join(lines)


def _token_lines(r: PairReport) -> list[str]:
    if r.chosen_tokens is None or r.rejected_tokens is None:
        return ["Tokens: not counted (give --model to measure both sides with its tokenizer and chat template)"] \
            if r.valid else []
    lines = [f"Tokens per side (prompt + answer), {name}: min {t.min}, median {t.median}, p95 {t.p95}, "
             f"max {t.max} (total {t.total})" for name, t in (("chosen", r.chosen_tokens),
                                                              ("rejected", r.rejected_tokens))]
    if r.too_long:
        lines.append(f"Longer than max_seq_length {r.max_seq_length} (either side): {plural(len(r.too_long), 'pair')}")
        lines += [f"  {where}: {n} tokens" for where, n in r.too_long[:SHOW_TOO_LONG]]
        if len(r.too_long) > SHOW_TOO_LONG:
            lines.append(f"  ... and {len(r.too_long) - SHOW_TOO_LONG} more")
    return lines


def _verdict(r: PairReport) -> str:
    if r.ok:
        return "OK: ready to train with method: dpo"
    if r.problems:
        return f"NOT READY: fix {plural(len(r.problems), 'problem')} above (training refuses a file with problems)"
    return "NOT READY: no usable pairs"
