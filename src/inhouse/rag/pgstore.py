"""A knowledge base in PostgreSQL with pgvector: the same `Store` as LanceDB, for corpora that outgrow
one process or are shared by several servers.

The knowledge base's folder (INHOUSE_HOME/kb/NAME) still exists; its `store.json` says where the
chunks live: a connection string *without* its password (libpq finds that in PGPASSWORD or
~/.pgpass), or the name of an environment variable holding the whole string (`--store env:VAR`),
plus the table. Secrets therefore never reach the folder, lineage, events or error messages.

In the database, per knowledge base (quoted identifiers, made on the first write):

- `kb_<name>`: one row per chunk, its vector (HNSW index, cosine), its English `tsvector` (GIN
  index) and token count; `inhouse_kbs`: one row per knowledge base with the published meta, the
  manifest and a crashed run's checkpoint;
- `kb_<name>__stage` and `kb_<name>__deleted`: the writer's upserts and deleted documents.

Why readers never see half an update: a writer only fills the stage tables; `commit()` applies them
to the chunks table and replaces the meta and manifest in one transaction, so MVCC shows every
reader the old state or the new one. The writer's open transaction is committed only at
`checkpoint()`, so a killed run leaves exactly its last checkpoint in the stage, and the next run
under the same resume key goes on from there (any other run empties the stage first). One writer at
a time: a session advisory lock keyed on the table, which the server drops when the writer's
connection dies.

Full text uses PostgreSQL's own English parser, stemmer and stop words for matching (GIN), and
scores the matches by BM25 (k1=1.2, b=0.75, as LanceDB) in SQL, so the bm25 and hybrid rankings
stay comparable with the embedded store; any query word may match (OR), as there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from inhouse import atomic, outputs
from inhouse.errors import ConflictError, InhouseError, InvalidInputError, NotFoundError
from inhouse.rag.chunk import Chunk, Hit
from inhouse.rag.store import COLUMNS, FORMAT, KB_KIND, STORE_FILE, Store, _chunk, check_kb_folder, like_pattern

KBS = "inhouse_kbs"
K1, B = 1.2, 0.75
_READ_BATCH = 4096
_TYPES = {"chunk_id": "text", "doc_path": "text", "title": "text", "heading_path": "text", "text": "text",
          "start": "int8", "end": "int8", "page": "int4", "mtime": "float8", "sha256": "text"}
INSTALL = "PostgreSQL knowledge bases need psycopg and pgvector: pip install 'inhouse[postgres]'"


def _sql() -> Any:
    try:
        import psycopg  # noqa: F401
        from psycopg import sql
    except ImportError:
        raise InhouseError(INSTALL) from None
    return sql


# -- where the knowledge base lives -------------------------------------------------------------


def is_store_spec(text: str | None) -> bool:
    """A --store value naming PostgreSQL: a postgresql:// URL or env:VAR (a variable holding one)."""
    return bool(text) and (text.startswith(("postgresql://", "postgres://", "env:")))


def location(spec: str, kb_name: str) -> dict[str, Any]:
    """What store.json records for --store `spec`: never a password (a URL with one is refused)."""
    if spec.startswith("env:"):
        var = spec[4:]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            raise InvalidInputError(f"--store env:{var}: name an environment variable (letters, digits, _)")
        return {"backend": "postgresql", "dsn_env": var, "table": table_name(kb_name)}
    _sql()
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(spec)
    except Exception:  # the message would quote the URL
        raise InvalidInputError("--store: not a valid postgresql:// connection string") from None
    if params.pop("password", None):  # an empty one (user:@host) is no secret
        raise InvalidInputError("--store: the connection string holds a password, and inhouse never writes one "
                                "down; drop it from the URL and set PGPASSWORD (or ~/.pgpass), or pass the whole "
                                "URL in an environment variable: --store env:VARIABLE")
    return {"backend": "postgresql", "dsn": make_conninfo(**params), "table": table_name(kb_name)}


def table_name(kb_name: str) -> str:
    """The chunks table of a knowledge base: readable, within PostgreSQL's 63 bytes, distinct per name."""
    name = atomic.final_name(Path(kb_name))
    slug = re.sub(r"[^a-z0-9_]+", "_", name.lower())[:30]
    return f"kb_{slug}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def shown(loc: Mapping[str, Any]) -> str:
    """The location for messages: the password-free conninfo, or the variable's name."""
    where = f"${loc['dsn_env']}" if loc.get("dsn_env") else repr(loc.get("dsn", ""))
    return f"postgresql {where}, table {loc['table']}"


def _conninfo(loc: Mapping[str, Any]) -> str:
    if loc.get("dsn_env"):
        value = os.environ.get(loc["dsn_env"])
        if not value:
            raise InhouseError(f"the knowledge base lives in PostgreSQL at ${loc['dsn_env']}, which is not set; "
                               "export it (the connection string) and try again")
        return value
    return loc["dsn"]


def attach(path: Path, spec: str) -> PgStore:
    """Make folder `path` name the PostgreSQL knowledge base of the same name that another machine indexed
    (several servers sharing one database): only store.json is written, after the database confirms it."""
    store = PgStore(path, location(spec, path.name))
    if not store.meta():
        raise NotFoundError(f"no published knowledge base {path.name!r} in {shown(store.loc)}; "
                            "index it first (inhouse rag index FOLDER --kb NAME --store ...)")
    check_kb_folder(path)
    existing = path / STORE_FILE
    if existing.is_file() and PgStore.from_folder(path).loc != store.loc:
        raise ConflictError(f"{path} already names another store; choose another --kb")
    if (path / "kb.json").is_file():
        raise ConflictError(f"{path} is an embedded (LanceDB) knowledge base; choose another name")
    store._mark()
    return store


# -- connections: a small per-process pool, so a server does not connect per request ------------

_pool: dict[tuple[int, str], list[Any]] = {}
_pool_lock = threading.Lock()


def _connect(loc: Mapping[str, Any], autocommit: bool) -> Any:
    _sql()
    import psycopg

    try:
        conn = psycopg.connect(_conninfo(loc), autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as e:  # libpq's message names host and user, never the password
        raise InhouseError(f"cannot connect to {shown(loc)}: {_first_line(e)}") from None
    _register(conn)
    return conn


@contextmanager
def _reader(loc: Mapping[str, Any]) -> Iterator[Any]:
    """An autocommit connection (each statement sees the latest published state) for one operation."""
    key = (os.getpid(), _conninfo(loc))  # read each time: a variable that changed or went away is noticed
    with _pool_lock:
        conn = _pool.get(key, []).pop() if _pool.get(key) else None
    if conn is None or conn.closed or conn.broken:
        conn = _connect(loc, autocommit=True)
    try:
        yield conn
    except BaseException:
        conn.close()  # a half-read cursor or a failed statement: do not hand it on
        raise
    with _pool_lock:
        _pool.setdefault(key, []).append(conn)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# -- filters ------------------------------------------------------------------------------------


def pg_where(where: str | Mapping[str, Any] | None) -> tuple[Any, list[Any]]:
    """A filter as parameterised SQL and its values; an SQL string passes through, as in LanceStore."""
    sql = _sql()
    if not where:
        return sql.SQL("TRUE"), []
    if isinstance(where, str):
        return sql.SQL("({})").format(sql.SQL(where.replace("%", "%%"))), []
    parts, params = [], []
    for col, value in where.items():
        part, values = _condition(col, value)
        parts.append(part)
        params += values
    return sql.SQL(" AND ").join(parts), params


def _condition(col: str, value: Any) -> tuple[Any, list[Any]]:
    sql = _sql()
    if col not in COLUMNS:
        raise InvalidInputError(f"cannot filter on {col!r}; columns: {', '.join(COLUMNS)}")
    many = isinstance(value, (list, tuple, set, frozenset))
    values = list(value) if many else [value]
    plain = [v for v in values if not isinstance(v, Mapping)]
    globs = [like_pattern(v["glob"]) for v in values if isinstance(v, Mapping)]
    ident = sql.Identifier(col)
    tests = [sql.SQL("{} LIKE %s ESCAPE '\\'").format(ident) for _ in globs]
    params: list[Any] = list(globs)
    if plain or not values:
        tests.insert(0, sql.SQL("{} = ANY(%s)").format(ident))
        params.insert(0, plain)
    return sql.SQL("({})").format(sql.SQL(" OR ").join(tests)), params


@contextmanager
def _filter_errors(where: Any) -> Iterator[None]:
    """A filter the database rejects is the user's input: one line, no SQL state dump."""
    import psycopg

    try:
        yield
    except (psycopg.errors.SyntaxError, psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction,
            psycopg.errors.DataError, psycopg.errors.DatatypeMismatch) as e:
        raise InvalidInputError(f"bad filter {where!r}: {_first_line(e)}") from None


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
        return f"PgStore({str(self.path)!r}, {shown(self.loc)!r})"

    def _ident(self, suffix: str = "") -> Any:
        return _sql().Identifier(self.loc["table"] + suffix)

    # -- published state ---------------------------------------------------

    def _row(self, column: str) -> dict:
        import psycopg

        sql = _sql()
        with _reader(self.loc) as conn:
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
        cond, params = pg_where(where)
        with _reader(self.loc) as conn, _filter_errors(where):
            return conn.execute(_sql().SQL("SELECT count(*) FROM {} WHERE {}").format(self._ident(), cond),
                                params).fetchone()[0]

    def _select(self) -> Any:
        sql = _sql()
        return sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)

    def chunks(self, where: Any = None) -> Iterator[Chunk]:
        """A server-side cursor: a large knowledge base is never held in memory at once."""
        if not self.meta():
            return
        sql = _sql()
        cond, params = pg_where(where)
        query = sql.SQL("SELECT {} FROM {} WHERE {}").format(self._select(), self._ident(), cond)
        with _reader(self.loc) as conn, conn.transaction(), _filter_errors(where):
            with conn.cursor(name="inhouse_chunks") as cur:
                cur.itersize = _READ_BATCH
                cur.execute(query, params)
                for row in cur:
                    yield _chunk(dict(zip(COLUMNS, row)))

    def search_vector(self, vec: Sequence[float], k: int, where: Any = None) -> list[Hit]:
        """Cosine top-k on the HNSW index; the filter applies during the scan (pgvector's iterative
        scan), so it never starves the result, and ef_search is at least k so all k come back."""
        if k <= 0 or not self.meta():
            return []
        sql = _sql()
        cond, params = pg_where(where)
        q = np.asarray(vec, dtype=np.float32)
        query = sql.SQL("SELECT {}, 1 - (vector <=> %s) FROM {} WHERE {} ORDER BY vector <=> %s LIMIT %s").format(
            self._select(), self._ident(), cond)
        with _reader(self.loc) as conn, conn.transaction(), _filter_errors(where):
            _register(conn)
            conn.execute(f"SET LOCAL hnsw.ef_search = {min(1000, max(100, 2 * k))}")
            conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            rows = conn.execute(query, [q, *params, q, k]).fetchall()
        return [_chunk(dict(zip(COLUMNS, r)), Hit, score=float(r[-1])) for r in rows]

    def search_text(self, query: str, k: int, where: Any = None) -> list[Hit]:
        """BM25 top-k over the English tsvector; a query with no word characters matches nothing."""
        if k <= 0 or not re.search(r"\w", query or "") or not self.meta():
            return []
        cond, params = pg_where(where)
        with _reader(self.loc) as conn, _filter_errors(where):
            rows = conn.execute(self._bm25_sql(cond), [self.loc["table"], query, *params, k]).fetchall()
        return [_chunk(dict(zip(COLUMNS, r)), Hit, score=float(r[-1])) for r in rows]

    def _bm25_sql(self, cond: Any) -> Any:
        """One statement, so the statistics (N, mean length, document frequencies) and the matches come
        from the same snapshot. idf = ln(1 + (N - df + 0.5) / (df + 0.5)), as Lucene and LanceDB. Each term
        is looked up in the GIN index once: df is counted over its matches before the filter, and its
        frequency in a chunk is ts_rank_cd of that one term with unit weights and no normalisation
        (computed in C, no unnesting of the tsvector). The cost grows with the chunks matching any query
        word: there is no early termination as in LanceDB's index."""
        sql = _sql()
        return sql.SQL("""
WITH kb AS (SELECT (meta->>'chunks')::float8 AS n, greatest((meta->>'avg_len')::float8, 1) AS avgdl
            FROM {kbs} WHERE name = %s),
terms AS (SELECT DISTINCT u.lexeme, quote_literal(u.lexeme)::tsquery AS q FROM unnest(to_tsvector('english', %s)) u),
matches AS (SELECT c.chunk_id, c.doc_len, ts_rank_cd('{{1,1,1,1}}', c.tsv, t.q, 0) AS tf, {cond} AS keep,
                   count(*) OVER (PARTITION BY t.lexeme)::float8 AS df
            FROM terms t JOIN {t} c ON c.tsv @@ t.q),
scored AS (SELECT m.chunk_id, sum(ln(1 + (kb.n - m.df + 0.5) / (m.df + 0.5)) * m.tf * {k1p}
                                  / (m.tf + {k1} * (1 - {b} + {b} * m.doc_len / kb.avgdl))) AS score
           FROM matches m CROSS JOIN kb WHERE m.keep GROUP BY m.chunk_id)
SELECT {cols}, s.score FROM scored s JOIN {t} c USING (chunk_id) ORDER BY s.score DESC, chunk_id LIMIT %s
""").format(kbs=sql.Identifier(KBS), t=self._ident(), cond=cond, k1p=sql.Literal(K1 + 1), k1=sql.Literal(K1),
            b=sql.Literal(B), cols=sql.SQL(", ").join(sql.Identifier("c", c) for c in COLUMNS))

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
        conn = _connect(self.loc, autocommit=False)
        key = int.from_bytes(hashlib.sha256(f"inhouse:{self.loc['table']}".encode()).digest()[:8], "big", signed=True)
        deadline = time.monotonic() + timeout
        try:
            while not conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]:
                conn.rollback()
                if time.monotonic() >= deadline:
                    raise ConflictError(f"another indexing run is in progress on {self.path} (it holds the "
                                        f"writer lock in {shown(self.loc)}); wait for it to finish")
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
        meta = self.meta()
        if meta and replace and meta.get("dim") != dim:
            raise ConflictError(
                f"knowledge base {self.path} stores {meta.get('dim')}-d vectors in {shown(self.loc)}; a rebuild "
                f"with a {dim}-d embedder is not supported there yet: index into a new knowledge base")
        if meta and not replace and (meta.get("embedder_name"), meta.get("dim")) != (name, dim):
            raise ConflictError(
                f"knowledge base {self.path} was indexed with embedder {meta.get('embedder_name')} "
                f"({meta.get('dim')}-d), not {name} ({dim}-d); use that embedder or index into a new knowledge base")

    def _create(self, conn: Any, dim: int) -> None:
        """Extension, tables and indexes, if missing; committed at once (they hold no data)."""
        import psycopg

        sql = _sql()
        t = self.loc["table"]
        cols = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_TYPES[c])) for c in COLUMNS)
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as e:
            raise InhouseError(f"{shown(self.loc)}: cannot enable pgvector ({_first_line(e)}); ask an administrator "
                               "to run CREATE EXTENSION vector in this database") from None
        statements = [
            "CREATE TABLE IF NOT EXISTS {kbs} (name text PRIMARY KEY, meta jsonb NOT NULL DEFAULT '{{}}', "
            "manifest jsonb NOT NULL DEFAULT '{{}}', resume jsonb)",
            "CREATE TABLE IF NOT EXISTS {t} ({cols}, vector vector({dim}) NOT NULL, tsv tsvector NOT NULL, "
            "doc_len int NOT NULL, PRIMARY KEY (chunk_id))",
            "CREATE INDEX IF NOT EXISTS {t_doc} ON {t} (doc_path)",
            "CREATE INDEX IF NOT EXISTS {t_fts} ON {t} USING gin (tsv)",
            "CREATE INDEX IF NOT EXISTS {t_vec} ON {t} USING hnsw (vector vector_cosine_ops)",
            "CREATE TABLE IF NOT EXISTS {stage} ({cols}, vector vector({dim}) NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {stage_id} ON {stage} (chunk_id)",
            "CREATE TABLE IF NOT EXISTS {deleted} (doc_path text PRIMARY KEY)",
        ]
        names = {"kbs": sql.Identifier(KBS), "t": sql.Identifier(t), "cols": cols, "dim": sql.Literal(dim),
                 "t_doc": sql.Identifier(t + "_doc"), "t_fts": sql.Identifier(t + "_fts"),
                 "t_vec": sql.Identifier(t + "_vec"), "stage": sql.Identifier(t + "__stage"),
                 "stage_id": sql.Identifier(t + "__stage_id"), "deleted": sql.Identifier(t + "__deleted")}
        for statement in statements:
            conn.execute(sql.SQL(statement).format(**names))
        conn.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s) ON CONFLICT DO NOTHING").format(
            sql.Identifier(KBS)), [t])
        conn.commit()
        _register(conn)

    def _open_stage(self, conn: Any) -> dict:
        """The crashed run's checkpoint when it is ours (same key, on top of the same published version);
        otherwise the stage is emptied: leftovers of another run are never published."""
        sql = _sql()
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
        sql = _sql()
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
        sql = _sql()
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
        sql = _sql()
        conn.execute(sql.SQL("UPDATE {} SET resume = %s WHERE name = %s").format(sql.Identifier(KBS)),
                     [json.dumps(point), self.loc["table"]])
        conn.commit()

    def _bulk(self, conn: Any, first: bool) -> Any:
        """Into an empty table, build the indexes after the rows (in the same transaction): one HNSW
        build is many times faster than as many single inserts into the graph."""
        if not first:
            return _noop()
        sql = _sql()

        @contextmanager
        def rebuilt() -> Iterator[None]:
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}, {}").format(self._ident("_fts"), self._ident("_vec")))
            yield
            conn.execute(sql.SQL("CREATE INDEX {} ON {} USING gin (tsv)").format(self._ident("_fts"), self._ident()))
            conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (vector vector_cosine_ops)").format(
                self._ident("_vec"), self._ident()))
        return rebuilt()

    def commit(self, manifest: Mapping[str, Any], **info: Any) -> None:
        """Apply the stage to the chunks table and publish meta and manifest: one transaction."""
        conn, old = self._writing(), self.meta()
        sql = _sql()
        t, stage, deleted = self._ident(), self._ident("__stage"), self._ident("__deleted")
        if self._replace:  # readers keep the old rows until this transaction commits
            conn.execute(sql.SQL("DELETE FROM {}").format(t))
        conn.execute(sql.SQL("DELETE FROM {} c USING {} d WHERE c.doc_path = d.doc_path").format(t, deleted))
        conn.execute(sql.SQL("DELETE FROM {} c USING {} s WHERE c.chunk_id = s.chunk_id").format(t, stage))
        conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        with self._bulk(conn, first=not old.get("chunks")):
            conn.execute(sql.SQL(
                "INSERT INTO {t} ({cols}, vector, tsv, doc_len) SELECT {cols}, vector, tsv, "
                "(SELECT coalesce(sum(cardinality(u.positions)), 0) FROM unnest(tsv) u) "
                "FROM (SELECT *, to_tsvector('english', text) AS tsv FROM {stage}) s").format(
                t=t, cols=self._select(), stage=stage))
        chunks, avg_len = conn.execute(sql.SQL("SELECT count(*), coalesce(avg(doc_len), 0) FROM {}").format(t)).fetchone()
        meta = {**old, **info, "format": FORMAT, "backend": "postgresql", "embedder_name": self._embedder_name,
                "dim": self._dim, "table_version": int(old.get("table_version") or 0) + 1, "chunks": chunks,
                "avg_len": float(avg_len), "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        conn.execute(sql.SQL("UPDATE {} SET meta = %s, manifest = %s, resume = NULL WHERE name = %s").format(
            sql.Identifier(KBS)), [json.dumps(meta), json.dumps(dict(manifest)), self.loc["table"]])
        conn.execute(sql.SQL("TRUNCATE {}, {}").format(stage, deleted))
        conn.commit()
        self._resume = {}


@contextmanager
def _noop() -> Iterator[None]:
    yield


def _register(conn: Any) -> None:
    """pgvector's adapter, once per connection; the type exists only after the first write made it."""
    import psycopg
    from pgvector.psycopg import register_vector

    if conn.adapters.types.get("vector") is not None:
        return
    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        if not conn.autocommit:
            conn.rollback()
