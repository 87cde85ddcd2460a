"""Every store backend (LanceDB, PostgreSQL): upsert/search/filter, BM25 stemming, published versions,
embedder guard, writer lock, readers during a write."""

import threading

import pytest

from inhouse.errors import InhouseError
from inhouse.rag.chunk import Chunk, Hit
from inhouse.rag.embed import load_embedder
from inhouse.rag.store import LanceStore, Store, kb_path, resolve_kb, store_at, where_sql

TEXTS = {
    "run-1": ("sports.md", "I run five kilometres every morning before work."),
    "cat-1": ("pets.md", "The cat sleeps on the warm windowsill all afternoon."),
    "gpu-1": ("gpus.md", "Fine-tuning a language model needs a GPU with plenty of memory."),
    "lunch-1": ("o'brien.md", "The cafeteria serves vegetarian lunch at noon."),
}


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def chunks(ids, texts=TEXTS):
    return [Chunk(chunk_id=i, doc_path=texts[i][0], title=texts[i][0][:-3], heading_path="Top > Sub",
                  text=texts[i][1], start=0, end=len(texts[i][1]), mtime=1.0, sha256="x") for i in ids]


def publish(store, embedder, ids, texts=TEXTS):
    with store.writer(embedder.name, embedder.dim):
        store.upsert(chunks(ids, texts), embedder.embed([texts[i][1] for i in ids]))
        store.commit({})


@pytest.fixture
def store(tmp_path, embedder, backend):
    s = store_at(tmp_path / "kb", backend)
    publish(s, embedder, list(TEXTS))
    return s


def test_is_a_store_and_empty_before_first_commit(tmp_path, backend):
    s = store_at(tmp_path / "new", backend)
    assert isinstance(s, Store)
    assert s.count() == 0 and s.meta() == {} and s.search_text("cat", 5) == []


def test_vector_search_ranks_the_matching_text_first(store, embedder):
    hits = store.search_vector(embedder.embed(["a kitten napping"])[0], k=2)
    assert [h.chunk_id for h in hits][0] == "cat-1"
    assert isinstance(hits[0], Hit) and hits[0].heading_path == "Top > Sub" and hits[0].sha256 == "x"
    assert hits[0].score > hits[1].score
    assert hits[0].chunk == next(c for c in chunks(["cat-1"]))  # a hit is the stored chunk plus its score


def test_chunks_enumerate_and_sample_the_published_chunks(store, embedder):
    assert sorted(c.chunk_id for c in store.chunks()) == sorted(TEXTS)
    assert set(store.chunks()) == set(chunks(list(TEXTS)))  # every field comes back as written
    assert [c.chunk_id for c in store.chunks(where={"doc_path": "pets.md"})] == ["cat-1"]
    assert store.count(where={"doc_path": ["pets.md", "gpus.md"]}) == 2
    two = store.sample(2, seed=1)
    assert len(two) == 2 and two == store.sample(2, seed=1) and set(two) <= set(store.chunks())
    assert {c.chunk_id for s in range(20) for c in store.sample(1, seed=s)} == set(TEXTS)  # any chunk can be drawn
    assert len(store.sample(99)) == len(TEXTS) and store.sample(0) == []
    assert [c.chunk_id for c in store.sample(3, where="doc_path = 'gpus.md'")] == ["gpu-1"]
    with store.writer(embedder.name, embedder.dim):  # unpublished writes are not enumerated
        store.delete_docs(["pets.md"])
        assert "cat-1" in {c.chunk_id for c in store.chunks()}
    with pytest.raises(InhouseError, match="bad filter"):
        list(store.chunks(where="no_such_column = 1"))


def test_filters_as_sql_or_dict_apply_before_ranking(store, embedder):
    vec = embedder.embed(["a kitten napping"])[0]
    assert [h.chunk_id for h in store.search_vector(vec, 1, where={"doc_path": "gpus.md"})] == ["gpu-1"]
    assert [h.chunk_id for h in store.search_text("lunch", 5, where={"doc_path": ["o'brien.md"]})] == ["lunch-1"]
    assert store.search_text("lunch", 5, where="doc_path = 'pets.md'") == []
    with pytest.raises(InhouseError, match="bad filter"):
        store.search_text("lunch", 5, where="no_such_column = 1")
    with pytest.raises(InhouseError, match="cannot filter"):
        where_sql({"nope": 1})


def test_bm25_stems_english_and_ignores_stop_words(store):
    assert [h.chunk_id for h in store.search_text("running", 5)] == ["run-1"]
    assert store.search_text("the", 5) == []
    assert store.search_text("?!", 5) == []


def test_upsert_by_chunk_id_never_duplicates(store, embedder):
    publish(store, embedder, ["cat-1", "run-1"])
    assert store.count() == len(TEXTS)


def test_rows_added_after_the_fts_index_are_searchable(store, embedder, monkeypatch):
    new = {"new-1": ("new.md", "Quarterly invoices are archived in the finance share."),
           "new-2": ("new.md", "Archived invoices older than seven years are shredded.")}
    if isinstance(store, LanceStore):
        monkeypatch.setattr(LanceStore, "_optimize", lambda self, table, published: None)  # leave them unindexed
    publish(store, embedder, ["new-1"], new)
    assert [h.chunk_id for h in store.search_text("invoice", 5)] == ["new-1"]
    monkeypatch.undo()
    publish(store, embedder, ["new-2"], new)  # this commit folds both into the index
    assert {h.chunk_id for h in store.search_text("invoice", 5)} == {"new-1", "new-2"}


def test_delete_docs_removes_all_their_chunks(store, embedder):
    with store.writer(embedder.name, embedder.dim):
        assert store.delete_docs(["o'brien.md", "missing.md"]) == 1
        store.commit({})
    assert store.count() == len(TEXTS) - 1 and store.search_text("lunch", 5) == []


def test_readers_see_only_the_published_version(store, embedder, tmp_path):
    reader = store_at(store.path)
    with store.writer(embedder.name, embedder.dim):
        store.delete_docs(["pets.md", "gpus.md"])
        assert reader.count() == len(TEXTS)  # half-written: invisible
        store.commit({"sports.md": {"sha256": "x", "chunks": 1}})
        assert reader.count() == len(TEXTS) - 2
    assert reader.manifest() == {"sports.md": {"sha256": "x", "chunks": 1}}
    assert "manifest" not in reader.meta()  # searches read kb.json: it stays small


def test_a_crashed_run_is_rolled_back_by_the_next_writer(store, embedder):
    with pytest.raises(KeyboardInterrupt), store.writer(embedder.name, embedder.dim):
        store.delete_docs(["pets.md"])
        raise KeyboardInterrupt
    with store.writer(embedder.name, embedder.dim):
        store.commit({})
    assert store.count() == len(TEXTS) and store.search_text("cat", 5)


def test_another_embedder_is_refused_naming_both(store, embedder):
    with pytest.raises(InhouseError, match=r"all-MiniLM-L6-v2 \(384-d\), not other-model \(768-d\)"):
        with store.writer("other-model", 768):
            pass
    meta = store_at(store.path).meta()
    assert (meta["embedder_name"], meta["dim"]) == ("all-MiniLM-L6-v2", 384)


def test_one_writer_at_a_time(store, embedder):
    with store.writer(embedder.name, embedder.dim):
        with pytest.raises(InhouseError, match="another indexing run is in progress"):
            with store_at(store.path).writer(embedder.name, embedder.dim, timeout=0.3):
                pass
        assert store.search_text("cat", 1)  # readers take no lock
    with store_at(store.path).writer(embedder.name, embedder.dim):
        pass  # released


def test_writes_outside_a_writer_are_a_bug(store):
    with pytest.raises(RuntimeError):
        store.upsert([], [])


def test_readers_during_a_write_see_the_old_state_or_the_new_one_never_a_mix(store, embedder):
    """A reader thread counts and searches while a writer replaces half the chunks and adds 200."""
    more = {f"n-{i}": (f"n{i}.md", f"Note {i} about the quarterly budget review.") for i in range(200)}
    seen, stop, errors = set(), threading.Event(), []

    def read():
        reader = store_at(store.path)
        while not stop.is_set():
            try:
                seen.add((reader.count(), len(reader.search_text("cat", 5)), reader.meta()["table_version"]))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        with store.writer(embedder.name, embedder.dim):
            store.delete_docs(["pets.md", "gpus.md"])
            store.upsert(chunks(list(more), more), embedder.embed([t for _, t in more.values()]))
            store.commit({})
        publish(store, embedder, ["cat-1"])
    finally:
        stop.set()
        thread.join()
    assert not errors
    old, new, last = len(TEXTS), len(TEXTS) - 2 + 200, len(TEXTS) - 1 + 200
    assert {count for count, _, _ in seen} <= {old, new, last}  # never the deletes without the upserts
    assert store.count() == last


def test_kb_names_live_under_home(home):
    assert kb_path("docs") == home / "kb" / "docs"
    assert resolve_kb("docs") == home / "kb" / "docs"
    assert resolve_kb("./some/kb").name == "kb"
    with pytest.raises(InhouseError):
        kb_path("..")


def test_a_postgresql_kb_records_no_password_and_another_home_can_attach_it(tmp_path, embedder, pg_dsn, monkeypatch):
    from inhouse.errors import ConflictError, InvalidInputError, NotFoundError
    from inhouse.rag.pgstore import attach, location
    from inhouse.rag.store import open_kb

    with pytest.raises(InvalidInputError, match="holds a password") as err:
        location("postgresql://app:s3cret@db.example/kb", "docs")
    assert "s3cret" not in str(err.value)
    monkeypatch.setenv("INHOUSE_TEST_PG", pg_dsn)
    s = store_at(tmp_path / "one" / "docs", "env:INHOUSE_TEST_PG")
    publish(s, embedder, list(TEXTS))
    assert (tmp_path / "one" / "docs" / "store.json").read_text().count("INHOUSE_TEST_PG") == 1
    with pytest.raises(NotFoundError, match="no published knowledge base 'other'"):
        attach(tmp_path / "two" / "other", pg_dsn)
    attach(tmp_path / "two" / "docs", pg_dsn)  # the same name on a second machine, the URL given directly
    assert open_kb(tmp_path / "two" / "docs").count() == len(TEXTS)
    with pytest.raises(ConflictError, match="lives in postgresql"):
        store_at(tmp_path / "two" / "docs", "env:ELSEWHERE")
    monkeypatch.delenv("INHOUSE_TEST_PG")
    with pytest.raises(InhouseError, match=r"\$INHOUSE_TEST_PG, which is not set"):
        open_kb(tmp_path / "one" / "docs").count()
