"""search(): weighted RRF by hand, modes on a real index, filters, reranking, clear errors."""

import numpy as np
import pytest
from helpers import run_cli

from inhouse.errors import InhouseError
from inhouse.rag.config import SearchConfig
from inhouse.recipe import build_config
from inhouse.rag.embed import load_embedder
from inhouse.rag.chunk import Chunk
from inhouse.rag.search import Hit, rerank, rrf_fuse, search
from inhouse.rag.store import LanceStore, Store

DOCS = [
    ("install.md", "Setup", "Install the toolkit with pip install inhouse, then run inhouse quickstart."),
    ("gpu.md", "Hardware", "Training a seven billion parameter model needs a GPU with 24 GB of memory."),
    ("lunch.md", "Canteen", "The canteen serves vegetarian lunch from noon until two."),
    ("leave.md", "HR", "Employees get twenty-five days of paid holiday each year."),
]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder):
    store = LanceStore(tmp_path_factory.mktemp("kb") / "demo")
    vectors = embedder.embed([text for _, _, text in DOCS])
    with store.writer(embedder.name, embedder.dim):
        store.upsert([Chunk(chunk_id=path, doc_path=path, title=path[:-3], heading_path=heading, text=text,
                            start=0, end=len(text), mtime=0.0, sha256="x") for path, heading, text in DOCS], vectors)
        store.commit({path: {"sha256": "x", "chunks": 1} for path, _, _ in DOCS})
    return store.path


class FakeStore(Store):
    """Canned rankings, so fusion can be checked against hand-computed scores."""

    def __init__(self, vector_ids, text_ids):
        self.vector_ids, self.text_ids = vector_ids, text_ids

    def _rows(self, ids):
        return [Hit(chunk_id=i, doc_path=f"{i}.md", title=i, heading_path="", text=f"text {i}", start=0, end=6)
                for i in ids]

    def search_vector(self, vec, k, where=None):
        return self._rows(self.vector_ids[:k])

    def search_text(self, query, k, where=None):
        return self._rows(self.text_ids[:k])

    def meta(self):
        return {"embedder_name": "fake", "dim": 2}

    def manifest(self):
        return {}

    def chunks(self, where=None):
        return iter(())

    def count(self, where=None):
        return len(set(self.vector_ids) | set(self.text_ids))

    def writer(self, embedder_name, dim, timeout=0.0): ...
    def upsert(self, rows): ...
    def delete_docs(self, paths): ...
    def commit(self, manifest, **info): ...


class FakeEmbedder:
    name, dim = "fake", 2

    def embed(self, texts, batch_size=64):
        return np.ones((len(texts), 2), dtype=np.float32)


def test_rrf_by_hand():
    fused = dict(rrf_fuse([["a", "b", "c"], ["b", "d"]], [1.0, 1.0], rrf_k=60))
    assert fused == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63, "d": 1 / 62})


def test_hybrid_puts_a_chunk_found_by_both_above_those_found_by_one():
    hits = search(FakeStore(["a", "b", "c"], ["b", "d"]), "q", k=4, embedder=FakeEmbedder())
    assert [h.chunk_id for h in hits] == ["b", "a", "d", "c"]
    assert (hits[0].vector_rank, hits[0].bm25_rank) == (2, 1) and hits[2].vector_rank is None
    assert hits[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_weights_change_the_order():
    store = FakeStore(["x", "y"], ["y", "x"])
    order = lambda w: [h.chunk_id for h in search(store, "q", k=2, weights=w, embedder=FakeEmbedder())]  # noqa: E731
    assert order((2.0, 1.0)) == ["x", "y"]
    assert order((1.0, 2.0)) == ["y", "x"]
    assert order((0.0, 1.0)) == ["y", "x"]


def test_modes_on_a_real_index(kb):
    assert search(kb, "how do I install it?", k=1)[0].doc_path == "install.md"
    vec = search(kb, "graphics card memory for training", k=2, mode="vector")
    assert vec[0].doc_path == "gpu.md" and vec[0].bm25_rank is None and vec[0].score > vec[1].score
    bm25 = search(kb, "serving lunches", mode="bm25")
    assert [h.doc_path for h in bm25] == ["lunch.md"] and bm25[0].heading_path == "Canteen"


def test_filters_and_k(kb):
    hits = search(kb, "how do I install it?", k=3, where={"doc_path": ["leave.md", "lunch.md"]})
    assert {h.doc_path for h in hits} == {"leave.md", "lunch.md"}
    assert len(search(kb, "anything at all", k=2)) == 2


def test_reranker_reorders_and_rescores(kb):
    class Fake:
        def predict(self, pairs):
            return [10.0 if "holiday" in text else 0.0 for _, text in pairs]

    hits = search(kb, "how do I install it?", k=2, reranker=Fake())
    assert hits[0].doc_path == "leave.md" and hits[0].score == 10.0
    assert rerank("q", [], Fake()) == []
    with pytest.raises(InhouseError, match="not a local model folder"):
        search(kb, "install", reranker="/no/such/reranker")


def test_clear_errors(kb, tmp_path):
    with pytest.raises(InhouseError, match="search mode"):
        search(kb, "x", mode="fuzzy")
    with pytest.raises(InhouseError, match="weights"):
        search(kb, "x", weights=(0, 0))
    with pytest.raises(InhouseError, match="no knowledge base"):
        search(tmp_path / "missing", "x")
    with pytest.raises(InhouseError, match="cannot search it with fake"):
        search(kb, "x", embedder=FakeEmbedder())


def test_hit_is_a_chunk_with_a_score():
    hit = Hit(doc_path="d.md", chunk_id="c", text="text", start=0, end=4, heading_path="A > B", title="t", score=1.0,
              vector_rank=1)
    assert isinstance(hit, Chunk) and hit.page is None and hit.heading_path == "A > B"
    assert hit.chunk == Chunk("d.md", "c", "text", 0, 4, "A > B", "t")


# --- metadata filters and the search flags ----------------------------------------------------


def test_wildcard_filters_on_a_real_index(kb):
    def paths(where, **kw):
        return sorted(h.doc_path for h in search(kb, "what does it say?", k=4, **kw, where=where))

    assert paths({"doc_path": {"glob": "l*.md"}}) == ["leave.md", "lunch.md"]
    assert paths({"doc_path": ["gpu.md", {"glob": "i?stall.md"}]}, mode="bm25") == []  # bm25: no word matches
    assert paths({"doc_path": ["gpu.md", {"glob": "i?stall.md"}]}) == ["gpu.md", "install.md"]
    assert paths({"doc_path": {"glob": "l_*"}}) == []  # '_' is a literal underscore, not SQL's any-character
    assert paths(SearchConfig(kb="x", where="title=leave,doc_path=l*").where) == ["leave.md"]


@pytest.mark.parametrize("text,expected", [
    ("doc_path=handbook/*.md", {"doc_path": {"glob": "handbook/*.md"}}),
    ("doc_path=a.md, doc_path=b.md ,page=3", {"doc_path": ["a.md", "b.md"], "page": 3}),
    (r"title=Leave\, holidays", {"title": "Leave, holidays"}),
    (r"doc_path=notes\*.md", {"doc_path": "notes*.md"}),
    ("heading_path=HR > Leave", {"heading_path": "HR > Leave"}),
    ("", {}),
])
def test_where_flag_syntax(text, expected):
    assert SearchConfig(kb="k", where=text).where == expected


@pytest.mark.parametrize("where,needle", [
    ("colour=red", "--where: unknown key 'colour'; keys: chunk_id, doc_path, title"),
    ("doc_path", "--where 'doc_path': write KEY=VALUE; keys: chunk_id"),
    ("page=three", "--where page='three': page is a number"),
    ("page=1*", "a pattern is {glob: TEXT}, on a text key"),
    ({"sha": "x"}, "--where: unknown key 'sha'"),
])
def test_bad_filters_fail_when_the_config_is_built(where, needle):
    with pytest.raises(InhouseError) as err:
        build_config(SearchConfig, None, kb="k", where=where)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_rag_search_flags_filter_and_report_the_relevance_gate(kb):
    code, out, err = run_cli("rag", "search", "how do I install it?", "--kb", kb, "--where", "doc_path=l*.md")
    assert code == 0, err
    assert "leave.md" in out and "lunch.md" in out and "install.md" not in out and "ask would" not in out
    code, out, _ = run_cli("rag", "search", "how do I install it?", "--kb", kb, "--min-similarity", "0.2", "-k", "1")
    assert "install.md" in out and out.splitlines()[-1].startswith("best cosine similarity ")
    assert out.splitlines()[-1].endswith(">= --min-similarity 0.2: ask would answer")
    code, out, _ = run_cli("rag", "search", "how do I install it?", "--kb", kb, "--min-similarity", "0.99")
    assert out.splitlines()[-1].endswith("< --min-similarity 0.99: ask would refuse")
    code, out, _ = run_cli("rag", "search", "install", "--kb", kb, "--where", "doc_path=none/*")
    assert code == 0 and out.strip() == "no chunk matches --where"


def test_rag_search_and_ask_flag_errors_are_one_line(kb, tmp_path):
    code, _, err = run_cli("rag", "search", "x", "--kb", kb, "--where", "colour=red")
    assert code == 1 and err.count("\n") == 1 and "--where: unknown key 'colour'; keys: chunk_id, doc_path" in err
    code, _, err = run_cli("ask", "x?", "--kb", kb, "--where", "page=three")
    assert code == 1 and err.count("\n") == 1 and "error: --where page='three': page is a number" in err
    code, _, err = run_cli("rag", "search", "install", "--kb", kb, "--reranker", tmp_path / "no-such-reranker")
    assert code == 1 and err.count("\n") == 1
    assert "is not a local model folder (models are never downloaded)" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("rag", "search", "install", "--kb", kb, "--reranker", tmp_path / "empty")
    assert code == 1 and err.count("\n") == 1 and "could not load reranker from" in err, err
