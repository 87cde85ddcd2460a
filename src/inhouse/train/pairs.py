"""Preference pairs as DPO trains on them: each side encoded and masked exactly as SFT masks it.

A side is the pair's prompt followed by one answer, a `Conversation` encoded by the SFT encoder
(`inhouse.model.template.encode`), so DPO scores the same tokens supervised training would train:
the answer's assistant tokens and their end-of-turn token. Assistant turns inside the prompt are
context (weight 0): only the answer being compared counts. The batch is laid out the way TRL's
DPOTrainer reads it (its `DataCollatorForPreference` output): chosen rows, then rejected rows, with
`completion_mask` marking the scored tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from inhouse.data.conversation import Conversation
from inhouse.data.preference import PreferencePair, Side
from inhouse.model.template import IGNORE, Encoded, encode, preflight

SIDES: tuple[Side, Side] = ("chosen", "rejected")


def answer_side(pair: PreferencePair, which: Side) -> Conversation:
    """One side as SFT would see it, with the prompt's own assistant turns kept as untrained context."""
    conv = pair.side(which)
    n = len(pair.prompt)
    messages = tuple(replace(m, weight=0) if i < n and m.role == "assistant" else m
                     for i, m in enumerate(conv.messages))
    return replace(conv, messages=messages)


@dataclass(frozen=True)
class EncodedPair:
    chosen: Encoded
    rejected: Encoded

    @property
    def input_ids(self) -> list[int]:
        """Both sides' tokens (what a step processes; counted by `PairSet.tokens`)."""
        return self.chosen.input_ids + self.rejected.input_ids


@dataclass
class PairSet:
    """Encoded pairs, and the pairs dropped for length, as `EncodedSet` holds examples."""

    examples: list[EncodedPair]
    too_long: list[tuple[str, int]]  # (file:line, tokens of the longer side)

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)


def encode_pair(pair: PreferencePair, tokenizer, stop_ids: set[int]) -> EncodedPair:
    chosen, rejected = (encode(answer_side(pair, s), tokenizer, stop_ids) for s in SIDES)
    return EncodedPair(chosen, rejected)


def encode_pairs(pairs: list[PreferencePair], tokenizer, stop_ids: set[int], max_len: int) -> PairSet:
    """Encode every pair, dropping (and reporting) those with a side over max_len: truncating would cut
    the end-of-turn token, as in SFT. A side with nothing to score cannot be compared and is skipped."""
    kept, dropped = [], []
    for pair in pairs:
        enc = encode_pair(pair, tokenizer, stop_ids)
        longest = max(len(enc.chosen.input_ids), len(enc.rejected.input_ids))
        if longest > max_len:
            dropped.append((pair.where, longest))
        elif enc.chosen.n_trained and enc.rejected.n_trained:
            kept.append(enc)
    return PairSet(kept, dropped)


def preflight_pairs(pairs: list[PreferencePair], tokenizer, stop_ids: set[int]) -> None:
    """SFT's mask pre-flight on both sides of the pairs, before any compute is spent."""
    preflight([answer_side(p, s) for p in pairs for s in SIDES], tokenizer, stop_ids)


def as_rows(examples: list[EncodedPair]) -> list[dict[str, list[int]]]:
    """Encoded pairs as dataset rows (the columns `PairCollator` reads)."""
    return [{"chosen_input_ids": e.chosen.input_ids, "chosen_labels": e.chosen.labels,
             "rejected_input_ids": e.rejected.input_ids, "rejected_labels": e.rejected.labels}
            for e in examples]


def batches(examples: list[EncodedPair], pad_id: int, size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Collated batches of `size` pairs, in order (for scoring outside a trainer)."""
    collate = PairCollator(pad_id)
    for start in range(0, len(examples), size):
        yield collate(as_rows(examples[start:start + size]))


@dataclass
class PairCollator:
    """Right-pads a batch of pairs into chosen rows then rejected rows; `completion_mask` is SFT's label mask."""

    pad_id: int

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        sides = [(r[f"{s}_input_ids"], r[f"{s}_labels"]) for s in SIDES for r in rows]
        width = max(len(ids) for ids, _ in sides)
        input_ids = torch.full((len(sides), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(sides), width), dtype=torch.long)
        scored = torch.zeros((len(sides), width), dtype=torch.long)
        for row, (ids, labels) in enumerate(sides):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention[row, :len(ids)] = 1
            scored[row, :len(ids)] = torch.tensor(labels).ne(IGNORE).long()
        return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": scored}
