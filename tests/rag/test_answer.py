"""Grounded answers with a stub search: refusal gate, prompt, citations that quote exact spans."""

from __future__ import annotations

from dataclasses import replace

import pytest

from inhouse.rag.config import SearchConfig
from inhouse.rag.search import Hit
from inhouse.rag.answer import (
    REFUSAL, SYSTEM_PROMPT, answer, build_messages, cited_numbers, find_quote, format_answer, is_refusal,
    quoted_answer, quoted_spans, shorten,
)

DOCS = {
    "manual/pumps.md": "# Pumps\n\nThe P-200 pump runs at 3,000 rpm. Its seals are replaced every 6 months.\n"
                       "Never run it dry. Lubricate the bearings yearly.\n",
    "manual/valves.md": "# Valves\n\nValve V-7 opens at 4 bar. It is tested weekly by the night shift.\n",
}


def hit(path: str, start_marker: str, score: float, heading: str = "") -> Hit:
    """A chunk that is a verbatim span of DOCS[path], from `start_marker` to the end."""
    text = DOCS[path]
    start = text.index(start_marker)
    return Hit(chunk_id=f"{path}#{start}", doc_path=path, title=path.split("/")[1].split(".")[0].title(),
               heading_path=heading, text=text[start:], start=start, end=len(text), score=score)


HITS = [hit("manual/pumps.md", "The P-200", 0.031, "Pumps > Maintenance"), hit("manual/valves.md", "Valve V-7", 0.029)]


class StubSearch:
    """search() stand-in: `similarity` is what a vector search reports for the nearest chunk."""

    def __init__(self, hits, similarity):
        self.hits, self.similarity, self.calls = hits, similarity, []

    def __call__(self, kb, query, k=5, mode="hybrid", where=None, **kw):
        self.calls.append({"kb": kb, "query": query, "k": k, "mode": mode, "where": where, **kw})
        if mode == "vector":
            return [replace(h, score=self.similarity) for h in self.hits][:k]
        return self.hits[:k]


class FakeModel:
    def __init__(self, reply):
        self.reply_text, self.messages = reply, None

    def reply(self, messages, config=None):
        self.messages = messages
        return self.reply_text


class MustNotBeCalled:
    def reply(self, *args, **kwargs):
        raise AssertionError("the model must not be called when nothing relevant was retrieved")


def ask(question, model, retrieve, **search):
    return answer(question, model, SearchConfig(kb="kb", **search), retrieve=retrieve)


def test_low_similarity_refuses_without_calling_the_model():
    search = StubSearch(HITS, similarity=0.12)
    ans = ask("What is the parental leave policy?", MustNotBeCalled(), retrieve=search)
    assert ans.refused and ans.text == REFUSAL and ans.citations == []
    assert ans.similarity == pytest.approx(0.12)
    # the gate is a vector search for the single nearest chunk, whatever the answer's own mode
    assert search.calls[-1]["mode"] == "vector" and search.calls[-1]["k"] == 1
    assert format_answer(ans) == REFUSAL


def test_no_hits_refuses():
    ans = ask("anything", MustNotBeCalled(), retrieve=StubSearch([], 0.9))
    assert ans.refused and ans.similarity is None


def test_vector_mode_uses_its_own_top_score():
    search = StubSearch(HITS, similarity=0.2)
    ans = ask("q", MustNotBeCalled(), mode="vector", min_similarity=0.3, retrieve=search)
    assert ans.refused and len(search.calls) == 1  # no second search needed


def test_prompt_has_numbered_sources_and_question():
    msgs = build_messages("How often are the seals replaced?", HITS)
    assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert REFUSAL in msgs[0]["content"] and "[1]" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert msgs[1]["role"] == "user"
    # title "Pumps" is not repeated when the heading path starts with it
    assert "[1] Pumps > Maintenance\nThe P-200 pump runs at 3,000 rpm." in user
    assert "[2] Valves\nValve V-7 opens at 4 bar." in user
    assert user.index("[1]") < user.index("[2]") < user.index("Question: How often are the seals replaced?")


def test_citations_quote_exact_spans():
    model = FakeModel("The seals of the P-200 are replaced every 6 months [1].")
    search = StubSearch(HITS, similarity=0.6)
    ans = ask("How often are the P-200 seals replaced?", model, k=2, where={"doc_path": "x"},
                 retrieve=search, weights=[1.0, 0.5])
    assert not ans.refused and not ans.consulted_only
    assert [c.n for c in ans.citations] == [1]
    c = ans.citations[0]
    # the quote is the sentence sharing most words with the answer, at its place in the document
    assert c.quote == "Its seals are replaced every 6 months."
    assert DOCS[c.doc_path][c.start:c.end] == c.quote
    assert model.messages[1]["content"].count("[2]") == 1  # both sources were shown
    assert search.calls[0] == {"kb": "kb", "query": "How often are the P-200 seals replaced?", "k": 2,
                               "mode": "hybrid", "where": {"doc_path": "x"}, "weights": (1.0, 0.5),
                               "reranker": None}
    assert search.calls[1]["where"] == {"doc_path": "x"}  # the gate searches the same filtered documents
    shown = format_answer(ans)
    assert shown.startswith("The seals of the P-200") and "[1] manual/pumps.md (Pumps > Maintenance), chars" in shown
    assert '"Its seals are replaced every 6 months."' in shown


def test_several_citations_in_order_of_mention():
    ans = ask("q", FakeModel("V-7 opens at 4 bar [2]; the pump runs at 3,000 rpm [1, 2]. [9]"),
                 retrieve=StubSearch(HITS, 0.6))
    assert [c.n for c in ans.citations] == [2, 1]
    for c in ans.citations:
        assert DOCS[c.doc_path][c.start:c.end] == c.quote
    assert ans.citations[0].quote == "Valve V-7 opens at 4 bar."


def test_uncited_answer_lists_sources_consulted():
    ans = ask("q", FakeModel("The pump runs at 3,000 rpm."), retrieve=StubSearch(HITS, 0.6))
    assert ans.consulted_only and [c.n for c in ans.citations] == [1, 2]
    assert "Sources consulted" in format_answer(ans)
    # source 2 shares no word with the answer: its quote is the whole chunk, still an exact span
    c = ans.citations[1]
    assert c.quote == DOCS[c.doc_path][c.start:c.end] == DOCS[c.doc_path][HITS[1].start:].rstrip()


def test_quote_never_a_heading_line():
    doc = "# Pumps\n\n## Seals\n\nSeals last 6 months.\n"
    chunk = Hit(chunk_id="p.md#0", doc_path="p.md", title="Pumps", heading_path="Pumps > Seals", text=doc, start=0,
                end=len(doc), score=0.5)
    ans = ask("q", FakeModel("Seals are fine [1]."), retrieve=StubSearch([chunk], 0.6))
    assert ans.citations[0].quote == "Seals last 6 months."  # "## Seals" shares the word too
    ans = ask("q", FakeModel("No overlap here [1]."), retrieve=StubSearch([chunk], 0.6))
    c = ans.citations[0]
    assert c.quote == "Seals last 6 months." and doc[c.start:c.end] == c.quote


def test_model_refusal_is_recognised():
    ans = ask("q", FakeModel("Sorry. " + REFUSAL), retrieve=StubSearch(HITS, 0.6))
    assert ans.refused and ans.text == REFUSAL and ans.citations == []
    assert is_refusal("i cannot find the answer in the provided documents")
    assert not is_refusal("The answer is in the documents [1].")


def test_cited_numbers_and_shorten():
    assert cited_numbers("a [3] b [1][3] c [2; 4] d [0] [7]", 4) == [3, 1, 2, 4]
    assert cited_numbers("no marks", 3) == []
    long = "word " * 100
    short = shorten(long, 30)
    assert short.endswith(" …") and len(short) <= 32 and "\n" not in short
    assert shorten("a\n b") == "a b"


def test_a_quoted_answer_round_trips_and_its_quote_becomes_the_citation():
    doc = "# Pumps\n\nSeals last 6 months.\nThe P-200 pump\nneeds oil yearly. Filters are cheap.\n"
    text = quoted_answer("Oil it once a year [1].", [(1, "The P-200 pump needs oil yearly.")])
    assert text == 'Oil it once a year [1].\n\n[1] "The P-200 pump needs oil yearly."'
    assert quoted_spans(text) == [(1, "The P-200 pump needs oil yearly.")]
    i, j = find_quote(doc, "The P-200 pump needs oil yearly.")
    assert doc[i:j] == "The P-200 pump\nneeds oil yearly."  # the line break inside the chunk is matched
    assert find_quote(doc, "The P-300 pump") is None and find_quote(doc, "  ") is None
    chunk = Hit(chunk_id="p#0", doc_path="p.md", title="Pumps", heading_path="Pumps", text=doc, start=10,
                end=10 + len(doc), score=0.5)
    ans = ask("q", FakeModel(text), retrieve=StubSearch([chunk], 0.6))
    assert ans.citations[0].quote == "The P-200 pump\nneeds oil yearly." and ans.citations[0].start == 10 + i
    # A quote that is not in the source falls back to the best-overlapping sentence.
    ans = ask("q", FakeModel('Seals last long [1].\n\n[1] "Seals last 9 years."'), retrieve=StubSearch([chunk], 0.6))
    assert ans.citations[0].quote == "Seals last 6 months."
