"""LLM-as-judge: a local model scores answers 1-5 on a fixed rubric.

The judge is any model `load_chat_model` can load (a base model or an adapter).
It decodes greedily, so a verdict is reproducible. Its text is parsed strictly:
a verdict that lacks a criterion, or gives a score outside 1-5, is counted as
unparsed rather than repaired, because a guessed score would be worse than a
missing one. The raw judge text is always kept, so every score can be audited.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from inhouse.adapters.load import load_chat_model
from inhouse.model.generate import ChatModel
from inhouse.model.template import TemplateError

CRITERIA = ("relevance", "grounding", "hallucination")

RUBRIC = {
    "system": (
        "You are a strict, impartial grader. You score one answer to one question on three criteria, "
        "each an integer from 1 to 5.\n"
        "relevance: does the answer address what was asked? 5 = fully and directly; 3 = partly, or "
        "padded with off-topic material; 1 = does not address the question.\n"
        "grounding: is the answer supported by the supplied context (or, when no context is given, by "
        "the reference answer or well-established facts)? 5 = every claim is supported; 3 = some claims "
        "are supported, others are not checkable; 1 = contradicts or ignores the context.\n"
        "hallucination: 5 = no invented or unsupported claims at all; 3 = a minor unsupported detail; "
        "1 = central claims are made up.\n"
        "Reply with one JSON object and nothing else, in exactly this form:\n"
        '{"relevance": <1-5>, "grounding": <1-5>, "hallucination": <1-5>, "reason": "<one sentence>"}'
    ),
    "user": (
        "Question:\n{question}\n\n"
        "Context:\n{context}\n\n"
        "Reference answer:\n{reference}\n\n"
        "Answer to grade:\n{answer}\n\n"
        "Grade the answer. Reply with the JSON object only."
    ),
}

NONE_GIVEN = "(none given)"


def rubric_messages(question: str, answer: str, context: str | None = None,
                    reference: str | None = None) -> list[dict[str, str]]:
    """The fixed rubric filled in; empty context or reference is said so explicitly."""
    user = RUBRIC["user"].format(question=question, answer=answer, context=context or NONE_GIVEN,
                                 reference=reference or NONE_GIVEN)
    return [{"role": "system", "content": RUBRIC["system"]}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class Verdict:
    scores: dict[str, int]
    reason: str
    raw: str


@dataclass(frozen=True)
class Judgement:
    scores: dict[str, int] | None
    raw: str
    parsed: bool
    reason: str = ""


# Key spellings judges use for each criterion, after lower-casing and dropping non-letters.
_ALIASES = {
    "relevance": "relevance", "relevant": "relevance", "relevancy": "relevance",
    "grounding": "grounding", "grounded": "grounding", "groundedness": "grounding",
    "hallucination": "hallucination", "hallucinations": "hallucination",
    "nohallucination": "hallucination", "absenceofhallucination": "hallucination",
}


def _criterion(key: str) -> str | None:
    """'Relevance', 'relevance_score', 'Hallucination rating' -> the criterion; else None."""
    return _ALIASES.get(re.sub(r"(score|rating)$", "", re.sub(r"[^a-z]", "", key.lower())))


def _score(value: object) -> int | None:
    """An integer 1-5 as given (4, 4.0, "4", "4/5"); anything else is None, never rounded."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.0+)?)\s*(?:(?:/|out of)\s*5)?\s*", value)
        value = float(m.group(1)) if m else None
    if isinstance(value, (int, float)) and float(value).is_integer() and 1 <= value <= 5:
        return int(value)
    return None


def _json_objects(text: str) -> list[dict]:
    """Every JSON object embedded in the text (code fences and prose around it are skipped)."""
    decoder, found = json.JSONDecoder(), []
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    return found


def _from_object(obj: dict) -> tuple[dict[str, int], str] | None:
    """Scores from one object, looking one level down for {"scores": {...}}; None if incomplete."""
    named = {_criterion(k): v for k, v in obj.items() if isinstance(k, str) and _criterion(k)}
    if not named:
        nested = [v for v in obj.values() if isinstance(v, dict)]
        return _from_object(nested[0]) if len(nested) == 1 else None
    scores = {c: _score(named.get(c)) for c in CRITERIA}
    if any(s is None for s in scores.values()):
        return None
    reason = next((str(v) for k, v in obj.items() if str(k).lower() in ("reason", "explanation")), "")
    return scores, reason


# name (at a line start or after whitespace, '{' or ','), separator, score, optional '/ scale'
_LINE = re.compile(r"(?:^|(?<=[\s{,]))[\W_]*([a-z][a-z ]*?)[\W_]*\s*[:=-]\s*\**\s*"
                   r"(\d+(?:\.\d+)?)\s*(?:(/|out of)\s*(\d+))?", re.IGNORECASE | re.MULTILINE)


def _from_lines(text: str) -> tuple[dict[str, int], str] | None:
    """Scores written as 'Relevance: 4/5', '- **Grounding**: 5' or JSON cut off by the token limit.

    A criterion given twice with different scores gives None.
    """
    seen: dict[str, set[int | None]] = {}
    for name, number, per, scale in _LINE.findall(text):
        crit = _criterion(name)
        if crit:
            ok = not per or scale == "5"
            seen.setdefault(crit, set()).add(_score(number) if ok else None)
    if set(seen) != set(CRITERIA) or any(len(v) != 1 or None in v for v in seen.values()):
        return None
    reason = re.search(r"^[\W_]*reason[\W_]*\s*[:=-]\s*(.+)$", text, re.IGNORECASE | re.MULTILINE)
    return {c: next(iter(seen[c])) for c in CRITERIA}, reason.group(1).strip() if reason else ""


def parse_verdict(text: str) -> Verdict | None:
    """The judge's scores, or None when the text does not state all three unambiguously.

    JSON is preferred: if any embedded object names a criterion, the JSON objects
    decide alone (they must all agree). Only text with no such object is read
    line by line.
    """
    candidates = [o for o in _json_objects(text) if _from_object(o) or any(map(_criterion, map(str, o)))]
    results = [_from_object(o) for o in candidates] if candidates else [_from_lines(text)]
    if any(r is None for r in results) or len({tuple(r[0].items()) for r in results}) != 1:
        return None
    scores, reason = results[0]
    return Verdict(scores, reason, text)


class Judge(Protocol):
    def judge(self, question: str, answer: str, context: str | None = None,
              reference: str | None = None) -> Judgement: ...


def judgement(raw: str) -> Judgement:
    """Wrap raw judge text; shared by every judge so parsing is identical."""
    verdict = parse_verdict(raw)
    if verdict is None:
        return Judgement(None, raw, False)
    return Judgement(verdict.scores, raw, True, verdict.reason)


@dataclass
class ModelJudge:
    chat_model: ChatModel
    max_new_tokens: int = 200

    def judge(self, question: str, answer: str, context: str | None = None,
              reference: str | None = None) -> Judgement:
        """Greedy decoding, so the same answer always gets the same verdict."""
        messages = rubric_messages(question, answer, context, reference)
        try:
            raw = self.chat_model.reply(messages, max_new_tokens=self.max_new_tokens, temperature=0.0)
        except TemplateError:  # templates without a system role (e.g. Gemma): fold it into the user turn
            folded = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
            raw = self.chat_model.reply(folded, max_new_tokens=self.max_new_tokens, temperature=0.0)
        return judgement(raw)


def load_judge(ref: str, max_new_tokens: int = 200, chat_template: str | None = None) -> ModelJudge:
    """Any loadable model or adapter as a judge."""
    return ModelJudge(load_chat_model(ref, chat_template), max_new_tokens)


@dataclass
class JudgeSummary:
    means: dict[str, float]  # empty when no verdict parsed: there is nothing honest to average
    n: int
    n_unparsed: int
    judgements: list[Judgement] = field(default_factory=list)


def judge_all(judge: Judge, items: Iterable[Mapping[str, str | None]]) -> JudgeSummary:
    """Judge every item ({question, answer, context?, reference?}); means over parsed verdicts only."""
    judgements = [judge.judge(it["question"], it["answer"], it.get("context"), it.get("reference"))
                  for it in items]
    parsed = [j.scores for j in judgements if j.parsed and j.scores]
    means = {c: sum(s[c] for s in parsed) / len(parsed) for c in CRITERIA} if parsed else {}
    return JudgeSummary(means, len(judgements), len(judgements) - len(parsed), judgements)
