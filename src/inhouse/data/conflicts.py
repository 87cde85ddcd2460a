"""Conflicting examples: the same question (or nearly) answered differently.

Exact and near duplicates are copies; a conflict is worse: the model is taught two different answers
to one prompt and learns neither. The prompt is everything before an example's last assistant turn;
prompts are compared the way `dedup` compares examples (normalised, case-folded, MinHash + exact
Jaccard), answers by their normalised text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inhouse.data.conversation import Conversation
from inhouse.data.dedup import DEFAULT_THRESHOLD, _fold, _near, canonical_text


@dataclass(frozen=True)
class Conflict:
    """`other` asks what `first` asks (similarity 1.0: the same prompt) but gets another answer."""

    first: int
    other: int
    similarity: float


def split_last_answer(conv: Conversation) -> tuple[Conversation, Conversation]:
    last = max(i for i, m in enumerate(conv.messages) if m.role == "assistant")
    return (Conversation(conv.messages[:last], tools=conv.tools), Conversation(conv.messages[last:last + 1]))


def find_conflicts(convs: Sequence[Conversation], threshold: float = DEFAULT_THRESHOLD) -> list[Conflict]:
    parts = [split_last_answer(c) for c in convs]
    prompts = [_fold(canonical_text(p)) for p, _ in parts]
    answers = [_fold(canonical_text(a)) for _, a in parts]
    conflicts = []
    for cluster in _near(prompts, threshold, 128, 5):
        for other in cluster.removed:
            if answers[other] != answers[cluster.kept]:
                same = prompts[other] == prompts[cluster.kept]
                conflicts.append(Conflict(cluster.kept, other, 1.0 if same else cluster.similarity))
    return conflicts
