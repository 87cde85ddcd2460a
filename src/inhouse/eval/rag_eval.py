"""`inhouse eval ADAPTER --kb NAME --data qa.jsonl`: closed-book and retrieval-augmented, base and tuned.

Every question of a question/answer file (`inhouse.data.qa`) is answered four ways:

* closed-book base / tuned: the question alone as the user message (with `--system` when given, and no
  other system prompt), as `inhouse generate` asks it;
* RAG base / tuned: exactly what `inhouse ask` does: `ground()` (retrieve, relevance gate, numbered
  sources), the model's reply, `finish()`. A question the gate refuses is refused without a model call,
  and scored like any refusal.

"base" is the adapter switched off in the same loaded model. Retrieval does not depend on the model, so
it runs once and both RAG conditions see the same sources. Generation is batched (`--batch-size`) and
greedy unless `--temperature` says otherwise.

Metrics per condition (None, shown as "—", when there is nothing to measure):

* ``exact_match``, ``f1``: answerable questions; the answer without its [n] markers and quote lines
  (`plain_answer`) against the reference, SQuAD-normalised (`inhouse.eval.metrics`). A refusal scores 0.
* ``citation_precision``: share of the answers' ``[n] "quote"`` lines whose quote occurs word for word
  in retrieved chunk n (`find_quote`). Only quotes the model wrote count: when it cites without quoting,
  `finish()` picks a sentence of the chunk itself, which is in the chunk by construction and measures
  nothing. ``quote_lines`` is how many lines were checked.
* ``valid_citations``: share of the source numbers an answer cites ([n], each once per answer) that name
  a source it was shown (1..k).
* ``citation_recall``: share of answerable questions whose oracle document (its ``doc_path``, else the
  document of its ``chunk_id``) is among the documents the answer cites. An answer citing nothing cites
  nothing (`ask` then lists the sources it consulted; they are not citations).
* ``refusal_rate``: share of unanswerable questions refused (right); ``false_refusal_rate``: share of
  answerable ones refused (wrong). A refusal is `REFUSAL` or one of `--refusal-phrases` (default:
  `inhouse.eval.metrics.DEFAULT_REFUSALS`), in every condition alike.

Retrieval, once: ``recall@k`` of the oracle over answerable questions (its chunk_id among the k chunks
shown when the question names one, else a chunk of its doc_path), and how many questions of each kind
the relevance gate refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inhouse.data.conversation import Problem
from inhouse.data.qa import QAItem, load_qa, problems_error
from inhouse.eval import metrics
from inhouse.eval.config import EvalConfig
from inhouse.eval.run import base_context, generate_all
from inhouse.events import Events, Stopped
from inhouse.model.generate import ChatModel
from inhouse.rag.answer import (
    Answer, Grounding, find_quote, finish, ground, is_refusal, marker_numbers, plain_answer, quoted_spans,
)
from inhouse.rag.config import SearchConfig
from inhouse.rag.metrics import recall_at_k
from inhouse.rag.search import search as search_kb
from inhouse.rag.store import Store, open_kb

CONDITIONS = {"closed_book_base": "closed-book base", "closed_book_tuned": "closed-book tuned",
              "rag_base": "RAG base", "rag_tuned": "RAG tuned"}


@dataclass
class Questions:
    """A QA file checked against the knowledge base; `oracles[i]` is the document answering item i
    (None for an unanswerable one)."""

    items: list[QAItem]
    store: Store
    oracles: list[str | None]

    @property
    def answerable(self) -> list[int]:
        return [i for i, item in enumerate(self.items) if item.answerable]


@dataclass
class RagEvalResult:
    """Metrics per condition (CONDITIONS), retrieval once, a row per question, and each condition's texts."""

    conditions: dict[str, dict[str, Any]]
    retrieval: dict[str, Any]
    examples: list[dict[str, Any]]
    answers: dict[str, list[str]] = field(repr=False)

    def as_report(self) -> dict[str, Any]:
        return {"labels": dict(CONDITIONS), "conditions": self.conditions, "retrieval": self.retrieval,
                "examples": self.examples}

    def closed_book(self, side: str) -> list[str]:
        """The closed-book answers of `side` (base, tuned) to the answerable questions: the general
        evaluation scores these rather than generating them again."""
        return [text for text, x in zip(self.answers[f"closed_book_{side}"], self.examples) if x["answerable"]]


def load_questions(config: EvalConfig) -> Questions:
    """The questions and the knowledge base (`config.search.kb`), checked against each other before any
    model loads."""
    if config.search is None:
        raise ValueError("load_questions needs config.search (a knowledge base)")
    store = open_kb(config.search.kb)
    items = load_qa(config.data)[: config.max_examples]
    return Questions(items, store, oracle_docs(items, store, config.search.kb))


def oracle_docs(items: Sequence[QAItem], store: Store, kb: str) -> list[str | None]:
    """Each answerable question's oracle document: its doc_path, else its chunk's. An oracle the knowledge
    base does not hold (a stale chunk_id after re-indexing, a path spelled otherwise) is an error: it would
    score 0 for a reason no model can fix."""
    wanted = [item for item in items if item.answerable]
    ids = sorted({item.chunk_id for item in wanted if item.chunk_id})
    paths = sorted({item.doc_path for item in wanted if item.doc_path})
    chunk_doc = {c.chunk_id: c.doc_path for c in store.chunks({"chunk_id": ids})} if ids else {}
    held = {c.doc_path for c in store.chunks({"doc_path": paths})} if paths else set()
    problems = [p for item in wanted for p in _missing(item, chunk_doc, held, kb)]
    if problems:
        raise problems_error(problems)
    return [(item.doc_path or chunk_doc[item.chunk_id]) if item.answerable else None for item in items]


def _missing(item: QAItem, chunk_doc: dict[str, str], held: set[str], kb: str) -> list[Problem]:
    out = []
    if item.chunk_id and item.chunk_id not in chunk_doc:
        out.append(Problem("invalid_value", item.where, 0, f"chunk {item.chunk_id!r} is not in knowledge base "
                           f"{kb} (re-indexed with other chunk settings? give doc_path instead)", "chunk_id"))
    if item.doc_path and item.doc_path not in held:
        out.append(Problem("invalid_value", item.where, 0, f"{item.doc_path!r} is not a document of knowledge base "
                           f"{kb} (paths are relative to the indexed folder, as `inhouse rag search` shows them)",
                           "doc_path"))
    return out


def evaluate_rag(chat: ChatModel, questions: Questions, config: EvalConfig,
                 events: Events | None = None) -> RagEvalResult:
    """The four conditions on every question (see the module docstring); `chat` is an adapter on its base."""
    events, search = events or Events(), config.search
    groundings = ground_all(questions, search, events)
    answers: dict[str, list[Answer]] = {}
    for side in ("base", "tuned"):
        with base_context(chat) if side == "base" else contextlib.nullcontext():
            answers[f"closed_book_{side}"] = closed_book(chat, questions.items, config, side, events)
            answers[f"rag_{side}"] = rag_answers(chat, groundings, config, side, events)
    phrases = config.refusal_phrases or metrics.DEFAULT_REFUSALS
    conditions = {name: score_condition(questions, answers[name], phrases, name.startswith("rag_"))
                  for name in CONDITIONS}
    return RagEvalResult(conditions, retrieval_metrics(questions, groundings, search.k),
                         _examples(questions, groundings, answers, phrases, search.k),
                         {name: [a.text for a in got] for name, got in answers.items()})


def ground_all(questions: Questions, search: SearchConfig, events: Events) -> list[Grounding]:
    """`ask`'s retrieval and relevance gate for every question, through the opened store."""

    def retrieve(kb: Any, query: str, **kw: Any) -> list:
        return search_kb(questions.store, query, **kw)

    out = []
    for item in questions.items:
        if events.should_stop():
            raise Stopped("evaluation stopped on request; no report was written")
        out.append(ground(item.question, search, retrieve))
        events.log("progress", done=len(out), total=len(questions.items), unit="questions retrieved")
    return out


def closed_book(chat: ChatModel, items: Sequence[QAItem], config: EvalConfig, side: str,
                events: Events) -> list[Answer]:
    """The question alone (`--system` is added by the generation config when given)."""
    prompts = [[{"role": "user", "content": item.question}] for item in items]
    return [Answer(text) for text in generate_all(chat, prompts, config, f"closed-book {side}", events)]


def rag_answers(chat: ChatModel, groundings: Sequence[Grounding], config: EvalConfig, side: str,
                events: Events) -> list[Answer]:
    """`ask`'s answers: a gated question refused without a model call, the others batched, then `finish()`."""
    asked = [g.messages for g in groundings if g.messages is not None]
    texts = iter(generate_all(chat, asked, config, f"RAG {side}", events))
    return [finish(next(texts) if g.messages is not None else "", g) for g in groundings]


# --- metrics of one answer ---------------------------------------------------------------------------


def refuses(text: str, phrases: Iterable[str] = metrics.DEFAULT_REFUSALS) -> bool:
    """`ask`'s refusal sentence, or one of the refusal phrases."""
    return is_refusal(text) or bool(metrics.refusal_rate([text], phrases))


def scored_text(text: str, phrases: Iterable[str] = metrics.DEFAULT_REFUSALS) -> str:
    """What EM/F1 compare with the reference: the prose without [n] markers and quote lines; nothing for a
    refusal, which answers nothing."""
    return "" if refuses(text, phrases) else plain_answer(text)


def quote_verdicts(text: str, hits: Sequence[Any]) -> list[bool]:
    """One per ``[n] "quote"`` line: does the quote occur word for word in chunk n of those shown?"""
    return [1 <= n <= len(hits) and find_quote(hits[n - 1].text, quote) is not None
            for n, quote in quoted_spans(text)]


def source_verdicts(text: str, n_sources: int) -> list[bool]:
    """One per source number cited (once each): is it a source the model was shown?"""
    return [1 <= n <= n_sources for n in dict.fromkeys(marker_numbers(text))]


def cited_docs(answer: Answer) -> set[str]:
    """Documents the answer cites; none when it cites nothing (its citations are then the sources consulted)."""
    return set() if answer.consulted_only else {c.doc_path for c in answer.citations}


def oracle_retrieved(item: QAItem, hits: Sequence[Any], k: int) -> bool:
    """Is the oracle among the top k hits: its chunk when the question names one, else any chunk of its doc?"""
    if item.chunk_id:
        return recall_at_k([h.chunk_id for h in hits], {item.chunk_id}, k) == 1.0
    return recall_at_k([h.doc_path for h in hits], {item.doc_path}, k) == 1.0


# --- metrics of a condition ---------------------------------------------------------------------------


CITATION_KEYS = ("citation_precision", "quote_lines", "valid_citations", "citation_recall")


def _mean(values: Iterable[float]) -> float | None:
    """A mean, or a share of True; None over nothing, so "not measured" never reads as 0."""
    got = list(values)
    return sum(got) / len(got) if got else None


def score_condition(questions: Questions, answers: Sequence[Answer], phrases: Iterable[str],
                    rag: bool) -> dict[str, Any]:
    """The condition's row; citation numbers only for answers made from retrieved sources (`rag`)."""
    items, phrases = questions.items, list(phrases)
    yes = questions.answerable
    no = sorted(set(range(len(items))) - set(yes))
    refused = [refuses(a.text, phrases) for a in answers]
    said = [scored_text(a.text, phrases) for a in answers]
    row: dict[str, Any] = {
        "n_answerable": len(yes), "n_unanswerable": len(no),
        "exact_match": _mean(metrics.exact_match(said[i], items[i].answer) for i in yes),
        "f1": _mean(metrics.token_f1(said[i], items[i].answer) for i in yes),
        "refusal_rate": _mean(refused[i] for i in no), "false_refusal_rate": _mean(refused[i] for i in yes),
    }
    return row | (citation_metrics(questions, answers) if rag else dict.fromkeys(CITATION_KEYS))


def citation_metrics(questions: Questions, answers: Sequence[Answer]) -> dict[str, Any]:
    """Quote precision and valid source numbers over every answer; recall of the oracle over answerable ones."""
    quotes = [v for a in answers for v in quote_verdicts(a.text, a.hits)]
    sources = [v for a in answers for v in source_verdicts(a.text, len(a.hits))]
    recalled = [questions.oracles[i] in cited_docs(answers[i]) for i in questions.answerable]
    return {"citation_precision": _mean(quotes), "quote_lines": len(quotes), "valid_citations": _mean(sources),
            "citation_recall": _mean(recalled)}


def retrieval_metrics(questions: Questions, groundings: Sequence[Grounding], k: int) -> dict[str, Any]:
    """Recall@k of the oracle, and the relevance gate's refusals by kind of question."""
    yes = set(questions.answerable)
    gated = [g.messages is None for g in groundings]
    found = [oracle_retrieved(questions.items[i], groundings[i].hits, k) for i in sorted(yes)]
    return {"k": k, f"recall@{k}": _mean(found), "n_answerable": len(yes),
            "gated_answerable": sum(gated[i] for i in yes),
            "gated_unanswerable": sum(g for i, g in enumerate(gated) if i not in yes),
            "n_unanswerable": len(groundings) - len(yes)}


def _examples(questions: Questions, groundings: Sequence[Grounding], answers: dict[str, list[Answer]],
              phrases: Iterable[str], k: int) -> list[dict[str, Any]]:
    """A row per question: what each condition answered, and the numbers behind the table."""
    phrases = list(phrases)
    rows = []
    for i, (item, g) in enumerate(zip(questions.items, groundings)):
        got = {name: answers[name][i] for name in CONDITIONS}
        rows.append({
            "where": item.where, "question": item.question, "reference": item.answer, "answerable": item.answerable,
            "oracle": questions.oracles[i], "retrieved": [h.doc_path for h in g.hits], "gated": g.messages is None,
            "oracle_retrieved": oracle_retrieved(item, g.hits, k) if item.answerable else None,
            "answers": {name: a.text for name, a in got.items()},
            "f1": {name: metrics.token_f1(scored_text(a.text, phrases), item.answer) if item.answerable else None
                   for name, a in got.items()},
            "refused": {name: refuses(a.text, phrases) for name, a in got.items()},
        })
    return rows
