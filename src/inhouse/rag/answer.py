"""Grounded answers: retrieve, prompt with numbered sources, generate, cite exact spans.

The model only sees the retrieved chunks and is told to answer from them,
cite them as [1], [2], and otherwise say `REFUSAL` word for word. When the
knowledge base holds nothing close to the question, the model is not
called at all: a small model asked to answer from irrelevant sources
invents an answer more often than it refuses.

Relevance gate: the cosine similarity between the question and the most
similar chunk in the knowledge base (a vector search, k=1). Unlike a
hybrid RRF score or a BM25 score it means the same thing whatever the
search mode and corpus size. Calibrated on Cranfield with all-MiniLM-L6-v2
(bench/rag_cranfield.py, docs/benchmarks.md): the 225 real queries have a
best similarity of 0.35-0.94 (1st percentile 0.48); 28 off-topic questions
(HR policy, recipes, sport, IT help) 0.10-0.21, except two general-knowledge
ones ("capital of France" 0.30, "boiling point of water" 0.33). At the default 0.30 no real query is
refused and 26 of 28 off-topic ones are, without calling the model; the
rest is left to the prompt's refusal instruction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inhouse.generation import GenerationConfig
from inhouse.rag.config import SearchConfig

REFUSAL = "I cannot find the answer in the provided documents."
QUOTE_CHARS = 240  # a displayed quote is shortened to about this, with an ellipsis

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources the user gives you. "
    "Do not use any other knowledge. After each statement, cite the sources it comes from by "
    "their numbers in square brackets, like [1] or [2][3]. "
    f"If the sources do not contain the answer, reply exactly: {REFUSAL}"
)


class ChatModel(Protocol):
    def reply(self, messages: list[dict[str, str]], config: GenerationConfig | None = None) -> str: ...


@dataclass(frozen=True)
class Citation:
    """Source n of the prompt, quoted exactly: ``document.text[start:end] == quote``."""

    n: int
    doc_path: str
    quote: str
    start: int
    end: int
    title: str = ""
    heading_path: str = ""
    page: int | None = None


@dataclass
class Answer:
    """``consulted_only``: the model cited nothing, so the citations are every source it was shown."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    refused: bool = False
    hits: list[Any] = field(default_factory=list)
    similarity: float | None = None
    consulted_only: bool = False


@dataclass
class Grounding:
    """What the model will be shown for a question: the hits and the messages, or None when the
    knowledge base holds nothing close enough (then the answer is a refusal without a model call)."""

    question: str
    hits: list[Any]
    similarity: float | None
    messages: list[dict[str, str]] | None


def ground(question: str, search: SearchConfig, retrieve: Callable[..., list] | None = None,
           embedder: Any = None) -> Grounding:
    """Retrieve, apply the relevance gate and build the prompt (the same for ask, the server and RAFT).

    ``retrieve`` defaults to `inhouse.rag.search.search` (tests pass a stub).
    """
    if retrieve is None:
        from inhouse.rag.search import search as retrieve
    extra = {"embedder": embedder} if embedder is not None else {}
    hits = list(retrieve(search.kb, question, **search.search_kwargs(), **extra))
    similarity = best_similarity(search, question, hits, retrieve, extra) if hits else None
    if similarity is None or similarity < search.min_similarity:
        return Grounding(question, hits, similarity, None)
    return Grounding(question, hits, similarity, build_messages(question, hits))


def finish(text: str, grounding: Grounding) -> Answer:
    """The model's text as an Answer: a refusal, or the text with citations quoting exact spans."""
    hits, similarity = grounding.hits, grounding.similarity
    if grounding.messages is None or is_refusal(text):
        return Answer(REFUSAL, refused=True, hits=hits, similarity=similarity)
    text = text.strip()
    cited = cited_numbers(text, len(hits))
    quoted = dict(reversed(quoted_spans(text)))  # n -> the first quote given for source n
    citations = [cite(n, hits[n - 1], text, quoted.get(n)) for n in (cited or range(1, len(hits) + 1))]
    return Answer(text, citations, False, hits, similarity, consulted_only=not cited)


def answer(question: str, chat_model: ChatModel, search: SearchConfig, generation: GenerationConfig | None = None,
           retrieve: Callable[..., list] | None = None, embedder: Any = None) -> Answer:
    """Answer `question` from knowledge base `search.kb`, or refuse without calling the model."""
    grounding = ground(question, search, retrieve, embedder)
    if grounding.messages is None:
        return finish("", grounding)
    return finish(chat_model.reply(grounding.messages, generation), grounding)


def best_similarity(search: SearchConfig, question: str, hits: Sequence[Any], retrieve: Callable[..., list],
                    extra: dict) -> float | None:
    """Cosine of the question with its nearest chunk; a vector search already has it as hits[0].score."""
    if search.mode == "vector" and not search.reranker:
        return float(hits[0].score) if hits else None
    best = retrieve(search.kb, question, k=1, mode="vector", where=search.where, **extra)
    return float(best[0].score) if best else None


def gate_verdict(search: SearchConfig, question: str, hits: Sequence[Any],
                 retrieve: Callable[..., list] | None = None) -> str:
    """What `ask` would do with these hits, so --min-similarity can be tuned with `rag search`."""
    if retrieve is None:
        from inhouse.rag.search import search as retrieve
    best = best_similarity(search, question, hits, retrieve, {}) if hits else None
    if best is None:
        return "no chunk to compare: ask would refuse"
    answers = best >= search.min_similarity
    return (f"best cosine similarity {best:.4f} {'>=' if answers else '<'} --min-similarity "
            f"{search.min_similarity:g}: ask would {'answer' if answers else 'refuse'}")


def build_messages(question: str, hits: Sequence[Any]) -> list[dict[str, str]]:
    """System rules, then the numbered sources and the question in one user turn."""
    sources = "\n\n".join(_source(n, h) for n, h in enumerate(hits, 1))
    user = f"Sources:\n\n{sources}\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _source(n: int, hit: Any) -> str:
    """``[n] title > heading`` then the chunk text: headings tell the model what the chunk is about."""
    return f"[{n}] {_label(hit)}\n{hit.text.strip()}"


def _label(hit: Any) -> str:
    """Title and heading path, without repeating a title the heading path already starts with."""
    title, heading = getattr(hit, "title", "") or "", getattr(hit, "heading_path", "") or ""
    if heading and title and heading.split(" > ")[0] == title:
        title = ""
    return " > ".join(p for p in (title, heading) if p) or str(hit.doc_path)


def is_refusal(text: str) -> bool:
    """The model refused if it said the refusal sentence (small models add words around it)."""
    norm = " ".join(text.lower().split())
    return REFUSAL.lower().rstrip(".") in norm


_MARK = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")


def cited_numbers(text: str, n_sources: int) -> list[int]:
    """Source numbers cited as [2], [1, 3] or [1][2], in order of first mention; out-of-range ones dropped."""
    seen: list[int] = []
    for m in _MARK.finditer(text):
        for part in re.split(r"[,;]", m.group(1)):
            n = int(part)
            if 1 <= n <= n_sources and n not in seen:
                seen.append(n)
    return seen


_QUOTE_LINE = re.compile(r'^\[(\d+)\][ \t]*"(.+)"[ \t]*$', re.M)


def quoted_answer(answer: str, quotes: Sequence[tuple[int, str]]) -> str:
    """An answer that cites its sources and quotes them word for word: RAFT's training target.

    ``The pump needs new seals every 6 months [2].`` then, per source, a line ``[2] "Seals last 6
    months."``. The markers are the ones `ask` reads; `quoted_spans` reads the quotes back.
    """
    lines = [f'[{n}] "{" ".join(q.split())}"' for n, q in quotes]
    return answer.strip() + ("\n\n" + "\n".join(lines) if lines else "")


def find_quote(text: str, quote: str | None) -> tuple[int, int] | None:
    """(start, end) of `quote` in `text`, word for word with any whitespace between words (a quote is
    written on one line; the chunk may break it); None when it is not there."""
    words = (quote or "").split()
    if not words:
        return None
    m = re.search(r"\s+".join(map(re.escape, words)), text)
    return (m.start(), m.end()) if m else None


def quoted_spans(text: str) -> list[tuple[int, str]]:
    """(source number, quote) for each ``[n] "..."`` line of an answer, in order."""
    return [(int(m.group(1)), m.group(2)) for m in _QUOTE_LINE.finditer(text)]


_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)", re.M)
_HEADING = re.compile(r"\s*#{1,6}\s")
_WORD = re.compile(r"\w+")
# Shared function words say nothing about where an answer came from.
_STOP = frozenset("a an and are as at be by for from has have in is it its of on or that the this to was were "
                  "which with not no can do does".split())


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower())) - _STOP


def cite(n: int, hit: Any, answer_text: str, quote: str | None = None) -> Citation:
    """The span the answer quotes from the chunk when it occurs there word for word (as a RAFT-trained
    model writes it), else the sentence of the chunk that shares most words with the answer, as an exact
    document span.

    Chunk text is a verbatim span starting at ``hit.start``, so a sentence at
    offset ``i`` of the chunk is ``document.text[hit.start + i : ...]``.
    """
    i, j = find_quote(hit.text, quote) or _best_sentence(hit.text, _words(answer_text))
    return Citation(n, str(hit.doc_path), hit.text[i:j], hit.start + i, hit.start + j,
                    getattr(hit, "title", ""), getattr(hit, "heading_path", ""), getattr(hit, "page", None))


def _best_sentence(text: str, words: set[str]) -> tuple[int, int]:
    """(start, end) in `text` of the best-overlapping sentence, spaces trimmed.

    Markdown heading lines are never the quote. With no overlap at all (an
    uncited source) the quote is the whole chunk after its headings.
    """
    best, span, body = 0, None, None
    for m in _SENTENCE.finditer(text):
        piece = m.group(0)
        if not piece.strip() or _HEADING.match(piece):
            continue
        lead = len(piece) - len(piece.lstrip())
        body = m.start() + lead if body is None else body
        overlap = len(words & _words(piece))
        if overlap > best:
            best, span = overlap, (m.start() + lead, m.start() + len(piece.rstrip()))
    if span is None:
        return (body, len(text.rstrip())) if body is not None else (0, len(text))
    return span


def shorten(quote: str, limit: int = QUOTE_CHARS) -> str:
    """One line, cut at a word with an ellipsis: for display only, never for the stored quote."""
    flat = " ".join(quote.split())
    if len(flat) <= limit:
        return flat
    return flat[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def format_answer(ans: Answer) -> str:
    """The answer, then numbered sources with their path and quoted span, for the terminal."""
    if ans.refused:
        return ans.text
    head = "Sources consulted (the answer cites none):" if ans.consulted_only else "Sources:"
    lines = [ans.text, "", head]
    for c in ans.citations:
        where = c.doc_path + (f", page {c.page}" if c.page else "")
        where += f" ({c.heading_path})" if c.heading_path else ""
        lines.append(f"[{c.n}] {where}, chars {c.start}-{c.end}")
        lines.append(f'    "{shorten(c.quote)}"')
    return "\n".join(lines)
