"""DPO's implicit reward, measured on held-out pairs: does the tuned model prefer the preferred answer?

An answer's reward is beta x (its log-probability under the tuned model minus under the reference),
summed over the answer's scored tokens (SFT's mask). Reward accuracy is the share of pairs whose
chosen answer earns the higher reward; a tie counts half, because a model that still equals its
reference (a fresh adapter, before training) prefers neither answer: it is at chance, not wrong.
TRL's own training logs count a tie as wrong, so its `rewards/accuracies` reads 0 before step 1.
The chosen answers' loss (mean negative log-likelihood per scored token) is SFT's validation loss on
them. Used by DPO's validation points and by `inhouse eval` on a preference file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

REF_ADAPTER = "ref"  # the name TRL's DPOTrainer gives the frozen copy of a starting adapter


@dataclass
class PairScores:
    reward_accuracy: float | None
    reward_margin: float | None
    chosen_loss: float | None
    pairs: int

    def as_metrics(self) -> dict[str, float | None]:
        return {"reward_accuracy": self.reward_accuracy, "reward_margin": self.reward_margin,
                "chosen_loss": self.chosen_loss}


def reference(model) -> contextlib.AbstractContextManager:
    """Inside it the model is DPO's reference: the frozen starting adapter when the model holds one, else
    the base with every adapter switched off (TRL's own switch, so training and scoring agree)."""
    from trl.trainer.utils import use_adapter

    return use_adapter(model, REF_ADAPTER if REF_ADAPTER in getattr(model, "peft_config", {}) else None)


def answer_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed log-probability of the scored tokens, and how many there are (float32, a row at a
    time, so bf16 logits lose no precision and the extra memory is one row's T x V)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    sums, counts = [], []
    for row, ids, scored in zip(logits, batch["input_ids"], batch["completion_mask"]):
        logp = torch.log_softmax(row[:-1].float(), -1).gather(-1, ids[1:, None]).squeeze(-1)
        keep = scored[1:].bool()
        sums.append(logp[keep].sum())
        counts.append(keep.sum())
    return torch.stack(sums), torch.stack(counts)


@torch.no_grad()
def score_pairs(model, batches: Iterable[dict[str, torch.Tensor]], beta: float,
                reference_of: Callable = reference) -> PairScores:
    """Reward accuracy, mean margin and chosen loss over batches laid out as `PairCollator` makes them."""
    wins = margin = nll = tokens = 0.0
    pairs = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch = {k: v.to(model.device) for k, v in batch.items()}
            policy, counts = answer_logps(model, batch)
            with reference_of(model):
                ref, _ = answer_logps(model, batch)
            chosen, rejected = (beta * (policy - ref)).chunk(2)
            wins += float((chosen > rejected).sum() + 0.5 * (chosen == rejected).sum())
            margin += float((chosen - rejected).sum())
            nll -= float(policy.chunk(2)[0].sum())
            tokens += float(counts.chunk(2)[0].sum())
            pairs += len(chosen)
    finally:
        model.train(was_training)
    if not pairs:
        return PairScores(None, None, None, 0)
    return PairScores(wins / pairs, margin / pairs, nll / tokens if tokens else None, pairs)
