"""index(): incremental re-index by content hash, no duplicate chunks, crash safety (also kill -9), the writer
lock; on both store backends (the `backend` fixture, tests/rag/conftest.py)."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from inhouse.errors import InhouseError
from inhouse.rag import index as index_mod
from inhouse.rag.embed import load_embedder
from inhouse.rag.index import default_chunker, index, kb_path
from inhouse.rag.search import search
from inhouse.rag.store import store_at

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


@pytest.fixture(autouse=True)
def _store(request, monkeypatch):
    """Tests that take `backend` index into it: `run` passes it as --store."""
    global STORE
    STORE = request.getfixturevalue("backend") if "backend" in request.fixturenames else None


STORE = None


def run(docs, kb, emb, **kw):
    """Small chunks so documents have several, which makes leftovers visible."""
    return index(docs, kb, embedder=emb, chunker=default_chunker(emb, max_tokens=12, overlap=2), progress=False,
                 store=STORE, **kw)


def all_rows(kb):
    """Every row in the table (LanceDB: its latest version, published or not; PostgreSQL: the chunks table,
    which only a commit changes)."""
    if (kb / "store.json").is_file():
        return [dataclasses.asdict(c) for c in store_at(kb).chunks()]
    import lancedb  # after inhouse.rag.store has set LANCE_LOG

    return lancedb.connect(str(kb / "lance")).open_table("chunks").to_arrow().to_pylist()


def published(kb):
    return store_at(kb).meta()


def has_checkpoint(kb):
    if (kb / "store.json").is_file():  # {} also before the writer has created the tables
        return bool(store_at(kb)._row("resume"))
    return (kb / "resume.json").exists()


def test_index_twice_writes_no_duplicates_and_embeds_nothing(docs, emb, tmp_path, backend):
    kb = tmp_path / "kb"
    first = run(docs, kb, emb)
    assert sorted(first.added) == sorted(FILES) and first.chunks_written == len(emb.texts) > len(FILES)
    ids = sorted(r["chunk_id"] for r in all_rows(kb))
    emb.texts.clear()
    second = run(docs, kb, emb)
    assert (second.added, second.changed, second.removed, second.unchanged) == ([], [], [], 3)
    assert emb.texts == [] and second.chunks_written == 0
    assert sorted(r["chunk_id"] for r in all_rows(kb)) == ids and len(set(ids)) == len(ids)


def test_only_a_changed_doc_is_re_embedded_and_its_old_chunks_go(docs, emb, tmp_path, backend):
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
    manifest = store_at(kb).manifest()
    assert manifest["notes/lunch.txt"]["chunks"] == len(lunch_rows)


def test_a_removed_doc_loses_its_chunks(docs, emb, tmp_path, backend):
    kb = tmp_path / "kb"
    run(docs, kb, emb)
    (docs / "holiday.md").unlink()
    report = run(docs, kb, emb)
    assert report.removed == ["holiday.md"]
    assert not [r for r in all_rows(kb) if r["doc_path"] == "holiday.md"]
    assert "holiday.md" not in store_at(kb).manifest()


def test_unreadable_files_are_skipped_not_fatal(docs, emb, tmp_path):
    (docs / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    report = run(docs, tmp_path / "kb", emb)
    assert [p for p, _ in report.skipped_files] == ["latin1.txt"] and len(report.added) == 3


def test_a_crash_mid_run_leaves_the_previous_index(docs, emb, tmp_path, monkeypatch, backend):
    kb = tmp_path / "kb"
    run(docs, kb, emb)
    before = published(kb)
    (docs / "holiday.md").write_text("# Leave\n\nThirty days of holiday from next year.\n", encoding="utf-8")
    real_flush = index_mod._flush
    monkeypatch.setattr(index_mod, "_flush", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run(docs, kb, emb)  # after deleting the old holiday.md chunks, before writing new ones
    assert published(kb) == before
    assert search(kb, "twenty-five", mode="bm25")  # readers still see the old holiday.md
    monkeypatch.setattr(index_mod, "_flush", real_flush)
    assert run(docs, kb, emb).changed == ["holiday.md"]
    assert search(kb, "twenty-five", mode="bm25") == [] and search(kb, "thirty", mode="bm25")


def test_another_embedder_or_writer_is_refused(docs, emb, tmp_path, backend):
    kb = tmp_path / "kb"
    run(docs, kb, emb)
    other = CountingEmbedder(emb.inner)
    other.name = "/models/other"
    with pytest.raises(InhouseError, match="/models/other"):
        run(docs, kb, other)
    with store_at(kb).writer(emb.name, emb.dim):
        with pytest.raises(InhouseError, match="another indexing run is in progress"):
            run(docs, kb, emb)


def test_kb_names_default_to_home_and_the_default_chunker(docs, home):
    report = index(docs, "team-docs", progress=False)
    assert report.chunks_written >= 3 and (kb_path("team-docs") / "kb.json").is_file()
    assert search("team-docs", "how long is paid holiday?", k=1)[0].doc_path == "holiday.md"


class CrashAfter(CountingEmbedder):
    """Embeds `calls` batches, then fails like a Ctrl-C in the middle of a long run."""

    def __init__(self, inner, calls):
        super().__init__(inner)
        self.calls = calls

    def embed(self, texts, batch_size=64):
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return super().embed(texts, batch_size)


@pytest.fixture
def many(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    topics = ["rivers", "engines", "violins", "glaciers", "orchids", "bridges", "comets", "ferries"]
    for i, topic in enumerate(topics):
        (root / f"{i}-{topic}.txt").write_text(f"A note about {topic}: number {i} of the series.\n", encoding="utf-8")
    return root


def crash_then_resume(root, kb, emb, monkeypatch, calls=3, between=lambda: None):
    monkeypatch.setattr(index_mod, "FLUSH_CHUNKS", 1)  # one document per flush
    monkeypatch.setattr(index_mod, "CHECKPOINT_S", 0.0)  # checkpoint after every flush
    with pytest.raises(KeyboardInterrupt):
        run(root, kb, CrashAfter(emb.inner, calls))
    assert not published(kb) and has_checkpoint(kb)
    between()
    return run(root, kb, emb)


def test_an_interrupted_run_resumes_where_it_stopped(many, emb, tmp_path, monkeypatch, backend):
    kb = tmp_path / "kb"
    report = crash_then_resume(many, kb, emb, monkeypatch)
    assert report.resumed == 3 and len(report.added) == 8 and report.chunks_written == 5
    assert {t.split(":")[0] for t in emb.texts} == {f"A note about {t}" for t in
                                                  ["glaciers", "orchids", "bridges", "comets", "ferries"]}
    rows = all_rows(kb)
    assert len(rows) == len({r["chunk_id"] for r in rows}) == 8
    assert not has_checkpoint(kb) and len(store_at(kb).manifest()) == 8
    assert search(kb, "violins", mode="bm25")[0].doc_path == "2-violins.txt"


def test_resume_redoes_docs_edited_or_removed_since_the_crash(many, emb, tmp_path, monkeypatch, backend):
    kb = tmp_path / "kb"

    def edit():
        (many / "0-rivers.txt").write_text("Canals, not rivers, this time.\n", encoding="utf-8")
        (many / "1-engines.txt").unlink()

    report = crash_then_resume(many, kb, emb, monkeypatch, between=edit)
    assert report.resumed == 1 and report.removed == ["1-engines.txt"] and "0-rivers.txt" in report.changed
    texts = sorted(r["text"] for r in all_rows(kb))
    assert "Canals, not rivers, this time." in texts and len(texts) == 7
    assert search(kb, "engines", mode="bm25") == [] and not search(kb, "series rivers", mode="bm25")[0].text.startswith("A note about rivers")


def test_a_checkpoint_is_never_published_and_another_root_starts_over(many, docs, emb, tmp_path, monkeypatch, backend):
    kb = tmp_path / "kb"
    run(docs, kb, emb)
    before = published(kb)
    monkeypatch.setattr(index_mod, "FLUSH_CHUNKS", 1)
    monkeypatch.setattr(index_mod, "CHECKPOINT_S", 0.0)
    with pytest.raises(KeyboardInterrupt):
        run(many, kb, CrashAfter(emb.inner, 2))
    assert published(kb) == before and search(kb, "violins", mode="bm25") == []
    emb.texts.clear()
    report = run(docs, kb, emb)  # the original root: the checkpoint of the other root is ignored
    assert report.resumed == 0 and report.unchanged == 3 and emb.texts == []
    assert {r["doc_path"] for r in all_rows(kb)} == set(FILES)
    assert not has_checkpoint(kb)


def test_a_doc_the_crashed_run_deleted_is_rewritten_even_if_reverted(many, emb, tmp_path, monkeypatch, backend):
    kb = tmp_path / "kb"
    run(many, kb, emb)
    original = (many / "7-ferries.txt").read_text(encoding="utf-8")
    (many / "0-rivers.txt").write_text("Canals, not rivers, this time.\n", encoding="utf-8")
    (many / "7-ferries.txt").write_text("Ferries now sail at dawn.\n", encoding="utf-8")
    monkeypatch.setattr(index_mod, "FLUSH_CHUNKS", 1)
    monkeypatch.setattr(index_mod, "CHECKPOINT_S", 0.0)
    with pytest.raises(KeyboardInterrupt):  # both old versions deleted, rivers rewritten, crash on ferries
        run(many, kb, CrashAfter(emb.inner, 1))
    (many / "7-ferries.txt").write_text(original, encoding="utf-8")  # back to what is published
    report = run(many, kb, emb)
    assert report.resumed == 1 and report.changed == ["0-rivers.txt", "7-ferries.txt"]
    assert search(kb, "ferries", mode="bm25")[0].doc_path == "7-ferries.txt"
    assert len(all_rows(kb)) == 8


KILLED_RUN = """
import sys, time
from inhouse.rag import index as m
from inhouse.rag.embed import load_embedder

m.FLUSH_CHUNKS, m.CHECKPOINT_S = 1, 0.0  # a checkpoint after every document
inner = load_embedder()


class Slow:
    name, dim, tokenizer, max_tokens = inner.name, inner.dim, inner.tokenizer, inner.max_tokens

    def embed(self, texts, batch_size=64):
        time.sleep(0.4)
        return inner.embed(texts, batch_size)


m.index(sys.argv[1], sys.argv[2], embedder=Slow(), chunker=m.default_chunker(Slow(), max_tokens=12, overlap=2),
        progress=False, store=sys.argv[3] or None)
"""


@pytest.mark.slow
def test_kill_9_mid_run_publishes_nothing_and_the_rerun_resumes(many, emb, tmp_path, backend):
    """A real crash: SIGKILL, no exception handler, no atexit; the lock dies with the process."""
    kb = tmp_path / "kb"
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(many), str(kb), backend or ""],
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.monotonic() + 120
    while not has_checkpoint(kb) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    assert not published(kb)  # readers: still no knowledge base
    report = run(many, kb, emb, lock_timeout=10)
    assert 1 <= report.resumed < 8 and len(report.added) == 8
    rows = all_rows(kb)
    assert len(rows) == len({r["chunk_id"] for r in rows}) == 8 and not has_checkpoint(kb)
    assert search(kb, "violins", mode="bm25")[0].doc_path == "2-violins.txt"


def test_a_checkpoint_pointing_at_a_lost_version_starts_over(many, emb, tmp_path, monkeypatch):
    kb = tmp_path / "kb"

    def lose_version():
        point = json.loads((kb / "resume.json").read_text())
        (kb / "resume.json").write_text(json.dumps({**point, "version": 999}))

    report = crash_then_resume(many, kb, emb, monkeypatch, between=lose_version)
    assert report.resumed == 0 and len(report.added) == 8 and report.chunks_written == 8
    assert len(all_rows(kb)) == 8 and not (kb / "resume.json").exists()


def test_a_stop_request_leaves_the_published_index_and_the_next_run_resumes(docs, emb, tmp_path, backend):
    from inhouse.events import Events, Stopped

    class StopAfter(Events):
        def __init__(self, n):
            self.n, self.progress = n, []

        def log(self, kind, **data):
            if kind == "progress":
                self.progress.append(data["done"])

        def should_stop(self):
            return len(self.progress) >= self.n

    kb = tmp_path / "kb"
    with pytest.raises(Stopped, match="after 2 of 3 documents"):
        run(docs, kb, emb, events=StopAfter(2))
    assert not published(kb)  # nothing published
    emb.texts.clear()
    report = run(docs, kb, emb)
    assert report.resumed == 2 and sorted(report.added) == sorted(FILES)
    assert len(emb.texts) < 5  # only the third document was embedded again
