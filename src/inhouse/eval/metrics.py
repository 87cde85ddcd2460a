"""Metrics for judging a fine-tuned model's answers and its token predictions.

Text metrics compare generated answers with reference answers:

* ``exact_match`` / ``token_f1``: SQuAD-style. Both sides are normalised
  (lowercase, ASCII punctuation removed, articles a/an/the removed, whitespace
  collapsed) so "The Eiffel Tower." matches "eiffel tower". F1 is over bags
  of tokens: a repeated token counts as often as it occurs on both sides.
* ``rouge_l``: Google's ``rouge-score`` (Porter stemmer on), mean F-measure.
  Its tokenizer keeps only ASCII letters and digits, so on text in other
  scripts it measures little.
* ``bleu``: ``sacrebleu`` corpus BLEU with its defaults (13a tokenizer), the
  number papers report.
* ``json_metrics``: parse rate, JSON Schema conformance and per-field
  accuracy for structured outputs.
* ``refusal_rate`` and ``mean_length``.

Token metrics (``token_metrics`` then ``finalize_token_metrics``) come from
the model's logits on the reference answers, shifted as a causal LM is
trained: reference loss, perplexity and mean token accuracy.

Scales: EM, F1, ROUGE-L, accuracies and rates are 0..1; BLEU is 0..100 as
sacrebleu reports it. A metric over no examples is None, not 0, so a report
cannot mistake "nothing measured" for "all wrong". rouge-score and sacrebleu
are imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from referencing.exceptions import Unresolvable

# _same_json is JSON equality (1 == 1.0, true != 1), shared with the data checks.
from inhouse.data.schema import _same_json, extract_json
from inhouse.errors import InhouseError

DEFAULT_REFUSALS = ("not in the context", "cannot find the answer", "i don't know")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NO_PUNCT = str.maketrans("", "", string.punctuation)
_MISSING = object()


def _check_pairs(preds: Sequence[Any], refs: Sequence[Any]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


# --- SQuAD-style EM / F1 ---------------------------------------------------


def normalize_answer(s: str) -> str:
    """Lowercase, drop ASCII punctuation and articles, collapse spaces: surface form stops counting."""
    s = s.lower().translate(_NO_PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(pred: str, ref: str) -> float:
    """1.0 when the normalised answers are identical, else 0.0."""
    return float(normalize_answer(pred) == normalize_answer(ref))


def token_f1(pred: str, ref: str) -> float:
    """F1 of token overlap: partial credit for a partly right answer."""
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    if not p or not r:
        return float(p == r)  # both empty after normalising: nothing to say, nothing said
    same = sum((Counter(p) & Counter(r)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(r)
    return 2 * precision * recall / (precision + recall)


# --- ROUGE-L / BLEU (reference implementations) ----------------------------


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def _rouge_l_one(pred: str, ref: str) -> float:
    return _rouge_scorer().score(ref, pred)["rougeL"].fmeasure  # score(target, prediction)


def rouge_l(preds: Sequence[str], refs: Sequence[str]) -> float | None:
    """Mean ROUGE-L F-measure per example (rouge-score's numbers); None for no examples.

    An empty answer or reference scores 0, as rouge-score says, even when both are empty.
    """
    _check_pairs(preds, refs)
    return _mean(_rouge_l_one(p, r) for p, r in zip(preds, refs))


def bleu(preds: Sequence[str], refs: Sequence[str]) -> float | None:
    """Corpus BLEU, 0..100, from sacrebleu with one reference per example; None for no examples."""
    _check_pairs(preds, refs)
    if not preds:
        return None
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(preds), [list(refs)]).score)


# --- Structured outputs ----------------------------------------------------


def _schema_valid(validator: Any, value: Any) -> bool:
    try:
        return validator.is_valid(value)
    except Unresolvable as e:
        raise InhouseError(f"schema $ref cannot be resolved (remote refs are not fetched): {e}") from None


def _leaves(obj: dict, at: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, value) of a JSON object: non-empty objects are opened, all else is a leaf."""
    for k, v in obj.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, (*at, k))
        else:
            yield (*at, k), v


def _get(value: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        if not isinstance(value, dict) or k not in value:
            return _MISSING
        value = value[k]
    return value


def _field_accuracy(got: Sequence[tuple[Any, str] | None], refs: Sequence[str]) -> dict[str, float]:
    tally: dict[tuple[str, ...], list[int]] = {}  # path -> [right, seen]
    for g, ref in zip(got, refs):
        want = extract_json(ref)
        if want is None or not isinstance(want[0], dict):
            continue
        have = g[0] if g is not None else _MISSING
        for path, value in _leaves(want[0]):
            t = tally.setdefault(path, [0, 0])
            t[0] += _same_json(_get(have, path), value)
            t[1] += 1
    return {".".join(p): right / seen for p, (right, seen) in tally.items()}


def json_metrics(preds: Sequence[str], refs: Sequence[str], validator: Any = None) -> dict[str, Any]:
    """Do structured answers parse, obey the schema, and carry the right values?

    * ``parse_rate``: share of predictions that are JSON alone or in one
      ```json fence (``extract_json``, the rule the training-data checks use).
    * ``schema_rate``: share of predictions that parse *and* are valid under
      ``validator`` (from ``load_schema``); None without one.
    * ``field_accuracy``: only references that are JSON objects count. Each
      leaf path ("name", "address.city"; objects are flattened, lists and
      empty objects compared whole) scores the share of those references
      whose prediction holds an equal value there (JSON equality: 1 == 1.0,
      true != 1). A missing path or an unparsable prediction is wrong; extra
      keys in the prediction are ignored. Keys that contain dots make
      ambiguous path names.
    * ``n``: the number of predictions. Rates are None when it is 0.
    """
    _check_pairs(preds, refs)
    got = [extract_json(p) for p in preds]
    valid = None if validator is None else [g is not None and _schema_valid(validator, g[0]) for g in got]
    return {
        "parse_rate": _mean(g is not None for g in got),
        "schema_rate": None if valid is None else _mean(valid),
        "field_accuracy": _field_accuracy(got, refs),
        "n": len(got),
    }


# --- Refusals and length ---------------------------------------------------


def _fold(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").casefold().split())


def refusal_rate(preds: Sequence[str], phrases: Iterable[str] = DEFAULT_REFUSALS) -> float | None:
    """How often the model says the answer is not there: share of predictions holding a phrase.

    Case-insensitive and whitespace-normalised; a curly apostrophe reads as ``'``.
    Blank phrases are ignored. None for no predictions.
    """
    if isinstance(phrases, str):  # one phrase, not its characters
        phrases = (phrases,)
    wanted = [f for f in map(_fold, phrases) if f]
    return _mean(any(w in _fold(p) for w in wanted) for p in preds)


def mean_length(preds: Sequence[str], count: Callable[[str], int] | None = None) -> float | None:
    """Mean answer length in whitespace-separated words, or by ``count`` (e.g. tokenizer tokens)."""
    count = count or (lambda s: len(s.split()))
    return _mean(count(p) for p in preds)


# --- Token metrics ---------------------------------------------------------


def token_metrics(logits: Any, labels: Any, ignore_index: int = -100) -> dict[str, Any]:
    """Sums over one batch, to add up across batches: {"nll", "tokens", "correct"}.

    Shifted as a causal LM is trained: position t predicts labels[t + 1];
    labels equal to ``ignore_index`` (prompt, padding) are skipped. ``nll`` is
    the summed negative log-likelihood in nats, ``correct`` the argmax hits.
    Works in float32 one row at a time, so bf16 logits lose no precision and
    the extra memory is one row's T x V.
    """
    import torch
    import torch.nn.functional as F

    if logits.dim() != 3 or tuple(labels.shape) != tuple(logits.shape[:2]):
        got = f"{tuple(logits.shape)}, {tuple(labels.shape)}"
        raise ValueError(f"expected logits (B, T, V) and labels (B, T); got {got}")
    nll = torch.zeros((), dtype=torch.float32, device=logits.device)
    tokens = torch.zeros((), dtype=torch.long, device=logits.device)
    correct = torch.zeros((), dtype=torch.long, device=logits.device)
    with torch.no_grad():
        for row, lab in zip(logits, labels.to(logits.device)):
            lg, tgt = row[:-1].float(), lab[1:].long()
            keep = tgt != ignore_index
            nll += F.cross_entropy(lg, tgt, ignore_index=ignore_index, reduction="sum")
            tokens += keep.sum()
            correct += ((lg.argmax(-1) == tgt) & keep).sum()
    return {"nll": nll.item(), "tokens": int(tokens.item()), "correct": int(correct.item())}


def finalize_token_metrics(
    sums: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None,
) -> dict[str, float | None]:
    """Loss, perplexity and token accuracy from token_metrics sums (one dict, or many to add).

    The loss is the mean over all target tokens, not a mean of batch means
    (which would over-weight short batches). Perplexity is exp(loss), inf
    where that overflows. All None when there were no target tokens.
    """
    parts = [sums] if isinstance(sums, Mapping) else list(sums or ())  # None: no batches at all
    nll = sum(p["nll"] for p in parts)
    tokens = sum(p["tokens"] for p in parts)
    correct = sum(p["correct"] for p in parts)
    if tokens == 0:
        return {"loss": None, "perplexity": None, "token_accuracy": None}
    loss = nll / tokens
    try:
        ppl = math.exp(loss)
    except OverflowError:
        ppl = math.inf
    return {"loss": loss, "perplexity": ppl, "token_accuracy": correct / tokens}


# --- All at once -----------------------------------------------------------


def _structured(ref: str) -> bool:
    """A JSON object or array; a bare "42" or "true" is a plain answer."""
    got = extract_json(ref)
    return got is not None and isinstance(got[0], (dict, list))


def score_answers(
    preds: Sequence[str],
    refs: Sequence[str],
    *,
    validator: Any = None,
    refusal_phrases: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Every text metric of one evaluation, so all reports compute them the same way.

    Keys: ``n``, ``exact_match`` and ``f1`` (means), ``rouge_l``, ``bleu``,
    ``mean_length`` (words); ``json`` (json_metrics) only when some reference
    is a JSON object or array, computed over those examples alone so plain
    answers in a mixed set are not parse failures (over all examples when a
    validator is given and no reference is structured); ``refusal_rate`` only
    when ``refusal_phrases`` is given (pass DEFAULT_REFUSALS for the defaults).
    """
    _check_pairs(preds, refs)
    out: dict[str, Any] = {
        "n": len(preds),
        "exact_match": _mean(exact_match(p, r) for p, r in zip(preds, refs)),
        "f1": _mean(token_f1(p, r) for p, r in zip(preds, refs)),
        "rouge_l": rouge_l(preds, refs),
        "bleu": bleu(preds, refs),
        "mean_length": mean_length(preds),
    }
    idx = [i for i, r in enumerate(refs) if _structured(r)]
    if idx or validator is not None:
        idx = idx or list(range(len(refs)))
        out["json"] = json_metrics([preds[i] for i in idx], [refs[i] for i in idx], validator)
    if refusal_phrases is not None:
        out["refusal_rate"] = refusal_rate(preds, refusal_phrases)
    return out


def per_example(pred: str, ref: str) -> dict[str, float]:
    """EM, F1 and ROUGE-L of one pair, for listing the best and worst answers."""
    return {"em": exact_match(pred, ref), "f1": token_f1(pred, ref), "rougeL": _rouge_l_one(pred, ref)}
