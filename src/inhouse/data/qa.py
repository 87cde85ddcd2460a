"""Question/answer files for retrieval-aware work: RAFT training data and the RAG evaluation.

One JSON object per line:

    {"question": "How often are the P-200's seals replaced?", "answer": "Every 6 months.",
     "doc_path": "manual/pumps.md", "quote": "Its seals are replaced every 6 months.", "chunk_id": "..."}

`question` is required. `answer` is required unless `"answerable": false` (a question whose answer is
not in the knowledge base: the right reply is a refusal), or unless the reader needs none (tuning an
embedder needs only questions and passages: `need_answer=False`). `doc_path` (the document, as the
knowledge base names it: relative to the indexed folder) or `chunk_id` locates the oracle passage of an
answerable question, or `passage` (alias `text`) gives its text outright; `quote`, optional, is the
passage's sentence the answer rests on, word for word. Other keys (id, topic, ...) ride along in `meta`.
Every problem is a `Problem` naming file:line and field; `load_qa` raises on them as one line each, so
nothing is dropped without a word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inhouse.data.conversation import Problem
from inhouse.data.read import read_records
from inhouse.errors import InvalidInputError
from inhouse.paths import shown

TEXT_FIELDS = ("question", "answer", "doc_path", "chunk_id", "quote", "passage")
ALIASES = {"text": "passage"}
KNOWN = frozenset({*TEXT_FIELDS, *ALIASES, "answerable"})
SHOWN_PROBLEMS = 5


@dataclass(frozen=True)
class QAItem:
    """One question; `where` is file:line, so every later report can point back at it."""

    question: str
    answer: str
    where: str
    doc_path: str | None = None
    chunk_id: str | None = None
    quote: str | None = None
    answerable: bool = True
    passage: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def as_json(self) -> dict[str, Any]:
        """The line this item is written back as (held-out files use the same format they were read in)."""
        out: dict[str, Any] = {"question": self.question}
        if self.answer:
            out["answer"] = self.answer
        out |= {k: getattr(self, k) for k in ("doc_path", "chunk_id", "quote", "passage") if getattr(self, k)}
        if not self.answerable:
            out["answerable"] = False
        return out | {k: v for k, v in self.meta.items() if k not in out}


def read_qa(path: str | Path, need_answer: bool = True) -> tuple[list[QAItem], list[Problem]]:
    """Every line as a QAItem or a Problem."""
    items, problems = [], []
    source = shown(path)
    for rec in read_records(path):
        if rec.problem is not None:
            problems.append(rec.problem)
            continue
        item = parse_item(rec.value, source, rec.line, need_answer)
        (problems if isinstance(item, Problem) else items).append(item)
    return items, problems


def load_qa(path: str | Path, need_answer: bool = True) -> list[QAItem]:
    """The items of a QA file; any bad line fails the whole file, each problem on a line of the error."""
    items, problems = read_qa(path, need_answer)
    fail_on(problems)
    if not items:
        raise InvalidInputError(f"{shown(path)}: no questions in the file")
    return items


def problems_error(problems: list[Problem]) -> InvalidInputError:
    """One line per problem (the first SHOWN_PROBLEMS, then how many more)."""
    more = len(problems) - SHOWN_PROBLEMS
    lines = [str(p) for p in problems[:SHOWN_PROBLEMS]] + ([f"... and {more} more"] if more > 0 else [])
    return InvalidInputError("\n".join(lines))


def fail_on(problems: list[Problem]) -> None:
    """Raise one error listing the problems, if there are any."""
    if problems:
        raise problems_error(problems)


def parse_item(value: Any, source: str, line: int, need_answer: bool = True) -> QAItem | Problem:
    def bad(fld: str, message: str) -> Problem:
        return Problem("invalid_value" if fld else "invalid_line", source, line, message, fld)

    if not isinstance(value, dict):
        return bad("", f"expected a JSON object with a question, got {type(value).__name__}")
    value = {ALIASES.get(k, k): v for k, v in value.items()}
    for key in TEXT_FIELDS:
        if key in value and value[key] is not None and not isinstance(value[key], str):
            return bad(key, f"must be a string, got {type(value[key]).__name__}")
    answerable = value.get("answerable", True)
    if not isinstance(answerable, bool):
        return bad("answerable", f"must be true or false, got {answerable!r}")
    text = {k: (value.get(k) or "").strip() for k in TEXT_FIELDS}
    if not text["question"]:
        return bad("question", "missing or empty")
    if answerable and need_answer and not text["answer"]:
        return bad("answer", 'missing or empty (a question the documents cannot answer says "answerable": false)')
    if answerable and not (text["doc_path"] or text["chunk_id"] or text["passage"]):
        return bad("doc_path", "an answerable question needs the document (doc_path) or chunk (chunk_id) "
                               "its answer comes from, or the passage itself (passage)")
    meta = {k: v for k, v in value.items() if k not in KNOWN}
    return QAItem(text["question"], text["answer"], f"{source}:{line}", text["doc_path"] or None,
                  text["chunk_id"] or None, text["quote"] or None, answerable, text["passage"] or None, meta)
