"""index(): incremental re-index by content hash, no duplicate chunks, crash safety, the writer lock."""

import json

import pytest

from inhouse.errors import InhouseError
from inhouse.rag import index as index_mod
from inhouse.rag.embed import load_embedder
from inhouse.rag.index import default_chunker, index, kb_path
from inhouse.rag.search import search
from inhouse.rag.store import LanceStore

FILES = {
    "setup.md": "# Setup\n\nInstall the toolkit with pip. The installer finishes in a minute.\n\n"
                "## GPUs\n\nTraining runs on one GPU with enough memory for the model.\n",
    "notes/lunch.txt": "The canteen serves vegetarian lunch from noon. Coffee is free all day.\n",
    "holiday.md": "# Leave\n\nEmployees get twenty-five days of paid holiday each year.\n",
}


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.texts = inner, []
        self.name, self.dim, self.tokenizer, self.max_tokens = inner.name, inner.dim, inner.tokenizer, inner.max_tokens

    def embed(self, texts, batch_size=64):
        self.texts += texts
        return self.inner.embed(texts, batch_size)


@pytest.fixture
def emb():
    return CountingEmbedder(load_embedder())


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def run(docs, kb, emb, **kw):
    """Small chunks so documents have several, which makes leftovers visible."""
    return index(docs, kb, embedder=emb, chunker=default_chunker(emb, max_tokens=12, overlap=2), progress=False, **kw)


def all_rows(kb):
    import lancedb  # after inhouse.rag.store has set LANCE_LOG

    return lancedb.connect(str(kb / "lance")).open_table("chunks").to_arrow().to_pylist()


def test_index_twice_writes_no_duplicates_and_embeds_nothing(docs, emb, tmp_path):
    kb = tmp_path / "kb"
    first = run(docs, kb, emb)
    assert sorted(first.added) == sorted(FILES) and first.chunks_written == len(emb.texts) > len(FILES)
    ids = sorted(r["chunk_id"] for r in all_rows(kb))
    emb.texts.clear()
    second = run(docs, kb, emb)
    assert (second.added, second.changed, second.removed, second.unchanged) == ([], [], [], 3)
    assert emb.texts == [] and second.chunks_written == 0
    assert sorted(r["chunk_id"] for r in all_rows(kb)) == ids and len(set(ids)) == len(ids)


def test_only_a_changed_doc_is_re_embedded_and_its_old_chunks_go(docs, emb, tmp_path):
    kb = tmp_path / "kb"
    run(docs, kb, emb)
    emb.texts.clear()
    (docs / "notes/lunch.txt").write_text("Breakfast is served until ten in the cafeteria.\n", encoding="utf-8")
    report = run(docs, kb, emb)
    assert report.changed == ["notes/lunch.txt"] and report.unchanged == 2 and report.chunks_written == len(emb.texts)
    lunch_rows = [r for r in all_rows(kb) if r["doc_path"] == "notes/lunch.txt"]
    assert sorted(r["text"] for r in lunch_rows) == sorted(emb.texts)
    assert search(kb, "vegetarian", mode="bm25") == []
    assert search(kb, "breakfast", mode="bm25")[0].doc_path == "notes/lunch.txt"
    manifest = LanceStore(kb).manifest()
    assert manifest["notes/lunch.txt"]["chunks"] == len(lunch_rows)


def test_a_removed_doc_loses_its_chunks(docs, emb, tmp_path):
    kb = tmp_path / "kb"
    run(docs, kb, emb)
    (docs / "holiday.md").unlink()
    report = run(docs, kb, emb)
    assert report.removed == ["holiday.md"]
    assert not [r for r in all_rows(kb) if r["doc_path"] == "holiday.md"]
    assert "holiday.md" not in LanceStore(kb).manifest()


def test_unreadable_files_are_skipped_not_fatal(docs, emb, tmp_path):
    (docs / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    report = run(docs, tmp_path / "kb", emb)
    assert [p for p, _ in report.skipped_files] == ["latin1.txt"] and len(report.added) == 3


def test_a_crash_mid_run_leaves_the_previous_index(docs, emb, tmp_path, monkeypatch):
    kb = tmp_path / "kb"
    run(docs, kb, emb)
    before = (kb / "kb.json").read_text()
    (docs / "holiday.md").write_text("# Leave\n\nThirty days of holiday from next year.\n", encoding="utf-8")
    real_flush = index_mod._flush
    monkeypatch.setattr(index_mod, "_flush", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run(docs, kb, emb)  # after deleting the old holiday.md chunks, before writing new ones
    assert (kb / "kb.json").read_text() == before
    assert search(kb, "twenty-five", mode="bm25")  # readers still see the old holiday.md
    monkeypatch.setattr(index_mod, "_flush", real_flush)
    assert run(docs, kb, emb).changed == ["holiday.md"]
    assert search(kb, "twenty-five", mode="bm25") == [] and search(kb, "thirty", mode="bm25")


def test_another_embedder_or_writer_is_refused(docs, emb, tmp_path):
    kb = tmp_path / "kb"
    run(docs, kb, emb)
    other = CountingEmbedder(emb.inner)
    other.name = "/models/other"
    with pytest.raises(InhouseError, match="/models/other"):
        run(docs, kb, other)
    with LanceStore(kb).writer(emb.name, emb.dim):
        with pytest.raises(InhouseError, match="another indexing run is in progress"):
            run(docs, kb, emb)


def test_kb_names_default_to_home_and_the_default_chunker(docs, home):
    report = index(docs, "team-docs", progress=False)
    assert report.chunks_written >= 3 and (kb_path("team-docs") / "kb.json").is_file()
    assert search("team-docs", "how long is paid holiday?", k=1)[0].doc_path == "holiday.md"
