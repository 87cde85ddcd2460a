"""Every store backend (LanceDB, PostgreSQL): upsert/search/filter, BM25 stemming, published versions,
embedder guard, writer lock, readers during a write."""

import threading
import time

import numpy as np
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
    from inhouse.rag.pgconn import location
    from inhouse.rag.pgstore import attach
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


# -- PostgreSQL only: the postings behind BM25, the earlier layout, rebuilds of another dimension ---------

WORDS = {f"w-{i}": (f"w{i % 3}.md", text) for i, text in enumerate([
    "Wing flutter at high speed damps with stiffer spars.", "Flutter of the wing grows with speed.",
    "Heat transfer in a laminar boundary layer.", "Boundary layer heat transfer at hypersonic speed.",
    "Boundary layer heat transfer at hypersonic speed.",  # the same text twice: a tie, broken by chunk_id
    "Shock waves on a flat plate.", "The plate bends; the wing flutters; the speed rises."])}
QUERIES = ["wing flutter speed", "boundary layer heat", "hypersonic plate", "speed", "shocks and waves"]


@pytest.fixture
def pg_store(tmp_path, embedder, pg_dsn):
    s = store_at(tmp_path / "pgkb", pg_dsn)
    publish(s, embedder, list(WORDS), WORDS)
    return s


def sql_rows(store, query, params=()):
    from inhouse.rag import pgconn

    with pgconn.reader(store.loc) as conn:
        return conn.execute(query.format(t=store.loc["table"]), list(params)).fetchall()


def ranked(store, where=None):
    """Every match's score (to 9 places: the earlier SQL summed float4 frequencies), ties in chunk_id order."""
    hits = {q: store.search_text(q, len(WORDS) + 2, where=where) for q in QUERIES}
    return {q: sorted((-round(h.score, 9), h.chunk_id) for h in found) for q, found in hits.items()}


def test_postgresql_postings_stay_in_step_with_the_chunks(pg_store, embedder):
    """After in-place commits (a changed chunk, a deleted document, a new one) the postings are exactly
    what the published chunks' tsvectors give, and nothing else."""
    changed = {**WORDS, "w-0": ("w0.md", "Stiffer spars stop flutter."), "x-1": ("x.md", "Flutter tests in a tunnel.")}
    with pg_store.writer(embedder.name, embedder.dim):
        pg_store.delete_docs(["w2.md"])
        pg_store.upsert(chunks(["w-0", "x-1"], changed), embedder.embed([changed[i][1] for i in ("w-0", "x-1")]))
        pg_store.commit({})
    derived = sql_rows(pg_store, 'SELECT u.lexeme, c.rid, cardinality(u.positions), c.doc_len '
                                 'FROM "{t}" c, unnest(c.tsv) u ORDER BY 1, 2')
    assert sql_rows(pg_store, 'SELECT lexeme, rid, tf, len FROM "{t}__post" ORDER BY 1, 2') == derived
    assert {c.doc_path for c in pg_store.chunks()} == {"w0.md", "w1.md", "x.md"}
    assert [h.chunk_id for h in pg_store.search_text("tunnel", 3)] == ["x-1"]
    assert pg_store.search_text("laminar shock", 3) == []  # w2.md's chunks went, with their postings


def to_earlier_layout(store):
    """Make the published knowledge base look as the code before the postings left it: no postings
    table, no rid column, a GIN index on tsv, and meta without "full_text"."""
    from inhouse.rag import pgconn

    with pgconn.reader(store.loc) as conn, conn.transaction():
        t = store.loc["table"]
        conn.execute(f'DROP TABLE "{t}__post"')
        conn.execute(f'ALTER TABLE "{t}" DROP COLUMN rid')
        conn.execute(f'CREATE INDEX "{t}_fts" ON "{t}" USING gin (tsv)')
        conn.execute("UPDATE inhouse_kbs SET meta = meta - 'full_text' WHERE name = %s", [t])


def test_postgresql_kb_of_the_earlier_layout_is_searched_as_before_and_upgraded_by_the_next_write(pg_store, embedder):
    """The postings give the earlier SQL's BM25 scores, ties and filters; an old knowledge base is read the
    earlier way until a write rebuilds it with postings, in its one commit."""
    new = ranked(pg_store), ranked(pg_store, where={"doc_path": ["w1.md", "w2.md"]})
    top = pg_store.search_text("boundary layer heat", 3)
    assert [h.chunk_id for h in top] == ["w-2", "w-3", "w-4"] and top[1].score == top[2].score  # a tie, by chunk_id
    to_earlier_layout(pg_store)
    assert "full_text" not in pg_store.meta()
    assert (ranked(pg_store), ranked(pg_store, where={"doc_path": ["w1.md", "w2.md"]})) == new
    publish(pg_store, embedder, ["w-0"], WORDS)  # an unchanged chunk: the next write upgrades
    assert pg_store.meta()["full_text"] == "postings" and pg_store.count() == len(WORDS)
    assert sql_rows(pg_store, 'SELECT count(DISTINCT rid) FROM "{t}__post"') == [(len(WORDS),)]
    assert (ranked(pg_store), ranked(pg_store, where={"doc_path": ["w1.md", "w2.md"]})) == new
    assert not sql_rows(pg_store, "SELECT 1 FROM pg_indexes WHERE indexname = %s", [pg_store.loc["table"] + "_fts"])


class Doubled:
    """The embedder's vectors written twice (unit length still): an embedder of another dimension."""

    def __init__(self, base):
        self.base, self.name, self.dim = base, base.name + "-doubled", 2 * base.dim

    def embed(self, texts):
        return np.hstack([self.base.embed(texts)] * 2) / np.sqrt(2)


def test_postgresql_rebuild_with_another_dimension_swaps_atomically(pg_store, embedder, monkeypatch):
    """Readers search during the rebuild and see the old knowledge base or the new one, never an error;
    a rebuild that fails in its commit leaves the old one, and the next run of the old embedder works."""
    from inhouse.rag.pgstore import PgStore

    doubled, ids = Doubled(embedder), list(WORDS)[:4]
    query = embedder.embed(["a kitten napping"])[0]
    seen, stop, errors = set(), threading.Event(), []

    def read():
        reader = store_at(pg_store.path)
        while not stop.is_set():
            try:
                meta = reader.meta()
                vec = np.hstack([query] * 2) / np.sqrt(2) if meta["dim"] == 768 else query
                seen.add((meta["dim"], reader.count(), len(reader.search_text("speed", 9)), len(reader.search_vector(vec, 9))))
            except Exception as e:  # noqa: BLE001 - reported below; a dimension read just before the swap may mismatch
                errors.append(e)

    def rebuild(store, emb, fail=False):
        with store.writer(emb.name, emb.dim, replace=True):
            store.upsert(chunks(ids, WORDS), emb.embed([WORDS[i][1] for i in ids]))
            if fail:
                monkeypatch.setattr(PgStore, "_swap", lambda self, conn, name: (swap(self, conn, name), 1 / 0))
            store.commit({})

    swap = PgStore._swap
    with pytest.raises(ZeroDivisionError):  # after the old tables were dropped and the new ones renamed
        rebuild(pg_store, doubled, fail=True)
    monkeypatch.undo()
    assert (pg_store.meta()["dim"], pg_store.count()) == (384, len(WORDS))
    assert [h.chunk_id for h in pg_store.search_text("hypersonic plate", 2)] == ["w-5", "w-3"]
    publish(pg_store, embedder, ["w-6"], WORDS)  # the stage was left 768-d: made anew for 384
    speed = len(pg_store.search_text("speed", 9))
    thread = threading.Thread(target=read)
    thread.start()
    try:
        rebuild(pg_store, doubled)
        deadline = time.monotonic() + 10
        while not any(dim == 768 for dim, *_ in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        rebuild(pg_store, embedder)  # and back
    finally:
        stop.set()
        thread.join()
    old, new = (384, len(WORDS), speed, len(WORDS)), (4, len(pg_store.search_text("speed", 9)), 4)
    assert {old, (768, *new)} <= seen <= {old, (768, *new), (384, *new)}, seen
    assert [e for e in errors if "dimensions" not in str(e)] == []
    assert (pg_store.meta()["dim"], pg_store.count()) == (384, 4)
    assert [h.chunk_id for h in pg_store.search_text("flutter", 9)] == ["w-1", "w-0"]
