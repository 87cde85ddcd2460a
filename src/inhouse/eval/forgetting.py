"""Forgetting check: did tuning damage what the base model already knew?

We measure the same model before and after tuning on data that has nothing to
do with the task: perplexity on a general reference text and, when given,
accuracy on multiple-choice questions. For an adapter, "before" is the same
model with the adapter switched off, so nothing is loaded twice; a full
fine-tune needs its base model passed explicitly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from inhouse.errors import InhouseError

MC_FORMAT = '{"question": str, "choices": [str, ...], "answer": int}'


@dataclass(frozen=True)
class MultipleChoice:
    question: str
    choices: tuple[str, ...]
    answer: int  # index into choices


@dataclass
class ForgettingReport:
    ppl_before: float
    ppl_after: float
    relative_change: float  # (after - before) / before; > 0 means worse
    mc_before: float | None
    mc_after: float | None
    flagged: bool
    reasons: list[str] = field(default_factory=list)


def default_reference_text() -> str:
    """A few KB of general-knowledge prose shipped with the package."""
    return resources.files("inhouse.eval").joinpath("reference.txt").read_text(encoding="utf-8")


@contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    """No dropout and no autograd while measuring; the training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Plain text, no chat template; BOS first when the model has one, as in pre-training."""
    ids = list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])  # long text is the point
    return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)


def _scored_logprobs(model: PreTrainedModel, seqs: list[list[int]], n_scored: list[int],
                     pad_id: int) -> list[torch.Tensor]:
    """Log-probability of the last n tokens of each sequence given all before it, in one batch."""
    longest = max(map(len, seqs))
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for i, seq in enumerate(seqs):  # right padding: real tokens keep positions 0..len-1
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
    out = []
    for i, (seq, k) in enumerate(zip(seqs, n_scored)):
        logp = torch.log_softmax(logits[i, len(seq) - 1 - k:len(seq) - 1].float(), dim=-1)
        target = torch.tensor(seq[len(seq) - k:], device=logp.device)
        out.append(logp.gather(-1, target[:, None]).squeeze(-1))
    return out


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, first, end): feed tokens start..end-1, score tokens first..end-1.

    Every token but the first is scored exactly once, each with at least
    window - stride tokens of context (or all tokens before it, near the start).
    stride < window so that the first scored token of a window has context.
    """
    if not 1 <= stride < window:
        raise InhouseError(f"perplexity needs 1 <= stride < window (got stride={stride}, window={window}) "
                           "so that every scored token has some context")
    spans = []
    for first in range(1, n_tokens, stride):
        end = min(first + stride, n_tokens)
        spans.append((max(0, end - window), first, end))
    return spans


def perplexity(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str, window: int = 512,
               stride: int = 256, batch_size: int = 4) -> float:
    """exp(mean negative log-likelihood per token) with a sliding window, so any text length works."""
    ids = _ids(tokenizer, text)
    if len(ids) < 2:
        raise InhouseError("the reference text is too short to measure perplexity (needs at least 2 tokens)")
    spans = windows(len(ids), window, stride)
    total, count = 0.0, 0
    with _evaluating(model):
        for b in range(0, len(spans), batch_size):
            batch = spans[b:b + batch_size]
            logps = _scored_logprobs(model, [ids[s:e] for s, _, e in batch], [e - f for _, f, e in batch],
                                     _pad_id(tokenizer))
            total -= sum(lp.double().sum().item() for lp in logps)
            count += sum(lp.numel() for lp in logps)
    mean_nll = total / count
    return math.exp(mean_nll) if mean_nll < 700 else math.inf


def _mc_item(row: object, where: str) -> MultipleChoice:
    def bad(problem: str) -> InhouseError:
        return InhouseError(f"{where}: {problem}; each line must be {MC_FORMAT}")

    if not isinstance(row, dict):
        raise bad("not a JSON object")
    question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise bad("'question' is missing or not a non-empty string")
    if not isinstance(choices, list) or len(choices) < 2 or \
            not all(isinstance(c, str) and c.strip() for c in choices):
        raise bad("'choices' must be a list of at least 2 non-empty strings")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise bad(f"'answer' must be an integer index from 0 to {len(choices) - 1}")
    return MultipleChoice(question, tuple(choices), answer)


def load_multiple_choice(path: str | Path) -> list[MultipleChoice]:
    """Questions from JSONL; any bad line stops with file:line, so a typo never skews accuracy."""
    path = Path(path)
    if not path.is_file():
        raise InhouseError(f"{path}: no such multiple-choice file")
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InhouseError(f"{path}:{n}: not valid JSON ({exc.msg}); each line must be {MC_FORMAT}") from None
        items.append(_mc_item(row, f"{path}:{n}"))
    if not items:
        raise InhouseError(f"{path}: no questions in the file")
    return items


def _prompt_and_choice(tokenizer: PreTrainedTokenizerBase, prompt: str, choice: str) -> tuple[list[int], list[int]]:
    """Tokenize prompt + choice together (as the model would read it) and split at the prompt.

    If the tokenizer merges across the boundary, the choice is tokenized on its own instead.
    """
    head, full = _ids(tokenizer, prompt), _ids(tokenizer, prompt + choice)
    if full[:len(head)] == head and len(full) > len(head):
        return head, full[len(head):]
    return head, list(tokenizer(choice, add_special_tokens=False)["input_ids"])


def choice_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, item: MultipleChoice) -> list[float]:
    """Summed log-likelihood of each choice's tokens after "Question: ...\\nAnswer:".

    The sum (the log-probability of the whole answer) is used, not the per-token
    mean: it is what the model actually prefers. It favours shorter choices, but
    the forgetting check compares the same questions before and after tuning,
    so that bias cancels.
    """
    prompt = f"Question: {item.question}\nAnswer:"
    pairs = [_prompt_and_choice(tokenizer, prompt, " " + c) for c in item.choices]
    with _evaluating(model):
        logps = _scored_logprobs(model, [h + c for h, c in pairs], [len(c) for _, c in pairs], _pad_id(tokenizer))
    return [lp.double().sum().item() for lp in logps]


def multiple_choice_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                             items: Sequence[MultipleChoice]) -> float:
    """Fraction of questions where the most likely choice is the right one (ties: first choice)."""
    if not items:
        raise InhouseError("no multiple-choice questions to score")
    right = 0
    for item in items:
        scores = choice_logprobs(model, tokenizer, item)
        right += max(range(len(scores)), key=scores.__getitem__) == item.answer
    return right / len(items)


def _measure(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str,
             mc_items: Sequence[MultipleChoice] | None, window: int, stride: int) -> tuple[float, float | None]:
    ppl = perplexity(model, tokenizer, text, window, stride)
    return ppl, (multiple_choice_accuracy(model, tokenizer, mc_items) if mc_items else None)


def _report(before: tuple[float, float | None], after: tuple[float, float | None],
            threshold: float) -> ForgettingReport:
    (ppl_b, mc_b), (ppl_a, mc_a) = before, after
    change = (ppl_a - ppl_b) / ppl_b if math.isfinite(ppl_b) else math.nan
    reasons = []
    if change > threshold:  # nan (base already infinite) is never flagged: nothing to compare
        rise = f"{change:.1%}" if change < 10 else f"{change + 1:.3g}-fold"
        reasons.append(f"perplexity on the reference text rose {rise} ({ppl_b:.3g} -> {ppl_a:.3g}), "
                       f"more than the {threshold:.0%} allowed")
    if mc_b is not None and mc_a is not None and mc_b - mc_a > threshold:
        reasons.append(f"multiple-choice accuracy fell {mc_b - mc_a:.1%} ({mc_b:.1%} -> {mc_a:.1%}), "
                       f"more than the {threshold:.0%} allowed")
    return ForgettingReport(ppl_b, ppl_a, change, mc_b, mc_a, bool(reasons), reasons)


def forgetting_check(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, reference_text: str,
                     mc_items: Sequence[MultipleChoice] | None = None, threshold: float = 0.10,
                     base_model: PreTrainedModel | None = None, window: int = 512,
                     stride: int = 256) -> ForgettingReport:
    """Before vs after tuning; flagged when perplexity rises more than `threshold` (relative)
    or multiple-choice accuracy drops more than `threshold` (absolute).

    `model` is a PEFT model (before = adapter disabled) or, for a full fine-tune,
    the tuned model with `base_model` the one it was tuned from.
    """
    from peft import PeftModel

    if threshold < 0:
        raise InhouseError(f"forgetting threshold must be >= 0 (got {threshold})")
    if base_model is not None:
        before = _measure(base_model, tokenizer, reference_text, mc_items, window, stride)
    elif isinstance(model, PeftModel):
        with model.disable_adapter():
            before = _measure(model, tokenizer, reference_text, mc_items, window, stride)
    else:
        raise InhouseError("this model has no adapter to switch off (a full fine-tune?); "
                           "pass base_model, the model it was tuned from, to compare against")
    after = _measure(model, tokenizer, reference_text, mc_items, window, stride)
    return _report(before, after, threshold)
