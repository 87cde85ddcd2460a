"""(question, passage) pairs to tune an embedder on: from a QA file, or made from a knowledge base's chunks.

A QA file is the project's (`inhouse.data.qa`): JSONL (or a JSON array) with `question` and the passage
that answers it, given as `passage` (or `text`), or looked up in the knowledge base by `chunk_id`, or by
`doc_path` (then the document's chunk holding its `quote`, else the one that matches the question best by
BM25, else its first); an `answer` may be there and is not needed. Bad lines are one error naming
file:line and the field of each.

Synthetic pairs need no questions: every chunk gives up to two, each a pseudo-query and the rest
of the chunk as its passage.

- `title`: the chunk's heading path, else its document's title, else the document's first line
  when that is short (a plain-text title line) -> the chunk.
- `sentence`: one sentence of the chunk (seeded choice), removed from it -> the rest (the
  inverse cloze task: a statement and the context it came from).

A pseudo-query is always cut out of its passage, together with any sentence that repeats it (an
abstract often restates its title): a pair that copying solves teaches nothing BM25 does not
already do. Pairs whose passage is left too short are dropped.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from inhouse.data.conversation import Problem
from inhouse.data.qa import fail_on, load_qa
from inhouse.errors import InvalidInputError
from inhouse.rag.chunk import HEADING_SEP

PAIR_KINDS = ("title", "sentence")
MIN_QUERY_WORDS = 2  # a title or heading
MIN_SENTENCE_WORDS = 5  # a sentence as a query: shorter ones say too little
MAX_QUERY_WORDS = 40
MIN_PASSAGE_WORDS = 12
REPEAT_OVERLAP = 0.8  # a sentence with this share of its words in the query repeats it
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n\s*")


@dataclass(frozen=True)
class Pair:
    """One training example: a query and the passage it should retrieve. `kind` is qa, title or sentence;
    `origin` says where it came from (`file:line` of a QA file, or the chunk_id)."""

    query: str
    passage: str
    kind: str
    origin: str


# --- QA files --------------------------------------------------------------------------------------


def qa_pairs(path: str | os.PathLike, lookup: Callable[[Any], str | None]) -> list[Pair]:
    """The questions of a QA file (`inhouse.data.qa`; no answers needed) as Pairs; `lookup(item)` finds the
    passage of a line that points at the knowledge base (`chunk_id`, `doc_path`) instead of giving it
    (None: not there). Questions marked "answerable": false have no passage and are left out."""
    pairs, problems = [], []
    for item in (i for i in load_qa(path, need_answer=False) if i.answerable):
        passage = item.passage or lookup(item)
        if passage is None:
            source, line = item.where.rsplit(":", 1)
            field = "chunk_id" if item.chunk_id else "doc_path"
            problems.append(Problem("invalid_value", source, int(line), f"{getattr(item, field)!r} is not in the "
                                    "knowledge base (index the document first, or give the passage)", field))
        else:
            pairs.append(Pair(item.question, passage, "qa", item.where))
    fail_on(problems)
    return pairs


# --- synthetic pairs -------------------------------------------------------------------------------


def synthetic_pairs(chunks: Iterable[Any], kinds: Sequence[str] = PAIR_KINDS, seed: int = 0) -> list[Pair]:
    """Pairs made from chunks (objects with doc_path, chunk_id, text, start, heading_path, title), in a
    seeded order that does not depend on the order the chunks come in."""
    unknown = sorted(set(kinds) - set(PAIR_KINDS))
    if unknown:
        raise InvalidInputError(f"unknown pair kind(s) {', '.join(unknown)}; kinds: {', '.join(PAIR_KINDS)}")
    by_doc: dict[str, list[Any]] = {}
    for chunk in chunks:
        by_doc.setdefault(chunk.doc_path, []).append(chunk)
    pairs = []
    for doc_path in sorted(by_doc):
        doc = sorted(by_doc[doc_path], key=lambda c: (c.start, c.chunk_id))
        title = doc_title(doc)
        for chunk in doc:
            rng = random.Random(f"{seed}:{chunk.chunk_id}")
            if "title" in kinds:
                pairs += _title_pair(chunk, title)
            if "sentence" in kinds:
                pairs += _sentence_pair(chunk, title, rng)
    random.Random(seed).shuffle(pairs)
    return pairs


def doc_title(chunks: Sequence[Any]) -> str | None:
    """A document's title when it has a real one: its own (a file name is none), or its first line when
    that line is short and a blank line follows it (the title line of a plain-text file)."""
    first = chunks[0]
    title = " ".join((first.title or "").split())
    if title and title != PurePosixPath(first.doc_path).stem and _words(title) >= MIN_QUERY_WORDS:
        return title
    if first.start != 0:
        return None
    blocks = _BLANK_LINE.split(first.text.strip(), maxsplit=1)
    line = " ".join(blocks[0].split())
    alone = len(blocks) == 2 and "\n" not in blocks[0]  # a line of its own, with a blank line after it
    return line if alone and MIN_QUERY_WORDS <= _words(line) <= MAX_QUERY_WORDS else None


def _title_pair(chunk: Any, title: str | None) -> list[Pair]:
    heading = _heading(chunk.heading_path)
    query = heading if heading and _words(heading) >= MIN_QUERY_WORDS else title
    if not query:
        return []
    return _pair(query, _without(chunk.text, query), "title", chunk.chunk_id)


def _sentence_pair(chunk: Any, title: str | None, rng: random.Random) -> list[Pair]:
    """Any sentence but a heading or the title (those are the title pair's)."""
    parts = sentences(chunk.text)
    taken = [_bag(t) for t in (title, _heading(chunk.heading_path)) if t]
    fit = [s for s in parts if MIN_SENTENCE_WORDS <= _words(s) <= MAX_QUERY_WORDS
           and all(_share(_bag(s), t) < REPEAT_OVERLAP for t in taken)]
    if len(parts) < 3 or not fit:
        return []
    query = rng.choice(fit)
    return _pair(query, _without(chunk.text, query), "sentence", chunk.chunk_id)


def _pair(query: str, passage: str, kind: str, origin: str) -> list[Pair]:
    return [Pair(query, passage, kind, origin)] if _words(passage) >= MIN_PASSAGE_WORDS else []


def sentences(text: str) -> list[str]:
    """The sentences of text, whitespace collapsed; a paragraph (or a heading line) set off by blank lines
    ends one too, and a line break inside a paragraph is a space (text wrapped by hand)."""
    return [" ".join(s.split()) for block in _BLANK_LINE.split(text) for s in _SENTENCE_END.split(block) if s.strip()]


def _without(text: str, query: str) -> str:
    """The text less every sentence that repeats the query: the query itself, a restatement, a heading line."""
    q = _bag(query)
    return " ".join(s for s in sentences(text) if _share(_bag(s), q) < REPEAT_OVERLAP)


def _bag(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _share(part: set[str], whole: set[str]) -> float:
    """How much of `part`'s words are in `whole`."""
    return len(part & whole) / len(part) if part else 1.0


def _heading(heading_path: Any) -> str:
    parts = heading_path.split(HEADING_SEP) if isinstance(heading_path, str) else list(heading_path or ())
    return ": ".join(p.strip() for p in parts if p and p.strip())


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def pairs_digest(pairs: Sequence[Pair]) -> str:
    """sha256 of the pairs as trained on, so a lineage pins the exact data."""
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(f"{p.query}\0{p.passage}\n".encode())
    return digest.hexdigest()


def count_by_kind(pairs: Sequence[Pair]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return counts
