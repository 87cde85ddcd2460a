"""Split a dataset into train/validation/test, and balance its categories.

Splitting is deterministic for a seed, exact and, when asked, stratified:

* Totals: (train, validation, test) counts are the fractions of n rounded by
  largest remainder, so they always sum to n (and train keeps at least one
  example when n > 0).
* Strata: ``conv.meta[stratify]``; a missing, null or empty value is the
  ``"<none>"`` stratum, non-string values are keyed by their JSON text. Each
  split's total is shared across strata in proportion to their size, again by
  largest remainder, so the totals stay exact and every stratum keeps its share.
* Small strata: evaluation examples are taken first from strata of 3 or more
  while each keeps one training example, then from tiny strata (1-2
  examples), and only when the totals still are not met does a stratum give
  up its last training example. So rare categories are trained on first.
* Which examples: each stratum is shuffled by a generator seeded with
  (seed, stratum), so adding a category does not reshuffle the others. Every
  example lands in exactly one split; each split keeps the input order.

Balancing is for the *training split only* (the caller applies it after
splitting): evaluating on capped or repeated data would misreport quality.
``cap`` keeps a seeded random sample of N per category (not the first N: files
are often sorted by date or source); ``upsample_to`` repeats every example of
a small category evenly (whole copies, then a seeded sample for the rest).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from inhouse.data.conversation import Conversation
from inhouse.errors import InhouseError

NONE = "<none>"  # stratum of examples without the field
ALL = "<all>"  # the single stratum when not stratifying
TINY = 2  # strata this small give evaluation examples last
# Upsampling may grow the training split to this many times its size (or to
# BALANCED_FLOOR examples, for small data): a mistyped --upsample-to of a
# billion is refused before a list of a billion copies is built.
MAX_GROWTH = 10
BALANCED_FLOOR = 100_000


def category(conv: Conversation, by: str) -> str:
    """The category key of an example; "<none>" when the field is missing, null or empty."""
    v = (conv.meta or {}).get(by)
    if v is None or v == "":
        return NONE
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)


def require_field(convs: Sequence[Conversation], by: str, flag: str) -> None:
    """Stratifying by a field no example has would silently split at random: say which fields exist."""
    if not convs or any(category(c, by) != NONE for c in convs):
        return
    present = sorted({key for c in convs for key in (c.meta or {})})
    exists = ", ".join(present) if present else "none (give CSV/Parquet files a --category-column)"
    raise InhouseError(f"{flag} {by}: no example has a field {by!r}; fields the examples carry: {exists}")


def _group(convs: Sequence[Conversation], by: str | None) -> dict[str, list[int]]:
    """Indexes per category, categories sorted so the result never depends on file order."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(convs):
        groups.setdefault(category(c, by) if by else ALL, []).append(i)
    return dict(sorted(groups.items()))


@dataclass
class Splits:
    train: list[Conversation]
    validation: list[Conversation]
    test: list[Conversation]
    # Per stratum: {"train": n, "validation": n, "test": n}; "<all>" when not stratified.
    strata: dict[str, dict[str, int]] = field(default_factory=dict)


def split_totals(n: int, validation: float, test: float) -> tuple[int, int, int]:
    """(train, validation, test) counts for n examples, summing to n exactly."""
    v, t = Fraction(repr(validation)), Fraction(repr(test))  # 0.1 is 1/10, not 0.1000000000000000055
    quotas = [n * (1 - v - t), n * v, n * t]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(3), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    if n and counts[0] == 0:  # a split with nothing to train on is no split
        counts[2 if counts[2] >= counts[1] else 1] -= 1
        counts[0] = 1
    return counts[0], counts[1], counts[2]


def _takers(order: list[str], got: dict, room: dict, sizes: dict) -> list[str]:
    """Strata that can take a seat, tiny ones only once no other can."""
    open_ = [k for k in order if got[k] < room[k]]
    return [k for k in open_ if sizes[k] > TINY] or open_


def _share(total: int, sizes: dict[str, int], rooms: list[dict[str, int]]) -> dict[str, int]:
    """Largest remainder: `total` seats across strata by size, within each room in turn."""
    n = sum(sizes.values())
    quota = {k: Fraction(total * s, n or 1) for k, s in sizes.items()}
    got = {k: 0 if sizes[k] <= TINY else min(math.floor(q), rooms[0][k]) for k, q in quota.items()}
    order = sorted(sizes, key=lambda k: (-(quota[k] - math.floor(quota[k])), k))
    left = total - sum(got.values())
    for room in rooms:
        while left > 0 and (takers := _takers(order, got, room, sizes)):
            for k in takers[:left]:
                got[k] += 1
            left -= len(takers[:left])
    return got


def _allocate(sizes: dict[str, int], n_val: int, n_test: int) -> dict[str, tuple[int, int]]:
    """(validation, test) count per stratum; keeping one train example each comes first."""
    val = _share(n_val, sizes, [{k: s - 1 for k, s in sizes.items()}, sizes])
    rest = {k: s - val[k] for k, s in sizes.items()}
    test = _share(n_test, sizes, [{k: max(0, r - 1) for k, r in rest.items()}, rest])
    return {k: (val[k], test[k]) for k in sizes}


def split_dataset(
    convs: Sequence[Conversation], validation: float, test: float, seed: int, stratify: str | None = None
) -> Splits:
    """Train/validation/test, deterministic for a seed, stratified by meta[stratify] if given."""
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise InhouseError(
            f"validation ({validation}) and test ({test}) must be fractions in [0, 1) with a sum below 1"
        )
    if stratify:
        require_field(convs, stratify, "--stratify")
    groups = _group(convs, stratify)
    _, n_val, n_test = split_totals(len(convs), validation, test)
    alloc = _allocate({k: len(v) for k, v in groups.items()}, n_val, n_test)
    where: dict[int, str] = {}
    strata = {}
    for k, idx in groups.items():
        shuffled = idx[:]
        random.Random(f"{seed}/{k}").shuffle(shuffled)
        a, b = alloc[k]
        for j, i in enumerate(shuffled):
            where[i] = "validation" if j < a else "test" if j < a + b else "train"
        strata[k] = {"train": len(idx) - a - b, "validation": a, "test": b}
    out = {name: [c for i, c in enumerate(convs) if where[i] == name] for name in ("train", "validation", "test")}
    return Splits(out["train"], out["validation"], out["test"], strata)


def balance(
    convs: Sequence[Conversation],
    by: str,
    cap: int | None = None,
    upsample_to: int | None = None,
    seed: int = 0,
) -> tuple[list[Conversation], dict[str, int], dict[str, int]]:
    """(result, counts before, counts after) per category; call it on the training split only."""
    if cap is not None and cap < 1 or upsample_to is not None and upsample_to < 1:
        raise InhouseError(f"balance: cap ({cap}) and upsample_to ({upsample_to}) must be at least 1")
    if cap is not None and upsample_to is not None and upsample_to > cap:
        raise InhouseError(f"balance: upsample_to ({upsample_to}) is above cap ({cap})")
    groups = _group(convs, by)
    _check_growth(len(convs), groups, cap, upsample_to)
    keep: list[int] = []
    extra: list[int] = []
    after: dict[str, int] = {}
    for k, idx in groups.items():
        rng = random.Random(f"{seed}/{k}")
        if cap is not None and len(idx) > cap:
            idx = sorted(rng.sample(idx, cap))
        copies = _repeat(idx, upsample_to - len(idx), rng) if upsample_to and len(idx) < upsample_to else []
        keep += idx
        extra += copies
        after[k] = len(idx) + len(copies)
    random.Random(f"{seed}/copies").shuffle(extra)
    result = [convs[i] for i in sorted(keep)] + [convs[i] for i in extra]
    return result, {k: len(v) for k, v in groups.items()}, after


def _check_growth(n: int, groups: dict[str, list[int]], cap: int | None, upsample_to: int | None) -> None:
    """Count the balanced split before building it; refuse a size far beyond the data."""
    sizes = [min(len(idx), cap or len(idx)) for idx in groups.values()]
    total = sum(max(size, upsample_to or 0) for size in sizes)
    limit = max(MAX_GROWTH * n, BALANCED_FLOOR)
    if total > limit:
        raise InhouseError(
            f"balance: upsample_to {upsample_to} would make {total} training examples from {n} (at most {limit}: "
            f"{MAX_GROWTH} times the split, or {BALANCED_FLOOR}); the largest category has {max(sizes)}")


def _repeat(idx: list[int], need: int, rng: random.Random) -> list[int]:
    """`need` more copies of idx, spread evenly: every example repeats before any repeats twice."""
    whole, part = divmod(need, len(idx))
    return idx * whole + rng.sample(idx, part)


def format_counts(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """One report line per category: `billing: 600 -> 200`."""
    return [f"{k}: {before.get(k, 0)} -> {after.get(k, 0)}" for k in sorted(before.keys() | after.keys())]
