"""Turn conversations into padded, masked batches for causal-LM training."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from inhouse.data.conversation import Conversation
from inhouse.model.template import IGNORE, Encoded, encode


def split(convs: list[Conversation], fraction: float, seed: int) -> tuple[list[Conversation], list[Conversation]]:
    """Seeded hold-out split; at least one validation example when asked for one."""
    if fraction <= 0 or len(convs) < 2:
        return list(convs), []
    order = list(range(len(convs)))
    random.Random(seed).shuffle(order)
    n_val = min(len(convs) - 1, max(1, round(len(convs) * fraction)))
    held = set(order[:n_val])
    train = [c for i, c in enumerate(convs) if i not in held]
    val = [c for i, c in enumerate(convs) if i in held]
    return train, val


@dataclass
class EncodedSet:
    examples: list[Encoded]
    too_long: list[tuple[str, int]]  # (file:line, tokens) of dropped examples

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)


def encode_all(convs: list[Conversation], tokenizer, stop_ids: set[int], max_len: int) -> EncodedSet:
    """Encode every example, dropping (and reporting) those over max_len:
    truncating would cut the end-of-turn token and teach the model not to stop."""
    kept, dropped = [], []
    for conv in convs:
        enc = encode(conv, tokenizer, stop_ids)
        if len(enc.input_ids) > max_len:
            dropped.append((conv.where, len(enc.input_ids)))
        elif enc.n_trained:
            kept.append(enc)
    return EncodedSet(kept, dropped)


class TorchDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[Encoded]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        e = self.examples[i]
        return {"input_ids": e.input_ids, "labels": e.labels}


@dataclass
class PadCollator:
    """Right-pads to the longest example in the batch (dynamic padding)."""

    pad_id: int

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[row, :n] = torch.tensor(b["input_ids"])
            labels[row, :n] = torch.tensor(b["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
