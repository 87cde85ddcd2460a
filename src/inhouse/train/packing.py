"""Padding-free packing: a micro-batch's examples concatenated into one row.

The examples in a step are exactly those the padded path would see, so the
optimiser sees the same data; only padding disappears. Positions restart at
each example and `cu_seq_lens_*` mark the boundaries for varlen attention
(transformers builds a block-diagonal mask from the positions for sdpa/flex).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inhouse.model.template import IGNORE


@dataclass
class PackedCollator:
    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor | int]:
        ids, labels, positions, starts = [], [], [], [0]
        for example in batch:
            n = len(example["input_ids"])
            ids += example["input_ids"]
            # The first token of an example is never a target: without this the
            # previous example's last token would learn to predict it.
            labels += [IGNORE] + list(example["labels"][1:])
            positions += range(n)
            starts.append(starts[-1] + n)
        cu = torch.tensor(starts, dtype=torch.int32)
        longest = int((cu[1:] - cu[:-1]).max())
        return {
            "input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions]),
            "cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest,
        }
