"""Exact and near-duplicate detection: what is removed, what is kept, and why."""

from __future__ import annotations

import random

import numpy as np
import pytest

from inhouse.data import dedup
from inhouse.data.conversation import Conversation, Message
from inhouse.data.dedup import (
    CANDIDATE_RECALL,
    Cluster,
    band_layout,
    deduplicate,
    exact_duplicates,
    near_duplicates,
    signatures,
)
from inhouse.errors import InhouseError

WORDS = (
    "order refund invoice account password router delivery warehouse tracking label printer session token "
    "billing portal upgrade plan discount voucher receipt address courier parcel battery firmware screen "
    "cable charger warranty ticket email reset login sync backup storage device mobile browser cache"
).split()


def conv(user: str, assistant: str = "Thanks, I will check.") -> Conversation:
    return Conversation((Message("user", user), Message("assistant", assistant)))


def words(seed: int, n: int = 70) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(WORDS) + str(rng.randint(0, 9)) for _ in range(n)]


def ref_jaccard(a: Conversation, b: Conversation, k: int = 5) -> float:
    """Independent reference: character k-grams of the case-folded, space-collapsed text."""

    def grams(c: Conversation) -> set[str]:
        text = " ".join(" ".join(f"{m.role} {m.content}" for m in c.messages).casefold().split())
        return {text[i : i + k] for i in range(len(text) - k + 1)}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def edited(base: list[str], positions: range | list[int]) -> list[str]:
    out = list(base)
    for p in positions:
        out[p] = "CHANGED"
    return out


def pair_near(target: float, seed: int = 1) -> tuple[Conversation, Conversation, float]:
    """A base conversation and an edit of it whose Jaccard is about `target`."""
    base = words(seed)
    a = conv(" ".join(base))
    for n in range(1, 40):
        b = conv(" ".join(edited(base, range(0, 7 * n, 7))))
        if (j := ref_jaccard(a, b)) <= target:
            return a, b, j
    raise AssertionError("could not build the pair")


# --- exact -------------------------------------------------------------------------------


def test_exact_duplicates_after_normalisation_keep_the_first():
    a = conv("Where is my order #123?")
    variants = [
        conv("Where is my order #123?\r\n"),  # line ending
        conv("Where is my order #123?   "),  # trailing blanks
        conv("Where is my\u200b order #123?"),  # zero-width space
        conv("Where is my order #123?", "Thanks, I will check.\n\n"),
    ]
    other = conv("Where is my refund?")
    convs = [other, a, *variants, other]
    assert exact_duplicates(convs) == [Cluster(0, [6], 1.0), Cluster(1, [2, 3, 4, 5], 1.0)]


def test_exact_respects_nfc_roles_and_case():
    nfd, nfc = conv("Cafe\u0301 order"), conv("Café order")
    assert exact_duplicates([nfd, nfc]) == [Cluster(0, [1], 1.0)]
    swapped = Conversation((Message("assistant", "Hi"), Message("user", "Hi")))
    same = Conversation((Message("user", "Hi"), Message("assistant", "Hi")))
    assert exact_duplicates([swapped, same]) == []
    assert exact_duplicates([conv("Hello"), conv("HELLO")]) == []


def test_message_boundaries_matter():
    one = Conversation((Message("user", "a b"), Message("assistant", "c")))
    two = Conversation((Message("user", "a"), Message("assistant", "b c")))
    assert exact_duplicates([one, two]) == []


def test_empty_input():
    assert exact_duplicates([]) == [] and near_duplicates([]) == []
    assert deduplicate([]).kept == []


# --- near: thresholds ------------------------------------------------------------------------


def test_pair_near_0_9_removed_at_0_85_kept_at_0_95():
    a, b, j = pair_near(0.905)
    assert 0.87 < j < 0.93
    (cluster,) = near_duplicates([a, b], threshold=0.85)
    assert (cluster.kept, cluster.removed) == (0, [1])
    assert cluster.similarity == pytest.approx(j, abs=0.02)
    assert near_duplicates([a, b], threshold=0.95) == []


def test_threshold_edges_follow_the_measured_similarity():
    a, b, _ = pair_near(0.905)
    sim = near_duplicates([a, b], threshold=0.5)[0].similarity
    assert near_duplicates([a, b], threshold=sim)[0].removed == [1]
    assert near_duplicates([a, b], threshold=min(1.0, sim + 1e-9)) == []


def test_first_occurrence_is_kept_and_clusters_are_reported():
    a, a2, _ = pair_near(0.9, seed=1)
    b, b2, _ = pair_near(0.9, seed=2)
    c = conv(" ".join(words(3)))
    clusters = near_duplicates([a, b, c, b2, a2, a])
    assert [(x.kept, x.removed) for x in clusters] == [(0, [4, 5]), (1, [3])]
    assert all(0.85 <= x.similarity <= 1.0 for x in clusters)
    assert clusters[0].similarity < 1.0  # the weakest link is reported, not the exact copy


def test_chains_do_not_drift():
    base = words(7)
    a = conv(" ".join(base))
    b = conv(" ".join(edited(base, range(0, 35, 7))))
    c = conv(" ".join(edited(base, list(range(0, 35, 7)) + list(range(35, 70, 7)))))
    assert ref_jaccard(a, b) >= 0.85 and ref_jaccard(b, c) >= 0.85 and ref_jaccard(a, c) < 0.85
    # b is removed as a copy of a; c resembles only the removed b, so it stays.
    assert [(x.kept, x.removed) for x in near_duplicates([a, b, c])] == [(0, [1])]


def test_case_and_spacing_only_differences_are_near_duplicates():
    (cluster,) = near_duplicates([conv("Reset my PASSWORD please"), conv("reset   my password please")])
    assert cluster.similarity == 1.0


# --- near: things that must never merge ----------------------------------------------------------


def test_unrelated_texts_are_never_merged():
    convs = [conv(" ".join(words(seed, 40)), " ".join(words(seed + 1000, 30))) for seed in range(300)]
    assert near_duplicates(convs) == []
    assert near_duplicates(convs, threshold=0.6) == []


def test_same_template_different_facts_stays_apart_at_default():
    a = conv("Where is order #48213?", "Order #48213 left the warehouse on Monday.")
    b = conv("Where is order #90577?", "Order #90577 left the warehouse on Friday.")
    assert ref_jaccard(a, b) < 0.85
    assert near_duplicates([a, b]) == []


def test_short_texts_below_shingle_size():
    convs = [
        Conversation((Message("user", "ok"), Message("assistant", "no"))),
        Conversation((Message("user", "no"), Message("assistant", "ok"))),
    ]
    assert near_duplicates(convs) == []
    assert near_duplicates(convs, shingle=50) == []


# --- near: scripts and emoji ------------------------------------------------------------------------


def test_one_emoji_changes_a_short_message():
    up, down = conv("Great job \U0001f44d"), conv("Great job \U0001f44e")
    assert ref_jaccard(up, down) < 0.85
    assert near_duplicates([up, down]) == []


def test_emoji_sequences_in_long_text_are_near_duplicates():
    text = " ".join(words(11))
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    a = conv(f"{text} {family} thanks \U0001f44d\U0001f3fd")
    b = conv(f"{text} {family} thanks \U0001f44d\U0001f3ff")  # another skin tone
    assert [x.removed for x in near_duplicates([a, b])] == [[1]]


def test_right_to_left_text():
    hebrew = "שלום, ההזמנה שלך נשלחה היום מהמחסן ותגיע בתוך שלושה ימי עסקים. מספר המעקב נמצא בדואר."
    edit = hebrew.replace("שלושה", "ארבעה")
    arabic = "مرحبا، تم شحن طلبك اليوم من المستودع وسيصل خلال ثلاثة أيام عمل. رقم التتبع في البريد."
    convs = [conv("\u200f" + hebrew), conv(arabic), conv("\u200f" + edit)]
    assert ref_jaccard(convs[0], convs[2]) > 0.85
    assert [(x.kept, x.removed) for x in near_duplicates(convs)] == [(0, [2])]


def test_text_without_spaces_needs_character_shingles():
    zh = (
        "您好，您的订单已经从仓库发出，预计三个工作日内送达。"
        "物流单号已经通过邮件发送给您，请注意查收。如有问题请随时联系我们。"
    )
    assert [x.removed for x in near_duplicates([conv(zh), conv(zh.replace("三", "五"))])] == [[1]]


def test_giant_message():
    big = " ".join(words(5, 60_000))  # about 500,000 characters
    convs = [conv(big), *(conv(" ".join(words(s, 30))) for s in range(20)), conv(big.replace("order", "ORDERS", 3))]
    assert [(x.kept, x.removed) for x in near_duplicates(convs)] == [(0, [21])]


# --- the combined pipeline ------------------------------------------------------------------------


def test_deduplicate_runs_exact_then_near_with_original_indices():
    a, a_near, _ = pair_near(0.9, seed=1)
    b = conv(" ".join(words(2)))
    convs = [b, a, conv(" ".join(words(2)) + "\r\n"), a_near, a]
    result = deduplicate(convs)
    assert result.exact == [Cluster(0, [2], 1.0), Cluster(1, [4], 1.0)]
    assert [(x.kept, x.removed) for x in result.near] == [(1, [3])]
    assert result.kept == [0, 1]


# --- MinHash internals ------------------------------------------------------------------------------


def test_signatures_do_not_depend_on_batching(monkeypatch):
    texts = ["short", "x", "", " ".join(words(9, 400)), "medium length text here"] * 3
    expected = signatures(texts)
    monkeypatch.setattr(dedup, "_SHINGLES_PER_BLOCK", 7)
    monkeypatch.setattr(dedup, "_CHARS_PER_BATCH", 50)
    assert np.array_equal(signatures(texts), expected)
    assert np.array_equal(signatures(texts[3:4]), expected[3:4])


def test_minhash_estimate_tracks_exact_jaccard():
    a, b, j = pair_near(0.9, seed=4)
    fold = [dedup._fold(dedup.canonical_text(c)) for c in (a, b)]
    sig = signatures(fold, num_perm=256)
    assert np.mean(sig[0] == sig[1]) == pytest.approx(j, abs=0.08)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.85, 0.95, 1.0])
def test_band_layout_catches_pairs_at_the_threshold(threshold):
    bands, rows = band_layout(threshold, 128)
    assert bands * rows <= 128
    assert 1 - (1 - threshold**rows) ** bands >= CANDIDATE_RECALL
    assert band_layout(0.85, 128) == (16, 8)


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5])
def test_bad_threshold_is_a_user_error(threshold):
    with pytest.raises(InhouseError, match="threshold"):
        near_duplicates([conv("a")], threshold=threshold)


def test_results_are_deterministic():
    convs = [pair_near(0.9, seed=s)[i] for s in range(5) for i in (0, 1)]
    assert near_duplicates(convs) == near_duplicates(list(convs))
