"""Several training files mixed into one training set: seeded caps, hold-outs and weights.

Per file, in this order: read -> cap at max_examples (a seeded sample) -> hold out validation_fraction
(unless a validation_file is given) -> weight (round(weight x n) examples per epoch). Holding out before
weighting keeps a validation example from also being trained on as a repeated copy.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inhouse.data.conversation import Conversation
from inhouse.data.formats import load_conversations
from inhouse.recipe import Recipe, TrainFile
from inhouse.train.dataset import split


@dataclass
class Drawn:
    """What one file gave: its counts go into the lineage beside its sha256."""

    source: TrainFile
    read: int  # examples in the file
    train: int  # training examples per epoch, repeats included
    validation: int  # held out from it


@dataclass
class Mix:
    train: list[Conversation]  # or preference pairs: whatever the reader gives
    validation: list[Conversation]
    drawn: list[Drawn]


Reader = Callable[[Path], list[Any]]


def sample(convs: list[Conversation], n: int, rng: random.Random) -> list[Conversation]:
    """n examples without repeats, in file order (so a cap reads like a subset of the file)."""
    if n >= len(convs):
        return list(convs)
    return [convs[i] for i in sorted(rng.sample(range(len(convs)), n))]


def weigh(convs: list[Conversation], weight: float, rng: random.Random) -> list[Conversation]:
    """round(weight x n) examples: each one floor(weight) times, then a seeded sample for the fraction."""
    whole = int(weight)
    extra = round(weight * len(convs)) - whole * len(convs)
    return convs * whole + sample(convs, extra, rng)


def draw(source: TrainFile, index: int, recipe: Recipe, hold_out: bool,
         read: Reader = load_conversations) -> tuple[list, list, Drawn]:
    """One file's training and validation examples. Each file has its own seeded generator, so adding a
    file to a mix does not change what the others give."""
    rng = random.Random(f"{recipe.seed}/{index}")
    convs = read(Path(source.path))
    used = sample(convs, source.max_examples, rng) if source.max_examples else convs
    train, val = split(used, recipe.validation_fraction, recipe.seed) if hold_out else (used, [])
    train = weigh(train, source.weight, rng)
    return train, val, Drawn(source, len(convs), len(train), len(val))


def load_mix(recipe: Recipe, read: Reader = load_conversations) -> Mix:
    """The recipe's training files mixed, and validation data (its file, or each file's hold-out); `read`
    turns one file into examples (conversations; preference pairs for DPO)."""
    hold_out = recipe.validation_file is None
    mix = Mix([], [], [])
    for index, source in enumerate(recipe.sources()):
        train, val, drawn = draw(source, index, recipe, hold_out, read)
        mix.train += train
        mix.validation += val
        mix.drawn.append(drawn)
    if not hold_out:
        mix.validation = read(Path(recipe.validation_file))
    return mix
