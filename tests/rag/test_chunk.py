"""Chunking: exact quotes on every format, sections respected, budgets, overlap, stable ids."""

import re

import pytest
from rag.test_ingest import write_good

from inhouse.errors import InhouseError
from inhouse.model.tiny import build_tokenizer
from inhouse.rag.chunk import (
    SpanTokenizer, chunk_document, chunk_id, default_token_counter, token_counter_for, word_counter,
)
from inhouse.rag.ingest import Document, Section, ingest

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def make_doc(text, sections=None, path="doc.txt"):
    return Document(path=path, title="Doc", text=text, mtime=0.0, sha256="", format="txt",
                    sections=sections if sections is not None else [Section(0, len(text))])


def prose(paragraphs=12, sentences=5, words=9):
    """Deterministic text with paragraphs and sentences; every word is one word_counter token."""
    out, n = [], 0
    for _ in range(paragraphs):
        sents = []
        for _ in range(sentences):
            sents.append(" ".join(WORDS[(n + i) % len(WORDS)] for i in range(words)).capitalize() + ".")
            n += 1
        out.append(" ".join(sents))
    return "\n\n".join(out)


def assert_covers(doc, chunks):
    """Every non-space character of every section lands in some chunk: nothing is lost."""
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    for section in doc.sections:
        assert all(i in covered for i in range(section.start, section.end) if not doc.text[i].isspace())


def assert_quotes_exactly(doc, chunks):
    for chunk in chunks:
        assert doc.text[chunk.start:chunk.end] == chunk.text
        assert chunk.text.strip() == chunk.text and chunk.text
        inside = [s for s in doc.sections if s.start <= chunk.start and chunk.end <= s.end]
        assert len(inside) == 1, "a chunk must not cross a section"
        assert chunk.heading_path == " > ".join(inside[0].heading_path)
        assert chunk.page == inside[0].page
        assert chunk.title == doc.title and chunk.doc_path == doc.path


@pytest.mark.parametrize("max_tokens,overlap", [(6, 2), (40, 8), (256, 32)])
def test_offsets_quote_exactly_on_every_format(tmp_path, max_tokens, overlap):
    write_good(tmp_path)
    docs = ingest(tmp_path).documents
    assert {d.format for d in docs} == {"txt", "md", "html", "pdf", "docx"}
    for doc in docs:
        chunks = chunk_document(doc, word_counter, max_tokens=max_tokens, overlap=overlap)
        assert chunks, doc.format
        assert_quotes_exactly(doc, chunks)
        assert_covers(doc, chunks)
        assert all(word_counter(c.text) <= max_tokens for c in chunks)


def test_heading_path_and_page_reach_the_chunks(tmp_path):
    write_good(tmp_path)
    docs = {d.format: d for d in ingest(tmp_path).documents}
    md = chunk_document(docs["md"], word_counter, max_tokens=50, overlap=5)
    linux = next(c for c in md if "Use apt." in c.text)
    assert linux.heading_path == "Installing > On Linux"
    assert linux.text.startswith("## On Linux")
    html = chunk_document(docs["html"], word_counter, max_tokens=50, overlap=5)
    assert next(c for c in html if "30 days" in c.text).heading_path == "Handbook > Holidays"
    pdf = chunk_document(docs["pdf"], word_counter, max_tokens=50, overlap=5)
    assert [(c.page, c.text) for c in pdf] == [(1, "Revenue grew.\nCosts fell."), (2, "Outlook is good.")]


def test_max_tokens_respected_and_chunks_fairly_full():
    doc = make_doc(prose())
    chunks = chunk_document(doc, word_counter, max_tokens=64, overlap=8)
    counts = [word_counter(c.text) for c in chunks]
    assert max(counts) <= 64
    assert min(counts[:-1]) >= 32  # every chunk but the last is at least half full
    assert_quotes_exactly(doc, chunks)


def test_consecutive_chunks_overlap_by_about_overlap_tokens():
    doc = make_doc(prose())
    chunks = chunk_document(doc, word_counter, max_tokens=64, overlap=10)
    assert len(chunks) > 3
    for prev, nxt in zip(chunks, chunks[1:]):
        assert prev.start < nxt.start < prev.end < nxt.end
        shared = doc.text[nxt.start:prev.end]
        assert 8 <= word_counter(shared) <= 10
        assert doc.text[nxt.start - 1].isspace()  # overlap starts on a word boundary


def test_zero_overlap_tiles_the_text():
    doc = make_doc(prose())
    chunks = chunk_document(doc, word_counter, max_tokens=64, overlap=0)
    for prev, nxt in zip(chunks, chunks[1:]):
        assert doc.text[prev.end:nxt.start].strip() == ""
    assert " ".join(c.text for c in chunks).split() == doc.text.split()


def test_prefers_paragraph_then_sentence_boundaries():
    doc = make_doc(prose(paragraphs=8, sentences=3, words=9))  # 30 tokens per paragraph
    for chunk in chunk_document(doc, word_counter, max_tokens=64, overlap=0)[:-1]:
        assert doc.text[chunk.end:chunk.end + 2] == "\n\n"
    one_paragraph = make_doc(prose(paragraphs=1, sentences=20, words=9))
    for chunk in chunk_document(one_paragraph, word_counter, max_tokens=64, overlap=0):
        assert chunk.text.endswith(".")


def test_chunks_never_cross_sections_and_blank_sections_are_dropped():
    text = "one two three\n\n   \n\nfour five six seven"
    sections = [Section(0, 15, ("A",)), Section(15, 20, ("B",)), Section(20, len(text), ("C",))]
    chunks = chunk_document(make_doc(text, sections), word_counter, max_tokens=100, overlap=4)
    assert [(c.heading_path, c.text) for c in chunks] == [("A", "one two three"), ("C", "four five six seven")]


def test_word_longer_than_budget_is_hard_split_at_token_edges():
    counter = token_counter_for(build_tokenizer())  # byte-level: one token per UTF-8 byte
    word = "é" * 150 + "x" * 100  # 400 tokens; "é" is two, which one cut must not separate
    doc = make_doc(f"start {word} end")
    chunks = chunk_document(doc, counter, max_tokens=64, overlap=8)
    assert_quotes_exactly(doc, chunks)
    assert_covers(doc, chunks)
    assert all(counter(c.text) <= 64 for c in chunks)
    assert any(set(c.text) == {"é"} for c in chunks)  # cut mid-word


def test_plain_callable_counter_works_too():
    def count_bytes(text):
        return len(text.encode())

    assert not isinstance(count_bytes, SpanTokenizer)
    doc = make_doc(prose(paragraphs=3) + "\n\n" + "z" * 300)
    chunks = chunk_document(doc, count_bytes, max_tokens=80, overlap=10)
    assert_quotes_exactly(doc, chunks)
    assert_covers(doc, chunks)
    assert all(count_bytes(c.text) <= 80 for c in chunks)
    assert any(set(c.text) == {"z"} for c in chunks)


def test_hf_token_counter_matches_the_tokenizer_and_chunks_within_budget():
    tokenizer = build_tokenizer()
    counter = token_counter_for(tokenizer)
    assert isinstance(counter, SpanTokenizer)
    sample = "Grüße, 世界! 🙂 plain words"
    assert counter(sample) == len(tokenizer(sample, add_special_tokens=False)["input_ids"])
    assert all(0 <= s <= e <= len(sample) for s, e in counter.spans(sample))
    doc = make_doc((sample + " ") * 60)
    chunks = chunk_document(doc, counter, max_tokens=48, overlap=6)
    assert len(chunks) > 5
    assert_quotes_exactly(doc, chunks)
    assert all(counter(c.text) <= 48 for c in chunks)


def test_default_token_counter():
    assert default_token_counter() is word_counter
    tokenizer = build_tokenizer()

    class Embedder:  # e.g. a SentenceTransformer: the tokenizer hangs off the model
        pass

    embedder = Embedder()
    embedder.tokenizer = tokenizer
    for source in (tokenizer, embedder):
        assert default_token_counter(source)("héllo") == 6


def test_chunk_ids_are_deterministic_and_distinct(tmp_path):
    doc = make_doc(prose())
    first = chunk_document(doc, word_counter, max_tokens=40, overlap=8)
    again = chunk_document(doc, word_counter, max_tokens=40, overlap=8)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    assert len({c.chunk_id for c in first}) == len(first)
    assert all(re.fullmatch(r"[0-9a-f]{16}", c.chunk_id) for c in first)
    c = first[0]
    assert c.chunk_id == chunk_id(c.doc_path, c.start, c.end, c.text)
    assert chunk_id("other.txt", c.start, c.end, c.text) != c.chunk_id


@pytest.mark.parametrize("max_tokens,overlap", [(0, 0), (10, 10), (10, -1)])
def test_bad_budget_is_a_user_error(max_tokens, overlap):
    with pytest.raises(InhouseError, match="overlap"):
        chunk_document(make_doc("a b c"), word_counter, max_tokens=max_tokens, overlap=overlap)
