"""A knowledge base in PostgreSQL with pgvector: the same `Store` as LanceDB, for corpora that outgrow
one process or are shared by several servers.

The knowledge base's folder (INHOUSE_HOME/kb/NAME) still exists; its `store.json` says where the
chunks live: a connection string *without* its password (libpq finds that in PGPASSWORD or
~/.pgpass), or the name of an environment variable holding the whole string (`--store env:VAR`),
plus the table. Secrets therefore never reach the folder, lineage, events or error messages.

In the database, per knowledge base (quoted identifiers, made on the first write):

- `kb_<name>`: one row per chunk, its vector (HNSW index, cosine), its English `tsvector`, token count
  and row id; `kb_<name>__post`: the full-text postings of those rows (`inhouse.rag.pgtext`);
  `inhouse_kbs`: one row per knowledge base with the published meta, the manifest and a crashed run's
  checkpoint;
- `kb_<name>__stage` and `kb_<name>__deleted`: the writer's upserts and deleted documents.

Why readers never see half an update: a writer only fills the stage tables; `commit()` applies them
to the chunks and postings tables and replaces the meta and manifest in one transaction, so MVCC shows
every reader the old state or the new one. A rebuild (`--reindex`, perhaps with an embedder of another
dimension), the first publish and the first write to a table of earlier code fill new tables instead,
which replace the published ones by name at the end of that same transaction. The writer's open
transaction is committed only at `checkpoint()`, so a killed run leaves exactly its last checkpoint in
the stage, and the next run under the same resume key goes on from there (any other run empties the
stage first). One writer at a time: a session advisory lock keyed on the table, which the server drops
when the writer's connection dies.

Full text uses PostgreSQL's own English parser, stemmer and stop words, and scores by BM25 (k1=1.2,
b=0.75, as LanceDB) in SQL over the postings, so the bm25 and hybrid rankings stay comparable with the
embedded store; any query word may match (OR), as there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from inhouse import atomic, outputs
from inhouse.errors import ConflictError, InhouseError, NotFoundError
from inhouse.rag import pgconn, pgfilter, pgtext
from inhouse.rag.chunk import Chunk, Hit
from inhouse.rag.store import COLUMNS, FORMAT, KB_KIND, STORE_FILE, Store, _chunk, check_kb_folder

KBS = "inhouse_kbs"
_READ_BATCH = 4096
# index builds (HNSW, keys) and the sort of the postings; a server set higher keeps its own values
_COMMIT_MEMORY = {"maintenance_work_mem": "512MB", "work_mem": "256MB"}
# a BM25 query sums the scores of every chunk holding a query word: in memory up to a few million
_SEARCH_MEMORY = {"work_mem": "64MB"}
_TYPES = {"chunk_id": "text", "doc_path": "text", "title": "text", "heading_path": "text", "text": "text",
          "start": "int8", "end": "int8", "page": "int4", "mtime": "float8", "sha256": "text"}


def attach(path: Path, spec: str) -> PgStore:
    """Make folder `path` name the PostgreSQL knowledge base of the same name that another machine indexed
    (several servers sharing one database): only store.json is written, after the database confirms it."""
    store = PgStore(path, pgconn.location(spec, path.name))
    if not store.meta():
        raise NotFoundError(f"no published knowledge base {path.name!r} in {pgconn.shown(store.loc)}; "
                            "index it first (inhouse rag index FOLDER --kb NAME --store ...)")
    check_kb_folder(path)
    existing = path / STORE_FILE
    if existing.is_file() and PgStore.from_folder(path).loc != store.loc:
        raise ConflictError(f"{path} already names another store; choose another --kb")
    if (path / "kb.json").is_file():
        raise ConflictError(f"{path} is an embedded (LanceDB) knowledge base; choose another name")
    store._mark()
    return store


# -- the store ----------------------------------------------------------------------------------


class PgStore(Store):
    """Store over PostgreSQL + pgvector (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike, loc: Mapping[str, Any]):
        self.path = Path(path).expanduser()
        self.loc = dict(loc)
        self._conn: Any = None  # the writer's connection, inside writer()
        self._dim = 0
        self._embedder_name = ""
        self._resume: dict = {}
        self._resume_key: str | None = None
        self._replace = False

    @classmethod
    def from_folder(cls, path: Path) -> PgStore:
        try:
            loc = json.loads((path / STORE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InhouseError(f"cannot read {path / STORE_FILE}: {e}") from e
        return cls(path, loc)

    def __repr__(self) -> str:
        return f"PgStore({str(self.path)!r}, {pgconn.shown(self.loc)!r})"

    def _ident(self, suffix: str = "") -> Any:
        return pgconn.sql().Identifier(self.loc["table"] + suffix)

    # -- published state ---------------------------------------------------

    def _row(self, column: str) -> dict:
        with pgconn.reader(self.loc) as conn:
            return self._row_on(conn, column)

    def _row_on(self, conn: Any, column: str) -> dict:
        """This knowledge base's published `column` read on `conn` (autocommit, outside a transaction: a
        missing table then aborts nothing); {} when nothing is published."""
        import psycopg

        sql = pgconn.sql()
        try:
            row = conn.execute(sql.SQL("SELECT {} FROM {} WHERE name = %s").format(
                sql.Identifier(column), sql.Identifier(KBS)), [self.loc["table"]]).fetchone()
        except psycopg.errors.UndefinedTable:
            return {}
        return dict(row[0] or {}) if row else {}

    def meta(self) -> dict:
        return self._row("meta")

    def manifest(self) -> dict:
        return self._row("manifest")

    def count(self, where: Any = None) -> int:
        if not self.meta():
            return 0
        cond, params = pgfilter.pg_where(where)
        with pgconn.reader(self.loc) as conn, pgfilter.filter_errors(where):
            return conn.execute(pgconn.sql().SQL("SELECT count(*) FROM {} WHERE {}").format(self._ident(), cond),
                                params).fetchone()[0]

    def _select(self) -> Any:
        sql = pgconn.sql()
        return sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)

    def chunks(self, where: Any = None) -> Iterator[Chunk]:
        """A server-side cursor: a large knowledge base is never held in memory at once."""
        if not self.meta():
            return
        sql = pgconn.sql()
        cond, params = pgfilter.pg_where(where)
        query = sql.SQL("SELECT {} FROM {} WHERE {}").format(self._select(), self._ident(), cond)
        with pgconn.reader(self.loc) as conn, conn.transaction(), pgfilter.filter_errors(where):
            with conn.cursor(name="inhouse_chunks") as cur:
                cur.itersize = _READ_BATCH
                cur.execute(query, params)
                for row in cur:
                    yield _chunk(dict(zip(COLUMNS, row)))

    def search_vector(self, vec: Sequence[float], k: int, where: Any = None) -> list[Hit]:
        """Cosine top-k on the HNSW index; the filter applies during the scan (pgvector's iterative
        scan), so it never starves the result, and ef_search is at least k so all k come back."""
        if k <= 0:
            return []
        sql = pgconn.sql()
        cond, params = pgfilter.pg_where(where)
        q = np.asarray(vec, dtype=np.float32)
        query = sql.SQL("SELECT {}, 1 - (vector <=> %s) FROM {} WHERE {} ORDER BY vector <=> %s LIMIT %s").format(
            self._select(), self._ident(), cond)
        with pgconn.reader(self.loc) as conn:
            if not self._row_on(conn, "meta"):
                return []
            with conn.transaction(), pgfilter.filter_errors(where):
                pgconn.register_vector(conn)
                conn.execute(f"SET LOCAL hnsw.ef_search = {min(1000, max(100, 2 * k))}")
                conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
                rows = conn.execute(query, [q, *params, q, k]).fetchall()
        return [_chunk(dict(zip(COLUMNS, r)), Hit, score=float(r[-1])) for r in rows]

    def search_text(self, query: str, k: int, where: Any = None) -> list[Hit]:
        """BM25 top-k over the English tsvector (see `pgtext`); a query with no word characters matches
        nothing. A knowledge base published before the postings existed is searched the earlier way."""
        if k <= 0 or not re.search(r"\w", query or ""):
            return []
        sql = pgconn.sql()
        cond, params = pgfilter.pg_where(where)
        cols = sql.SQL(", ").join(sql.Identifier("c", c) for c in COLUMNS)
        with pgconn.reader(self.loc) as conn:
            meta = self._row_on(conn, "meta")  # on the search's own connection: no second round trip
            if not meta:
                return []
            if meta.get("full_text") == pgtext.FULL_TEXT:
                statement = pgtext.bm25_sql(sql.Identifier(KBS), self._ident(), self._ident("__post"), cols, cond,
                                            bool(where))
                values = pgtext.bm25_params(self.loc["table"], query, params, k, bool(where))
            else:
                statement = pgtext.legacy_bm25_sql(sql.Identifier(KBS), self._ident(), cols, cond)
                values = [self.loc["table"], query, *params, k]
            with conn.transaction(), pgfilter.filter_errors(where):
                _raise_memory(conn, _SEARCH_MEMORY)
                rows = conn.execute(statement, values).fetchall()
        return [_chunk(dict(zip(COLUMNS, r)), Hit, score=float(r[-1])) for r in rows]

    # -- writing -----------------------------------------------------------

    @contextmanager
    def writer(self, embedder_name: str, dim: int, timeout: float = 0.0,
               resume_key: str | None = None, replace: bool = False) -> Iterator[PgStore]:
        """Hold the advisory lock for the block; readers go on reading the published state meanwhile.
        `replace` (a rebuild, perhaps with another embedder of the same dimension): the commit deletes every
        published chunk and inserts the staged ones in its one transaction; it never resumes."""
        with self.locked(timeout) as conn:
            try:
                self._mark()
                self._check_embedder(embedder_name, dim, replace)
                self._create(conn, dim)
                self._replace = replace
                self._resume_key, self._dim, self._embedder_name = (None if replace else resume_key), dim, embedder_name
                self._resume = self._open_stage(conn)
                self._conn = conn
                yield self
            finally:
                self._conn = None
                if not conn.closed:
                    conn.rollback()  # whatever came after the last checkpoint

    @contextmanager
    def locked(self, timeout: float = 0.0) -> Iterator[Any]:
        """The writer lock: a session advisory lock, which the server releases if this process dies."""
        check_kb_folder(self.path)
        conn = pgconn.connect(self.loc, autocommit=False)
        key = int.from_bytes(hashlib.sha256(f"inhouse:{self.loc['table']}".encode()).digest()[:8], "big", signed=True)
        deadline = time.monotonic() + timeout
        try:
            while not conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]:
                conn.rollback()
                if time.monotonic() >= deadline:
                    raise ConflictError(f"another indexing run is in progress on {self.path} (it holds the "
                                        f"writer lock in {pgconn.shown(self.loc)}); wait for it to finish")
                time.sleep(0.2)
            conn.commit()
            yield conn
        finally:
            conn.close()  # ends the session: rolls back and releases the lock

    def _mark(self) -> None:
        """The folder says what it is and where its chunks live (no password: see `location`)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if outputs.marker_kind(self.path) != KB_KIND:
            atomic.write_json(self.path / outputs.MARKER, {"kind": KB_KIND, "written_by": "inhouse"})
        if not (self.path / STORE_FILE).is_file():
            atomic.write_json(self.path / STORE_FILE, self.loc)

    def _check_embedder(self, name: str, dim: int, replace: bool = False) -> None:
        """Incremental runs must use the published embedder; a rebuild (`replace`) may change it, and its
        dimension too: it builds a new table (see `_rebuild`)."""
        meta = self.meta()
        if meta and not replace and (meta.get("embedder_name"), meta.get("dim")) != (name, dim):
            raise ConflictError(
                f"knowledge base {self.path} was indexed with embedder {meta.get('embedder_name')} "
                f"({meta.get('dim')}-d), not {name} ({dim}-d); use that embedder or index into a new knowledge base")

    def _create(self, conn: Any, dim: int) -> None:
        """Extension, tables and indexes, if missing; committed at once (they hold no data). A chunks
        table made by earlier code is left as it is until the commit rebuilds it."""
        import psycopg

        sql = pgconn.sql()
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as e:
            raise InhouseError(f"{pgconn.shown(self.loc)}: cannot enable pgvector ({pgconn.first_line(e)}); ask an "
                               "administrator to run CREATE EXTENSION vector in this database") from None
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, meta jsonb NOT NULL DEFAULT '{{}}', "
                             "manifest jsonb NOT NULL DEFAULT '{{}}', resume jsonb)").format(sql.Identifier(KBS)))
        if not self._exists(conn, ""):
            self._new_table(conn, self.loc["table"], dim)
            self._index(conn, self.loc["table"])
        self._create_stage(conn, dim)
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (doc_path text PRIMARY KEY)").format(self._ident("__deleted")))
        conn.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s) ON CONFLICT DO NOTHING").format(
            sql.Identifier(KBS)), [self.loc["table"]])
        conn.commit()
        pgconn.register_vector(conn)

    def _exists(self, conn: Any, suffix: str) -> bool:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [self._ident(suffix).as_string(conn)]).fetchone()[0]

    def _create_stage(self, conn: Any, dim: int) -> None:
        """The stage holds vectors of this run's dimension: one left by a run with another embedder is
        made anew (it is the writer's own, and emptied or resumed just after)."""
        sql = pgconn.sql()
        stage = self._ident("__stage")
        if self._exists(conn, "__stage") and conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'vector'",
                [stage.as_string(conn)]).fetchone()[0] != dim:
            conn.execute(sql.SQL("DROP TABLE {}").format(stage))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, vector vector({}) NOT NULL)").format(
            stage, self._columns(), sql.Literal(dim)))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (chunk_id)").format(self._ident("__stage_id"), stage))

    def _columns(self) -> Any:
        sql = pgconn.sql()
        return sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_TYPES[c])) for c in COLUMNS)

    def _new_table(self, conn: Any, name: str, dim: int) -> None:
        """A chunks table `name` and its postings table `name__post`, without keys or indexes (they are
        built once the rows are in: one HNSW build is many times faster than as many inserts into the graph)."""
        sql = pgconn.sql()
        conn.execute(sql.SQL("CREATE TABLE {} ({}, vector vector({}) NOT NULL, tsv tsvector NOT NULL, doc_len int NOT "
                             "NULL, rid bigint GENERATED ALWAYS AS IDENTITY)").format(
            sql.Identifier(name), self._columns(), sql.Literal(dim)))
        conn.execute(pgtext.postings_table(sql.Identifier(name + "__post")))

    def _index(self, conn: Any, name: str) -> None:
        sql = pgconn.sql()
        t = sql.Identifier(name)
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (chunk_id)").format(t, sql.Identifier(name + "_pkey")))
        conn.execute(sql.SQL("CREATE UNIQUE INDEX {} ON {} (rid)").format(sql.Identifier(name + "_rid"), t))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} (doc_path)").format(sql.Identifier(name + "_doc"), t))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (vector vector_cosine_ops)").format(
            sql.Identifier(name + "_vec"), t))
        conn.execute(pgtext.postings_key(sql.Identifier(name + "__post"), sql.Identifier(name + "__post_pkey")))

    def _open_stage(self, conn: Any) -> dict:
        """The crashed run's checkpoint when it is ours (same key, on top of the same published version);
        otherwise the stage is emptied: leftovers of another run are never published."""
        sql = pgconn.sql()
        point = conn.execute(sql.SQL("SELECT resume, meta FROM {} WHERE name = %s").format(sql.Identifier(KBS)),
                             [self.loc["table"]]).fetchone()
        resume, meta = (point[0] or {}), (point[1] or {})
        if self._resume_key is not None and resume.get("key") == self._resume_key \
                and resume.get("published") == meta.get("table_version") and isinstance(resume.get("done"), dict):
            return resume
        conn.execute(sql.SQL("TRUNCATE {}, {}").format(self._ident("__stage"), self._ident("__deleted")))
        conn.execute(sql.SQL("UPDATE {} SET resume = NULL WHERE name = %s").format(sql.Identifier(KBS)),
                     [self.loc["table"]])
        conn.commit()
        return {}

    def resume_point(self) -> dict:
        return dict(self._resume)

    def _writing(self) -> Any:
        if self._conn is None:
            raise RuntimeError("PgStore writes must happen inside `with store.writer(...)`")
        return self._conn

    def upsert(self, chunks: Sequence[Chunk], vectors: Any) -> int:
        """Stage chunks by chunk_id (a chunk staged twice keeps its last version), by binary COPY."""
        conn = self._writing()
        if not chunks:
            return 0
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(chunks), self._dim):
            raise InhouseError(f"vectors have shape {vectors.shape}, but this knowledge base stores {self._dim}-d "
                               f"vectors and {len(chunks)} chunks were given")
        sql = pgconn.sql()
        stage = self._ident("__stage")
        conn.execute(sql.SQL("DELETE FROM {} WHERE chunk_id = ANY(%s)").format(stage), [[c.chunk_id for c in chunks]])
        copy_sql = sql.SQL("COPY {} ({}, vector) FROM STDIN (FORMAT BINARY)").format(stage, self._select())
        with conn.cursor().copy(copy_sql) as copy:
            copy.set_types([*(_TYPES[c] for c in COLUMNS), "vector"])
            for chunk, vec in zip(chunks, vectors):
                copy.write_row([*(getattr(chunk, c) for c in COLUMNS), vec])
        return len(chunks)

    def delete_docs(self, paths: Iterable[str]) -> int:
        """Stage the deletion of every chunk of these documents (applied at commit); returns how many
        published and staged chunks they had."""
        conn, paths = self._writing(), sorted(set(paths))
        if not paths:
            return 0
        sql = pgconn.sql()
        published = conn.execute(sql.SQL(
            "SELECT count(*) FROM {} WHERE doc_path = ANY(%s) AND doc_path NOT IN (SELECT doc_path FROM {})").format(
            self._ident(), self._ident("__deleted")), [paths]).fetchone()[0]
        staged = conn.execute(sql.SQL("DELETE FROM {} WHERE doc_path = ANY(%s)").format(self._ident("__stage")),
                              [paths]).rowcount
        conn.execute(sql.SQL("INSERT INTO {} SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING").format(
            self._ident("__deleted")), [paths])
        return published + staged

    def checkpoint(self, done: Mapping[str, Any], deleted: Sequence[str]) -> None:
        """Commit the stage so far with the list of docs it holds whole: a killed run resumes from here."""
        conn = self._writing()
        if self._resume_key is None:
            return
        point = {"key": self._resume_key, "published": self.meta().get("table_version"),
                 "done": dict(done), "deleted": list(deleted)}
        sql = pgconn.sql()
        conn.execute(sql.SQL("UPDATE {} SET resume = %s WHERE name = %s").format(sql.Identifier(KBS)),
                     [json.dumps(point), self.loc["table"]])
        conn.commit()

    def commit(self, manifest: Mapping[str, Any], **info: Any) -> None:
        """Apply the stage to the chunks and their postings and publish meta and manifest: one transaction.
        In place when the published table can take it; otherwise (a rebuild, the first publish, a table
        of earlier code without postings) into a new table that replaces the old one at the end."""
        conn, old = self._writing(), self.meta()
        sql = pgconn.sql()
        _raise_memory(conn, _COMMIT_MEMORY)
        rebuild = self._replace or not old.get("chunks") or old.get("full_text") != pgtext.FULL_TEXT
        if rebuild:
            self._rebuild(conn, keep=not self._replace)
        else:
            self._apply(conn)
        chunks, avg_len = conn.execute(sql.SQL("SELECT count(*), coalesce(avg(doc_len), 0) FROM {}").format(
            self._ident())).fetchone()
        meta = {**old, **info, "format": FORMAT, "backend": "postgresql", "embedder_name": self._embedder_name,
                "dim": self._dim, "table_version": int(old.get("table_version") or 0) + 1, "chunks": chunks,
                "avg_len": float(avg_len), "full_text": pgtext.FULL_TEXT,
                "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        conn.execute(sql.SQL("UPDATE {} SET meta = %s, manifest = %s, resume = NULL WHERE name = %s").format(
            sql.Identifier(KBS)), [json.dumps(meta), json.dumps(dict(manifest)), self.loc["table"]])
        conn.execute(sql.SQL("TRUNCATE {}, {}").format(self._ident("__stage"), self._ident("__deleted")))
        conn.commit()
        self._resume = {}
        if rebuild:
            self._vacuum(conn)

    def _vacuum(self, conn: Any) -> None:
        """After a bulk load, as PostgreSQL's docs advise: mark the new tables' pages all-visible, so
        the postings are read from their key alone (index-only), at once rather than whenever
        autovacuum gets to them (minutes for a million chunks, competing with the first searches)."""
        sql = pgconn.sql()
        conn.autocommit = True
        try:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}, {}").format(self._ident(), self._ident("__post")))
        finally:
            conn.autocommit = False

    def _staged_rows(self, target: Any) -> Any:
        """INSERT the staged chunks into `target`, with their English tsvector and length (the number of
        lexeme positions, the BM25 document length)."""
        return pgconn.sql().SQL(
            "INSERT INTO {t} ({cols}, vector, tsv, doc_len) SELECT {cols}, vector, tsv, "
            "(SELECT coalesce(sum(cardinality(u.positions)), 0) FROM unnest(tsv) u) "
            "FROM (SELECT *, to_tsvector('english', text) AS tsv FROM {stage}) s").format(
            t=target, cols=self._select(), stage=self._ident("__stage"))

    def _apply(self, conn: Any) -> None:
        """In place: the deleted documents' and the re-staged chunks' rows and postings go, the staged
        rows and their postings come in. Readers keep the old state until the commit (MVCC)."""
        sql = pgconn.sql()
        t, post = self._ident(), self._ident("__post")
        for using in (sql.SQL("USING {} d WHERE c.doc_path = d.doc_path").format(self._ident("__deleted")),
                      sql.SQL("USING {} s WHERE c.chunk_id = s.chunk_id").format(self._ident("__stage"))):
            conn.execute(sql.SQL("WITH gone AS (DELETE FROM {} c {} RETURNING c.rid, c.tsv) {}").format(
                t, using, pgtext.drop_postings(post, sql.Identifier("gone"))))
        conn.execute(sql.SQL("WITH new AS ({} RETURNING rid, tsv, doc_len) {}").format(
            self._staged_rows(t), pgtext.add_postings(post, sql.Identifier("new"))))

    def _rebuild(self, conn: Any, keep: bool) -> None:
        """Fill a new chunks table (the kept published rows when `keep`, then the staged ones) and its
        postings, index them, then drop the old tables and give the new ones their names. Searches read
        the old table, unblocked, until the drop; from there they wait for the commit and then read the
        new one (PostgreSQL looks a table's name up again after waiting for its lock). The new table
        takes this run's dimension, so a rebuild may change the embedder's."""
        sql = pgconn.sql()
        name = self.loc["table"] + "__new"
        new = sql.Identifier(name)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(new, sql.Identifier(name + "__post")))
        self._new_table(conn, name, self._dim)
        if keep and self._exists(conn, ""):
            conn.execute(sql.SQL(
                "INSERT INTO {new} ({cols}, vector, tsv, doc_len) SELECT {cols}, vector, tsv, doc_len FROM {t} c "
                "WHERE NOT EXISTS (SELECT 1 FROM {d} d WHERE d.doc_path = c.doc_path) "
                "AND NOT EXISTS (SELECT 1 FROM {s} s WHERE s.chunk_id = c.chunk_id)").format(
                new=new, cols=self._select(), t=self._ident(), d=self._ident("__deleted"), s=self._ident("__stage")))
        conn.execute(self._staged_rows(new))
        conn.execute(pgtext.add_postings(sql.Identifier(name + "__post"), new))
        self._index(conn, name)
        self._swap(conn, name)

    def _swap(self, conn: Any, name: str) -> None:
        """Drop the published tables and rename table `name`, its postings and their indexes after them."""
        sql = pgconn.sql()
        t = self.loc["table"]
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(self._ident(), self._ident("__post")))
        seq = conn.execute("SELECT pg_get_serial_sequence(%s, 'rid')", [sql.Identifier(name).as_string(conn)]).fetchone()[0]
        conn.execute(sql.SQL("ALTER SEQUENCE {} RENAME TO {}").format(sql.SQL(seq), sql.Identifier(t + "_rid_seq")))
        for suffix in ("", "_pkey", "_rid", "_doc", "_vec", "__post", "__post_pkey"):
            kind = "TABLE" if suffix in ("", "__post") else "INDEX"
            conn.execute(sql.SQL("ALTER {} {} RENAME TO {}").format(
                sql.SQL(kind), sql.Identifier(name + suffix), sql.Identifier(t + suffix)))
        conn.execute(sql.SQL("ANALYZE {}, {}").format(self._ident(), self._ident("__post")))


def _raise_memory(conn: Any, floors: Mapping[str, str]) -> None:
    """Raise these memory settings for the current transaction where the server's are lower; never lower them."""
    for setting, floor in floors.items():
        conn.execute("SELECT set_config(%s, %s, true) WHERE pg_size_bytes(current_setting(%s)) < pg_size_bytes(%s)",
                     [setting, floor, setting, floor])
