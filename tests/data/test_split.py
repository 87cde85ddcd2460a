"""split_dataset / balance: determinism, exact totals, stratified shares, caps and upsampling."""

from __future__ import annotations

from collections import Counter

import pytest

from inhouse.data.conversation import Conversation, Message
from inhouse.data.split import NONE, balance, category, format_counts, split_dataset, split_totals
from inhouse.errors import InhouseError


def make(n: int, cat: object = None, start: int = 0, field: str = "category") -> list[Conversation]:
    """n distinct examples (line numbers from start+1); `cat` None leaves the field out."""
    meta = {} if cat is None else {field: cat}
    return [
        Conversation((Message("user", f"q{i}"), Message("assistant", f"a{i}")), "d.jsonl", i + 1, dict(meta))
        for i in range(start, start + n)
    ]


def dataset_60_30_10(scale: int = 10) -> list[Conversation]:
    """Categories interleaved the way a real file might be, not in blocks."""
    convs = make(6 * scale, "billing") + make(3 * scale, "tech", 6 * scale) + make(scale, "legal", 9 * scale)
    return sorted(convs, key=lambda c: (c.line * 7919) % len(convs))


def lines(convs: list[Conversation]) -> list[int]:
    return [c.line for c in convs]


def cats(convs: list[Conversation]) -> Counter:
    return Counter(category(c, "category") for c in convs)


# --- split_dataset ---------------------------------------------------------------


@pytest.mark.parametrize("stratify", [None, "category"])
def test_same_seed_same_split_other_seed_other_split(stratify):
    data = dataset_60_30_10()
    a = split_dataset(data, 0.1, 0.1, seed=3, stratify=stratify)
    b = split_dataset(list(data), 0.1, 0.1, seed=3, stratify=stratify)
    c = split_dataset(data, 0.1, 0.1, seed=4, stratify=stratify)
    assert (lines(a.train), lines(a.validation), lines(a.test)) == (lines(b.train), lines(b.validation), lines(b.test))
    assert lines(a.validation) != lines(c.validation)


@pytest.mark.parametrize("stratify", [None, "category"])
def test_no_overlap_and_nothing_lost(stratify):
    data = dataset_60_30_10()
    s = split_dataset(data, 0.15, 0.2, seed=0, stratify=stratify)
    tr, va, te = set(lines(s.train)), set(lines(s.validation)), set(lines(s.test))
    assert not (tr & va or tr & te or va & te)
    assert tr | va | te == set(lines(data))


def test_splits_keep_input_order():
    data = dataset_60_30_10()
    s = split_dataset(data, 0.1, 0.1, seed=1, stratify="category")
    position = {c.line: i for i, c in enumerate(data)}
    for part in (s.train, s.validation, s.test):
        assert [position[x] for x in lines(part)] == sorted(position[x] for x in lines(part))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 99, 101])
@pytest.mark.parametrize("val, test", [(0.1, 0.1), (0.3, 0.3), (0.05, 0.0), (0.0, 0.0), (0.2, 0.7)])
def test_exact_totals(n, val, test):
    s = split_dataset(make(n), val, test, seed=0)
    want = split_totals(n, val, test)
    assert (len(s.train), len(s.validation), len(s.test)) == want
    assert sum(want) == n
    if n:
        assert len(s.train) >= 1


def test_split_totals_round_by_largest_remainder():
    assert split_totals(10, 0.1, 0.2) == (7, 1, 2)
    assert split_totals(10, 0.3, 0.3) == (4, 3, 3)
    assert split_totals(7, 0.1, 0.1) == (5, 1, 1)  # 5.6, 0.7, 0.7: the two largest remainders
    assert split_totals(3, 0.5, 0.0) == (2, 1, 0)  # 1.5, 1.5: a tie goes to train
    assert split_totals(2, 0.45, 0.45) == (1, 1, 0)  # train never ends up empty


def test_stratified_shares_are_preserved():
    data = dataset_60_30_10(scale=20)  # 120 / 60 / 20
    s = split_dataset(data, 0.1, 0.1, seed=5, stratify="category")
    assert cats(s.validation) == {"billing": 12, "tech": 6, "legal": 2}
    assert cats(s.test) == {"billing": 12, "tech": 6, "legal": 2}
    assert cats(s.train) == {"billing": 96, "tech": 48, "legal": 16}
    assert s.strata["legal"] == {"train": 16, "validation": 2, "test": 2}


def test_stratified_with_uneven_quotas_keeps_exact_totals():
    data = make(7, "a") + make(5, "b", 7) + make(4, "c", 12) + make(1, "d", 16)
    s = split_dataset(data, 0.2, 0.2, seed=0, stratify="category")
    assert (len(s.train), len(s.validation), len(s.test)) == split_totals(17, 0.2, 0.2)
    for k, n in {"a": 7, "b": 5, "c": 4}.items():
        got = s.strata[k]
        assert sum(got.values()) == n and got["train"] >= 1
        assert abs(got["validation"] - n * 0.2) < 1 and abs(got["test"] - n * 0.2) < 1


def test_missing_category_is_its_own_stratum():
    data = make(10, "a") + make(10, None, 10) + make(10, "", 20)
    s = split_dataset(data, 0.1, 0.1, seed=0, stratify="category")
    assert set(s.strata) == {"a", NONE}
    assert s.strata[NONE] == {"train": 16, "validation": 2, "test": 2}


def test_tiny_strata_stay_in_train():
    data = make(20, "big") + make(1, "rare") + make(2, "scarce", 21)
    s = split_dataset(data, 0.1, 0.1, seed=0, stratify="category")
    assert s.strata["rare"] == {"train": 1, "validation": 0, "test": 0}
    assert s.strata["scarce"] == {"train": 2, "validation": 0, "test": 0}
    assert len(s.validation) + len(s.test) == 4


def test_tiny_strata_give_examples_only_when_totals_need_them():
    data = make(2, "a") + make(2, "b", 2) + make(2, "c", 4)
    s = split_dataset(data, 0.2, 0.2, seed=0, stratify="category")
    assert (len(s.train), len(s.validation), len(s.test)) == split_totals(6, 0.2, 0.2)
    assert all(v["train"] >= 1 for v in s.strata.values())


def test_new_category_does_not_reshuffle_others():
    base = make(30, "a")
    one = split_dataset(base, 0.2, 0.0, seed=9, stratify="category")
    two = split_dataset(base + make(30, "b", 30), 0.2, 0.0, seed=9, stratify="category")
    assert lines(one.validation) == [x for x in lines(two.validation) if x <= 30]


def test_non_string_categories_and_unicode_keys():
    data = make(5, 1) + make(5, "1", 5) + make(5, "فوترة 💳", 10) + make(5, ["x"], 15)
    s = split_dataset(data, 0.2, 0.0, seed=0, stratify="category")
    assert set(s.strata) == {"1", "فوترة 💳", '["x"]'}  # the int 1 and the string "1" meet
    assert s.strata["1"]["validation"] == 2


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (-0.1, 0.1), (1.0, 0.0), (float("nan"), 0.1)])
def test_bad_fractions(val, test):
    with pytest.raises(InhouseError, match="fractions"):
        split_dataset(make(10), val, test, seed=0)


# --- balance -------------------------------------------------------------------


def test_cap_counts_before_and_after():
    train = dataset_60_30_10()
    out, before, after = balance(train, "category", cap=20, seed=0)
    assert before == {"billing": 60, "legal": 10, "tech": 30}
    assert after == {"billing": 20, "legal": 10, "tech": 20}
    assert cats(out) == after
    assert len(set(lines(out))) == len(out)  # capping never duplicates


def test_cap_is_a_seeded_sample_not_the_first_n():
    train = make(100, "a")
    out, _, _ = balance(train, "category", cap=10, seed=0)
    again, _, _ = balance(train, "category", cap=10, seed=0)
    other, _, _ = balance(train, "category", cap=10, seed=1)
    assert lines(out) == lines(again) != lines(other)
    assert lines(out) != list(range(1, 11))
    assert lines(out) == sorted(lines(out))


def test_upsample_counts_and_even_repetition():
    train = make(20, "big") + make(3, "small", 20) + make(2, None, 23)
    out, before, after = balance(train, "category", upsample_to=10, seed=0)
    assert before == {NONE: 2, "big": 20, "small": 3}
    assert after == {NONE: 10, "big": 20, "small": 10}
    assert cats(out) == after
    small = Counter(c.line for c in out if category(c, "category") == "small")
    assert sorted(small.values()) == [3, 3, 4]  # 10 over 3 examples: as even as it gets
    assert lines(out[:25]) == list(range(1, 26))  # originals first, in order; copies after


def test_cap_and_upsample_together():
    train = make(50, "a") + make(5, "b", 50)
    out, _, after = balance(train, "category", cap=20, upsample_to=12, seed=2)
    assert after == {"a": 20, "b": 12} == dict(cats(out))


@pytest.mark.parametrize("kw", [{"cap": 0}, {"upsample_to": 0}, {"cap": 5, "upsample_to": 6}])
def test_bad_balance_arguments(kw):
    with pytest.raises(InhouseError, match="balance"):
        balance(make(3, "a"), "category", **kw)


def test_balance_nothing_asked_is_identity():
    train = dataset_60_30_10()
    out, before, after = balance(train, "category")
    assert lines(out) == lines(train) and before == after


def test_format_counts():
    assert format_counts({"a": 60, "b": 3}, {"a": 20, "b": 10}) == ["a: 60 -> 20", "b: 3 -> 10"]
