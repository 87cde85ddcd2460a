"""Split documents into token-bounded, overlapping chunks that quote exactly.

Every chunk is a verbatim span, `document.text[start:end] == chunk.text`, so
a citation can quote it and point at it. A chunk stays inside one section
(one heading, or one PDF page) and ends at the strongest boundary that keeps
it at least half full: blank line, then line break, then sentence end, then
word. Only a single word longer than the budget is cut mid-word, at token
edges.

Speed: each section is tokenised once for token character spans (a fast
tokenizer's offset mapping); chunk sizes are then read off prefix sums over
words and ends found by binary search, and each finished chunk is counted
once more to guarantee the budget. That keeps chunking about linear in the
text, instead of re-tokenising candidate chunks while searching for a cut.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, fields
from itertools import accumulate, groupby
from typing import Protocol, runtime_checkable

import numpy as np

from inhouse.errors import InhouseError
from inhouse.rag.ingest import Document, Section

TokenCount = Callable[[str], int]

_ATOM = re.compile(r"\S+")
_WORD_TOKEN = re.compile(r"\w+|[^\w\s]")
# Whitespace after a line break (two breaks make a blank line), and after a
# sentence end: where a chunk would rather end, in that order, before any word.
_NEWLINE_GAP = re.compile(r"\n\s*")
_SENTENCE_GAP = re.compile(r"[.!?…。！？][\"'”’»)\]]*[^\S\n]+(?=\S)")
# Caps how much of a long word a plain counter is asked about at once; it
# can only make pieces smaller, never over budget.
_MAX_CHARS_PER_TOKEN = 16


HEADING_SEP = " > "


@dataclass(frozen=True)
class Chunk:
    """A quotable span of one document with the metadata a citation shows: the one shape a chunk has
    from the chunker through the store to a search hit and a RAFT example.

    `heading_path` is the section's headings joined by " > "; `mtime` and `sha256` say which version of
    the document the chunk was cut from (set once indexed)."""

    doc_path: str
    chunk_id: str
    text: str
    start: int
    end: int
    heading_path: str
    title: str
    page: int | None = None
    mtime: float | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Hit(Chunk):
    """A chunk as a search returned it. `score` is the fused RRF score (hybrid), cosine similarity
    (vector), BM25 (bm25) or the reranker's score; the ranks say where each retriever put it (None: not
    found by that one)."""

    score: float = 0.0
    vector_rank: int | None = None
    bm25_rank: int | None = None

    @property
    def chunk(self) -> Chunk:
        return Chunk(**{f.name: getattr(self, f.name) for f in fields(Chunk)})


@runtime_checkable
class SpanTokenizer(Protocol):
    """A token counter that can also say where its tokens are, as character spans.

    Chunking uses `spans` to tokenise a section once; a plain `(str) -> int`
    counter still works, at the cost of counting each distinct word separately.
    """

    def __call__(self, text: str) -> int: ...

    def spans(self, text: str) -> list[tuple[int, int]]: ...


class WordCounter:
    """Words and punctuation marks as tokens: needs no tokenizer, undercounts real ones."""

    def __call__(self, text: str) -> int:
        return len(_WORD_TOKEN.findall(text))

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD_TOKEN.finditer(text)]


word_counter = WordCounter()


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of `word_counter`'s tokens."""
    return word_counter.spans(text)


class HFTokenCounter:
    """Counts and locates tokens with a fast Hugging Face tokenizer, special tokens excluded.

    Works on a private copy of the Rust tokenizer with truncation and padding
    off: a saved truncation setting would silently undercount long sections,
    and the copy leaves the embedder's own tokenizer untouched.
    """

    def __init__(self, tokenizer):
        from tokenizers import Tokenizer

        self._backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()

    def __call__(self, text: str) -> int:
        return len(self._backend.encode(text, add_special_tokens=False).ids)

    def spans(self, text: str) -> list[tuple[int, int]]:
        return self._backend.encode(text, add_special_tokens=False).offsets


def token_counter_for(tokenizer) -> TokenCount:
    """A counter for any HF tokenizer: span-aware (fast) when it has a Rust backend."""
    if getattr(tokenizer, "is_fast", False) and getattr(tokenizer, "backend_tokenizer", None) is not None:
        try:
            return HFTokenCounter(tokenizer)
        except Exception:  # a backend with custom Python parts cannot be copied; count the slow way
            pass

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def default_token_counter(tokenizer=None) -> TokenCount:
    """The embedder's tokenizer when there is one, so budgets match what it truncates at.

    Accepts a tokenizer or an object holding one as `.tokenizer` (such as a
    SentenceTransformer); with neither, falls back to `word_counter`.
    """
    if tokenizer is None:
        return word_counter
    if not hasattr(tokenizer, "backend_tokenizer") and hasattr(tokenizer, "tokenizer"):
        tokenizer = tokenizer.tokenizer
    return token_counter_for(tokenizer)


def chunk_document(doc: Document, count_tokens: TokenCount, max_tokens: int = 256, overlap: int = 32) -> list[Chunk]:
    """Chunks of at most `max_tokens` tokens, overlapping by about `overlap`, never crossing a section."""
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise InhouseError(
            f"chunking needs max_tokens >= 1 and 0 <= overlap < max_tokens (got {max_tokens}, {overlap})")
    sections = doc.sections or [Section(0, len(doc.text))]
    costs = _Costs(count_tokens, max_tokens)
    chunks = []
    for section in sections:
        for start, end in _section_spans(doc.text, section, costs, overlap):
            text = doc.text[start:end]
            chunks.append(Chunk(
                doc_path=doc.path, chunk_id=chunk_id(doc.path, start, end, text), text=text, start=start,
                end=end, heading_path=HEADING_SEP.join(section.heading_path), title=doc.title, page=section.page,
            ))
    return chunks


def chunk_id(doc_path: str, start: int, end: int, text: str) -> str:
    """Stable across runs, so an unchanged chunk keeps its id (and its embedding) on re-index."""
    return hashlib.sha1(f"{doc_path}\0{start}\0{end}\0{text}".encode()).hexdigest()[:16]


def _section_spans(text: str, section: Section, costs: _Costs, overlap: int) -> list[tuple[int, int]]:
    """Character spans of the chunks of one section."""
    words = [m.span() for m in _ATOM.finditer(text, section.start, section.end)]
    if not words:
        return []
    atoms = costs.atoms(text, section.start, section.end, words)
    packer = _Packer(text, section, atoms, costs.count, costs.max_tokens, overlap)
    return [(atoms.starts[i], atoms.ends[k - 1]) for i, k in packer.ranges()]


@dataclass
class _Atoms:
    """The units chunks are built from: words, or pieces of a word over the budget."""

    starts: list[int]
    ends: list[int]
    costs: list[int]


class _Costs:
    """Token cost of each word of a section, with words over the budget cut into pieces."""

    def __init__(self, count: TokenCount, max_tokens: int):
        self.count, self.max_tokens = count, max_tokens
        self.has_spans = isinstance(count, SpanTokenizer)
        self.cache: dict[str, int] = {}

    def atoms(self, text: str, start: int, end: int, words: list[tuple[int, int]]) -> _Atoms:
        if self.has_spans:
            return _atoms_from_spans(text, start, end, words, self.count, self.max_tokens)
        return _atoms_from_counter(text, words, self.count, self.max_tokens, self.cache)


def _atoms_from_spans(text, start, end, words, tokenizer, max_tokens) -> _Atoms:
    """Tokenise the section once; each token counts for the word holding its last character."""
    spans = np.asarray(tokenizer.spans(text[start:end]), dtype=np.int64).reshape(-1, 2)
    token_ends = np.sort(spans[spans[:, 1] > spans[:, 0], 1]) + start
    starts = np.fromiter((s for s, _ in words), np.int64, len(words))
    owner = np.searchsorted(starts, token_ends - 1, side="right") - 1
    costs = np.bincount(owner[owner >= 0], minlength=len(words))
    atoms = _Atoms(starts.tolist(), [e for _, e in words], costs.tolist())
    long_words = np.flatnonzero(costs > max_tokens)
    if len(long_words) == 0:
        return atoms
    bounds = np.searchsorted(owner, np.stack([long_words, long_words + 1]))
    ends_of = {int(k): token_ends[lo:hi].tolist() for k, lo, hi in zip(long_words, *bounds)}
    return _split_long_words(atoms, ends_of, max_tokens)


def _split_long_words(atoms: _Atoms, token_ends_of: dict[int, list[int]], max_tokens: int) -> _Atoms:
    """Replace each over-budget word by pieces of at most `max_tokens` tokens, cut at token edges."""
    out = _Atoms([], [], [])
    for k, (s, e, cost) in enumerate(zip(atoms.starts, atoms.ends, atoms.costs)):
        ends = token_ends_of.get(k)
        cuts = _cuts(ends, max_tokens, s, e) if ends else []
        bounds = [s, *cuts, e]
        counts = [0, *(bisect_right(ends, c) for c in cuts), len(ends)] if ends else [0, cost]
        out.starts += bounds[:-1]
        out.ends += bounds[1:]
        out.costs += [b - a for a, b in zip(counts, counts[1:])]
    return out


def _cuts(token_ends: list[int], limit: int, start: int, end: int) -> list[int]:
    """Cut points splitting one word's tokens into runs of at most `limit`, never inside a character."""
    cuts, run, last = [], 0, start
    for position, group in groupby(token_ends):
        n = len(list(group))
        if run and run + n > limit:
            cuts.append(last)
            run = 0
        run, last = run + n, position
    return [c for c in cuts if start < c < end]


def _atoms_from_counter(text, words, count, max_tokens, cache) -> _Atoms:
    """Count each distinct word once; cut over-long words by binary search on the counter."""
    atoms = _Atoms([], [], [])
    for s, e in words:
        word = text[s:e]
        cost = cache.get(word)
        if cost is None:
            cost = cache[word] = count(word)
        while cost > max_tokens and s < e:
            cut = _longest_prefix(text, s, e, count, max_tokens)
            atoms.starts.append(s)
            atoms.ends.append(cut)
            atoms.costs.append(count(text[s:cut]))
            s = cut  # a remainder too long to fit is not worth counting
            cost = count(text[s:e]) if e - s <= max_tokens * _MAX_CHARS_PER_TOKEN else max_tokens + 1
        if s < e:
            atoms.starts.append(s)
            atoms.ends.append(e)
            atoms.costs.append(cost)
    return atoms


def _longest_prefix(text, start, end, count, max_tokens) -> int:
    """Largest cut such that text[start:cut] fits the budget (at least one character)."""
    lo, hi = start + 1, min(end, start + max_tokens * _MAX_CHARS_PER_TOKEN)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if count(text[start:mid]) <= max_tokens else (lo, mid - 1)
    return lo


class _Packer:
    """Greedy packing of atoms into chunks, sized by prefix sums of their token costs."""

    def __init__(self, text: str, section: Section, atoms: _Atoms, count: TokenCount, max_tokens: int,
                 overlap: int):
        self.text, self.atoms, self.count = text, atoms, count
        self.max, self.overlap = max_tokens, overlap
        self.cum = list(accumulate(atoms.costs, initial=0))
        self.boundaries = _boundaries(text, section, atoms.starts)

    def ranges(self) -> list[tuple[int, int]]:
        """Atom index ranges [i, k) of consecutive chunks."""
        n, i, reached, out = len(self.atoms.starts), 0, 0, []
        while True:
            k = self._shrink_to_fit(i, self._end(i))
            if k <= reached:  # shrunk to nothing new (the estimate was low): start later instead
                i += 1
                continue
            out.append((i, k))
            if k >= n:
                return out
            i, reached = self._next_start(i, k), k

    def _end(self, i: int) -> int:
        """The last strongest boundary among the ends that leave the chunk at least half full."""
        cum, n = self.cum, len(self.atoms.starts)
        last = max(i + 1, bisect_right(cum, cum[i] + self.max, lo=i + 1) - 1)
        if last >= n:
            return n
        first = min(last, bisect_left(cum, cum[i] + self.max // 2, lo=i + 1))
        for ks in self.boundaries:
            at = bisect_right(ks, last) - 1
            if at >= 0 and ks[at] >= first:
                return ks[at]
        starts, ends = self.atoms.starts, self.atoms.ends
        return next((k for k in range(last, first - 1, -1) if ends[k - 1] != starts[k]), last)

    def _shrink_to_fit(self, i: int, k: int) -> int:
        """Drop trailing atoms while the real count is over budget (estimates can be off at the edges)."""
        while k - i > 1:
            excess = self.count(self.text[self.atoms.starts[i]:self.atoms.ends[k - 1]]) - self.max
            if excess <= 0:
                break
            k = max(i + 1, min(k - 1, bisect_right(self.cum, self.cum[k] - excess, lo=i + 1, hi=k) - 1))
        return k

    def _next_start(self, i: int, k: int) -> int:
        """Start about `overlap` tokens before k, yet late enough that the next chunk reaches past k."""
        cum = self.cum
        start = bisect_left(cum, cum[k] - self.overlap, lo=i + 1, hi=k)
        return bisect_left(cum, cum[k + 1] - self.max, lo=start, hi=k)


def _boundaries(text: str, section: Section, starts: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Indices of the atoms that follow a blank line, a line break, and a sentence end, strongest first.

    Found by regex over the section once, so picking a chunk's end is a
    binary search instead of a scan over every word.
    """
    paragraph: list[int] = []
    line: list[int] = []
    sentence: list[int] = []
    for m in _NEWLINE_GAP.finditer(text, section.start, section.end):
        if k := _atom_at(starts, m.end()):
            (paragraph if m.group().count("\n") > 1 else line).append(k)
    for m in _SENTENCE_GAP.finditer(text, section.start, section.end):
        if k := _atom_at(starts, m.end()):
            sentence.append(k)
    return paragraph, line, sentence


def _atom_at(starts: list[int], position: int) -> int:
    """Index of the atom starting at `position`; 0 when none does, or it is the first (no gap before)."""
    k = bisect_left(starts, position)
    return k if 0 < k < len(starts) and starts[k] == position else 0
