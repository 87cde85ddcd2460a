"""Where a knowledge base's chunks live: a small store interface and LanceDB behind it.

A knowledge base is a folder (`paths.kbs()/NAME` by default) holding:

- `lance/chunks.lance`: one LanceDB table, one row per chunk, with its vector
  and a native BM25 full-text index on `text` (English stemming, stop words);
- `kb.json`: the embedder's name and dimension, the name of the manifest file
  (doc_path -> sha256, chunk count, indexed_at) and `table_version`, the
  table version that this manifest describes;
- `.lock`: held (flock) by the one writer allowed at a time;
- `resume.json`, only while a run is unfinished: the table version its last
  checkpoint reached and the documents fully written by then.

Why readers never see a half-written index: every LanceDB write makes a new
table version atomically, but one indexing run makes several (deletes,
upserts, optimize). Readers therefore open the table *at `table_version`
from kb.json*, never at "latest"; the writer replaces kb.json (temp file,
fsync, rename) only after its last table write. A reader sees the whole old
state or the whole new one. A crashed run leaves kb.json untouched, and the
next writer first restores the table to `table_version`, or, when the
crashed run left a checkpoint on top of that same published version, to the
checkpoint, so a long run resumes instead of starting over. Old versions are
pruned, but never the published one nor anything newer than it.

Vector search is exact (no ANN index): fine up to a few hundred thousand
chunks. Do not fork a process once lancedb is in use (its runtime threads do
not survive a fork); the lock is flock, meant for a local filesystem.

`Store` is the interface search and index use; `store_at` picks the backend of
a knowledge base: this LanceDB table, or PostgreSQL + pgvector
(`inhouse.rag.pgstore`) when the folder holds a `store.json` saying so.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from inhouse import atomic, outputs
from inhouse.paths import kbs
from inhouse.errors import ConflictError, InhouseError, InvalidInputError, NotFoundError, did_you_mean
from inhouse.rag.chunk import Chunk, Hit
from inhouse.rag.config import FILTER_KEYS

TABLE = "chunks"
META = "kb.json"
LOCK = ".lock"
RESUME = "resume.json"
STORE_FILE = "store.json"  # only in a knowledge base whose chunks live elsewhere (PostgreSQL)
FORMAT = 1
COLUMNS = tuple(FILTER_KEYS)  # every column but the vector
_DELETE_BATCH = 500
_READ_BATCH = 4096
KB_KIND = "knowledge base"


def kb_path(name: str) -> Path:
    """The folder of knowledge base `name` in the library; names are plain, so they cannot escape it."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise InvalidInputError(f"knowledge base name {name!r} must be a plain name (letters, digits, - _ .)")
    return kbs() / name


def resolve_kb(kb: str | os.PathLike) -> Path:
    """A knowledge base by library name (a plain name) or by folder (a Path, or a string with a / or ~)."""
    text = os.fspath(kb)
    if isinstance(kb, os.PathLike) or "/" in text or os.sep in text or text.startswith("~"):
        return Path(text).expanduser()
    return kb_path(text)


def store_at(path: Path, store: str | None = None) -> Store:
    """The store of the knowledge base at `path`: where its store.json points (PostgreSQL), else the
    embedded LanceDB table in the folder. `store` (a --store value) chooses the backend of a new one;
    an existing knowledge base keeps its own."""
    from inhouse.rag import pgconn, pgstore

    if (path / STORE_FILE).is_file():
        found = pgstore.PgStore.from_folder(path)
        if store and pgconn.location(store, path.name) != found.loc:
            raise ConflictError(f"knowledge base {path} lives in {pgconn.shown(found.loc)}, not the --store given; "
                                "leave --store out, or index into a new knowledge base")
        return found
    if not store or store == "lancedb":
        return LanceStore(path)
    if not pgconn.is_store_spec(store):
        raise InvalidInputError("--store: give lancedb (the default), a postgresql:// connection string "
                                "or env:VARIABLE (a variable holding one)")
    if (path / META).is_file():
        raise ConflictError(f"knowledge base {path} already lives in LanceDB; index into a new knowledge base "
                            "to move it to PostgreSQL")
    return pgstore.PgStore(path, pgconn.location(store, path.name))


def open_kb(kb: str | os.PathLike) -> Store:
    """A knowledge base that exists (by library name or folder), ready to read, whichever its backend."""
    store = store_at(resolve_kb(kb))
    if not store.meta():
        known = sorted(p.name for p in kbs().iterdir() if p.is_dir()) if kbs().is_dir() else []
        raise NotFoundError(f"no knowledge base at {store.path}{did_you_mean(os.fspath(kb), known)}; "
                            "index a folder into it first (inhouse rag index FOLDER --kb NAME)")
    return store


def check_kb_folder(path: Path) -> None:
    """A knowledge base is written into a new or empty folder, or an existing knowledge base: never
    into a folder of the user's (its files would be mixed with ours)."""
    if os.path.lexists(path) and not path.is_dir():
        raise InvalidInputError(f"--kb {path} is a file, not a knowledge base folder")
    if not path.is_dir() or outputs.is_empty_dir(path) or outputs.marker_kind(path) == KB_KIND:
        return
    if (path / META).is_file() or (path / "lance").is_dir() or (path / STORE_FILE).is_file():  # pre-marker
        return
    raise ConflictError(f"--kb {path} exists and was not written by inhouse (it is not a knowledge base); "
                        "give a new folder or a knowledge base name")


def schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("chunk_id", pa.string()), ("doc_path", pa.string()), ("title", pa.string()),
        ("heading_path", pa.string()), ("text", pa.string()), ("start", pa.int64()), ("end", pa.int64()),
        ("page", pa.int32()), ("mtime", pa.float64()), ("sha256", pa.string()),
        ("vector", pa.list_(pa.float32(), dim)),
    ])


def sql_literal(value: Any) -> str:
    """A value as a SQL literal; strings get quotes doubled so paths with ' cannot break a filter."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def where_sql(where: str | Mapping[str, Any] | None) -> str | None:
    """A filter as SQL: a string passes through; a dict means column = value, all of them (a list means
    any of its values; {"glob": "handbook/*"} a wildcard pattern, see `inhouse.rag.config.parse_where`)."""
    if where is None or isinstance(where, str):
        return where or None
    return " AND ".join(_condition(col, value) for col, value in where.items()) or None


def _condition(col: str, value: Any) -> str:
    if col not in COLUMNS:
        raise InvalidInputError(f"cannot filter on {col!r}; columns: {', '.join(COLUMNS)}")
    values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
    plain = [v for v in values if not isinstance(v, Mapping)]
    tests = [f"`{col}` LIKE {sql_literal(like_pattern(v['glob']))} ESCAPE '\\'" for v in values if isinstance(v, Mapping)]
    if plain or not values:
        one = len(plain) == 1 and not isinstance(value, (list, tuple, set, frozenset))
        tests.insert(0, f"`{col}` = {sql_literal(plain[0])}" if one else
                     f"`{col}` IN ({', '.join(sql_literal(v) for v in plain) or 'NULL'})")
    return tests[0] if len(tests) == 1 else "(" + " OR ".join(tests) + ")"


def like_pattern(glob: str) -> str:
    """A wildcard pattern (`*` any text, `/` included; `?` one character; `\\*`, `\\?` literal) as SQL
    LIKE with backslash escapes, so a `_` or `%` in a file name matches only itself."""
    out, chars = [], iter(glob)
    for c in chars:
        if c == "\\":
            c = next(chars, "\\")
            out.append("\\" + c if c in "%_\\" else c)
        else:
            out.append({"*": "%", "?": "_", "%": "\\%", "_": "\\_"}.get(c, c))
    return "".join(out)


class Store(ABC):
    """What indexing and search need from a vector + full-text store.

    Writes happen inside `writer()` and become visible to readers only at
    `commit()`. Searches return `Hit`s, best first, whose `score` is the cosine
    similarity (vectors) or BM25 (text); `chunks` and `sample` read the
    published chunks themselves (RAFT data, embedder tuning).
    """

    @abstractmethod
    def writer(self, embedder_name: str, dim: int, timeout: float = 0.0, resume_key: str | None = None,
               replace: bool = False) -> Any:
        """Context manager: take the writer lock, refuse another embedder, drop uncommitted writes
        (except those of a checkpoint made under the same `resume_key`, when the store can resume).
        `replace`: the commit replaces every chunk (a rebuild, with this embedder), where the store can."""

    @abstractmethod
    def upsert(self, chunks: Sequence[Chunk], vectors: Any) -> int:
        """Insert or replace chunks (with their document's mtime and sha256 set) by chunk_id."""

    @abstractmethod
    def delete_docs(self, paths: Iterable[str]) -> int: ...

    @abstractmethod
    def commit(self, manifest: Mapping[str, Any], **info: Any) -> None:
        """Publish all writes since `writer()` together with the manifest, atomically."""

    def checkpoint(self, done: Mapping[str, Any], deleted: Sequence[str]) -> None:
        """Remember that the docs in `done` are fully written and those in `deleted` lost their published
        chunks, so a crashed run can resume; optional."""

    def resume_point(self) -> dict:
        """The checkpoint of a crashed run under the same resume_key ({} when none): `done`, `deleted`."""
        return {}

    @abstractmethod
    def search_vector(self, vec: Sequence[float], k: int, where: Any = None) -> list[Hit]: ...

    @abstractmethod
    def search_text(self, query: str, k: int, where: Any = None) -> list[Hit]: ...

    @abstractmethod
    def chunks(self, where: Any = None) -> Iterator[Chunk]:
        """Every published chunk (matching `where`), in the store's own order."""

    def sample(self, n: int, seed: int = 0, where: Any = None) -> list[Chunk]:
        """`n` chunks drawn uniformly without replacement (all of them when fewer), the same for the same
        seed and contents, ordered by document and position. Two passes: only ids are held for the draw."""
        rng = random.Random(seed)
        ids = sorted(c.chunk_id for c in self.chunks(where))
        keep = set(rng.sample(ids, min(n, len(ids)))) if n > 0 else set()
        return sorted((c for c in self.chunks(where) if c.chunk_id in keep), key=lambda c: (c.doc_path, c.start))

    @abstractmethod
    def count(self, where: Any = None) -> int: ...

    @abstractmethod
    def meta(self) -> dict:
        """embedder_name, dim, table_version, manifest_file, ... of the published state; {} before the first commit."""

    @abstractmethod
    def manifest(self) -> dict:
        """doc_path -> what was indexed from it, for incremental re-indexing."""


class LanceStore(Store):
    """Store over one embedded, persistent LanceDB table (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        self._db: Any = None
        self._table: Any = None  # the writer's handle, at the latest version
        self._dim = 0
        self._embedder_name = ""
        self._reader: Any = None
        self._reader_key: Any = None
        self._resume: dict = {}  # the checkpoint the writer resumed from
        self._resume_key: str | None = None

    def __repr__(self) -> str:
        return f"LanceStore({str(self.path)!r})"

    # -- published state ---------------------------------------------------

    def meta(self) -> dict:
        try:
            return json.loads((self.path / META).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise InhouseError(f"cannot read {self.path / META}: {e}; re-index into a new knowledge base") from e

    def manifest(self) -> dict:
        """doc_path -> {sha256, chunks, ...} of the published state (read only by the indexer)."""
        meta = self.meta()
        if "manifest_file" not in meta:
            return dict(meta.get("manifest", {}))
        try:
            return json.loads((self.path / meta["manifest_file"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InhouseError(f"cannot read the manifest of {self.path}: {e}; re-index into a new knowledge base") from e

    def count(self, where: Any = None) -> int:
        table = self._read_table()
        if table is None:
            return 0
        try:
            return table.count_rows(where_sql(where))
        except ValueError as e:
            raise InvalidInputError(f"bad filter {where_sql(where)!r}: {str(e).splitlines()[0]}") from e

    def chunks(self, where: Any = None) -> Iterator[Chunk]:
        """Read in batches, so a large knowledge base is never held in memory at once."""
        table = self._read_table()
        if table is None:
            return
        query = table.search().select(list(COLUMNS)).limit(None)
        sql = where_sql(where)
        try:
            for batch in (query.where(sql) if sql else query).to_batches(_READ_BATCH):
                yield from (_chunk(row) for row in batch.to_pylist())
        except ValueError as e:
            raise InvalidInputError(f"bad filter {sql!r}: {str(e).splitlines()[0]}") from e

    def search_vector(self, vec: Sequence[float], k: int, where: Any = None) -> list[Hit]:
        """Exact cosine top-k, filtered before ranking so a filter never starves the result."""
        table = self._read_table()
        if table is None or k <= 0:
            return []
        query = (table.search(np.asarray(vec, dtype=np.float32), query_type="vector", vector_column_name="vector")
                 .distance_type("cosine").select([*COLUMNS, "_distance"]).limit(k))
        return [_chunk(r, Hit, score=1.0 - float(r.pop("_distance"))) for r in self._run(query, where, prefilter=True)]

    def search_text(self, query: str, k: int, where: Any = None) -> list[Hit]:
        """BM25 top-k over `text`; a query with no word characters matches nothing, not everything."""
        table = self._read_table()
        if table is None or k <= 0 or not re.search(r"\w", query or ""):
            return []
        rows = self._run(table.search(query, query_type="fts", fts_columns="text")
                         .select([*COLUMNS, "_score"]).limit(k), where, prefilter=False)
        return [_chunk(r, Hit, score=float(r.pop("_score"))) for r in rows]

    def _run(self, query: Any, where: Any, prefilter: bool) -> list[dict]:
        """Run a query; full-text filters always apply before ranking, vector ones need prefilter=True."""
        sql = where_sql(where)
        if sql:
            query = query.where(sql, prefilter=True) if prefilter else query.where(sql)
        try:
            return query.to_list()
        except ValueError as e:
            raise InvalidInputError(f"bad filter {sql!r}: {str(e).splitlines()[0]}") from e

    def _read_table(self) -> Any:
        """The table at the published version; reopened only when kb.json was replaced."""
        try:
            st = (self.path / META).stat()
        except FileNotFoundError:
            self._reader, self._reader_key = None, None
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._reader_key:
            self._reader = self._open_table(self.meta()["table_version"])
            self._reader_key = key
        return self._reader

    def _open_table(self, version: int | None = None) -> Any:
        """The chunks table (at `version`, or latest); a missing one means the folder was damaged."""
        try:
            return self._connect().open_table(TABLE, version=version)
        except (ValueError, OSError, RuntimeError) as e:
            raise InhouseError(f"knowledge base {self.path} is damaged ({str(e).splitlines()[0]}); "
                               "delete the folder and index again") from e

    def _connect(self) -> Any:
        if self._db is None:
            import lancedb

            self._db = lancedb.connect(str(self.path / "lance"))
        return self._db

    # -- writing -----------------------------------------------------------

    @contextmanager
    def writer(self, embedder_name: str, dim: int, timeout: float = 0.0,
               resume_key: str | None = None, replace: bool = False) -> Iterator[LanceStore]:
        """Hold the writer lock for the block; readers go on reading the published version meanwhile.
        A rebuild goes through a staging folder instead (`inhouse.rag.index.rebuild`)."""
        if replace:
            raise NotImplementedError("a LanceDB knowledge base is rebuilt in a staging folder (index.rebuild)")
        with self.locked(timeout):
            try:
                self._mark()
                self._check_embedder(embedder_name, dim)
                self._resume_key = resume_key
                self._table, self._dim, self._embedder_name = self._open_for_write(dim), dim, embedder_name
                yield self
            finally:
                self._table = None

    @contextmanager
    def locked(self, timeout: float = 0.0) -> Iterator[None]:
        """Hold the writer lock without writing: no other run changes the knowledge base meanwhile (a
        rebuild holds it while it writes the replacement beside it)."""
        check_kb_folder(self.path)
        fd = self._lock(timeout)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _mark(self) -> None:
        """inhouse's output marker, so that a folder knowledge base is recognised as one (outputs.py)."""
        if outputs.marker_kind(self.path) != KB_KIND:
            atomic.write_json(self.path / outputs.MARKER, {"kind": KB_KIND, "written_by": "inhouse"})

    def _lock(self, timeout: float) -> int:
        """flock, not a pid file: the kernel drops it when a crashed writer's process dies."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # /proc/x, a read-only disk, a folder this user may not write
            raise InhouseError(f"{self.path}: cannot write the knowledge base there ({e.strerror or e}); "
                               "choose another --kb") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise ConflictError(f"another indexing run is in progress on {self.path} "
                                       f"(it holds {self.path / LOCK}); wait for it to finish") from None
                time.sleep(0.2)

    def _check_embedder(self, name: str, dim: int) -> None:
        meta = self.meta()
        if meta and (meta.get("embedder_name"), meta.get("dim")) != (name, dim):
            raise ConflictError(
                f"knowledge base {self.path} was indexed with embedder {meta.get('embedder_name')} "
                f"({meta.get('dim')}-d), not {name} ({dim}-d); use that embedder, rebuild it with the new one "
                "(inhouse rag index FOLDER --kb NAME --embedder NAME --reindex) or index into a new knowledge base")

    def _open_for_write(self, dim: int) -> Any:
        """The table at the crashed run's checkpoint, else at its published version (leftovers rolled back)."""
        db, meta = self._connect(), self.meta()
        self._resume = self._read_resume(meta)
        if not meta and (not self._resume or TABLE not in _table_names(db)):
            if TABLE in _table_names(db):
                db.drop_table(TABLE)  # created by a run that never committed
            return self._create(db, dim)
        table = self._open_table()
        target = self._resume.get("version", meta.get("table_version"))
        if table.version != target:
            try:
                table.restore(target)
            except (ValueError, OSError, RuntimeError):
                if not self._resume:
                    raise
                (self.path / RESUME).unlink(missing_ok=True)  # the checkpoint's version is gone: start over
                return self._open_for_write(dim)
        return table

    def _read_resume(self, meta: Mapping[str, Any]) -> dict:
        """A checkpoint counts only on top of the version still published; anything else is stale."""
        try:
            point = json.loads((self.path / RESUME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            point = {}
        if self._resume_key is not None and isinstance(point, dict) and point.get("key") == self._resume_key \
                and point.get("published") == meta.get("table_version") \
                and isinstance(point.get("done"), dict) and isinstance(point.get("version"), int):
            return point
        (self.path / RESUME).unlink(missing_ok=True)
        return {}

    def resume_point(self) -> dict:
        return dict(self._resume)

    def checkpoint(self, done: Mapping[str, Any], deleted: Sequence[str]) -> None:
        """Atomically record the table version reached, the docs fully written and those deleted in it."""
        table = self._writing()
        if self._resume_key is not None:
            atomic.write_json(self.path / RESUME, {"key": self._resume_key, "version": table.version,
                                                   "published": self.meta().get("table_version"),
                                                   "done": dict(done), "deleted": list(deleted)})

    def _create(self, db: Any, dim: int) -> Any:
        from lancedb.index import FTS

        table = db.create_table(TABLE, schema=schema(dim))
        table.create_index("text", config=FTS(language="English", stem=True, remove_stop_words=True,
                                              lower_case=True, ascii_folding=True))
        return table

    def _writing(self) -> Any:
        if self._table is None:
            raise RuntimeError("LanceStore writes must happen inside `with store.writer(...)`")
        return self._table

    def upsert(self, chunks: Sequence[Chunk], vectors: Any) -> int:
        """Insert or replace chunks by chunk_id: writing a chunk twice never makes two rows."""
        table = self._writing()
        if not chunks:
            return 0
        data = _arrow_rows(chunks, vectors, self._dim)
        table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        return len(chunks)

    def delete_docs(self, paths: Iterable[str]) -> int:
        """Delete every chunk of these documents, in batches so the SQL stays small."""
        table, paths, deleted = self._writing(), list(paths), 0
        for i in range(0, len(paths), _DELETE_BATCH):
            batch = ", ".join(sql_literal(p) for p in paths[i:i + _DELETE_BATCH])
            deleted += table.delete(f"doc_path IN ({batch})").num_deleted_rows
        return deleted

    def commit(self, manifest: Mapping[str, Any], **info: Any) -> None:
        """Fold new rows into the indexes, prune safely, then publish kb.json last."""
        table, old = self._writing(), self.meta()
        self._optimize(table, old.get("table_version"))
        # The manifest can be megabytes (one entry per document); it lives in its own file so that
        # searches, which read kb.json, stay cheap. kb.json still names it and is written last.
        manifest_file = f"manifest-v{table.version}.json"
        atomic.write_json(self.path / manifest_file, dict(manifest))
        old.pop("manifest", None)
        meta = {**old, **info, "format": FORMAT, "embedder_name": self._embedder_name, "dim": self._dim,
                "table_version": table.version, "manifest_file": manifest_file,
                "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        atomic.write_json(self.path / META, meta)
        (self.path / RESUME).unlink(missing_ok=True)
        self._resume = {}
        for stale in self.path.glob("manifest-v*.json"):
            if stale.name != manifest_file:
                stale.unlink(missing_ok=True)

    def _optimize(self, table: Any, published: int | None) -> None:
        """Compact and merge new rows into the FTS index; prune only versions older than the published one."""
        stamps = {v["version"]: v["timestamp"] for v in table.list_versions()}
        if published in stamps:
            stamp = stamps[published]
            keep = dt.datetime.now(stamp.tzinfo) - stamp + dt.timedelta(minutes=1)
        else:
            keep = dt.timedelta(hours=1)
        table.optimize(cleanup_older_than=keep)


def _table_names(db: Any) -> list[str]:
    names = db.list_tables() if hasattr(db, "list_tables") else db.table_names()
    return list(getattr(names, "tables", names))


def _arrow_rows(chunks: Sequence[Chunk], vectors: Any, dim: int) -> pa.Table:
    """Chunks and their vectors as an Arrow table of the store's schema."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (len(chunks), dim):
        raise InhouseError(f"vectors have shape {vectors.shape}, but this knowledge base stores {dim}-d vectors "
                           f"and {len(chunks)} chunks were given")
    cols: dict[str, Any] = {c: [getattr(chunk, c) for chunk in chunks] for c in COLUMNS}
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    return pa.Table.from_pydict(cols, schema=schema(dim))


def _chunk(row: dict, kind: type[Chunk] = Chunk, **extra: Any) -> Any:
    """A stored row as a Chunk (or a Hit, with its score); empty text fields read as ''."""
    return kind(doc_path=row["doc_path"], chunk_id=row["chunk_id"], text=row["text"],
                start=int(row.get("start") or 0), end=int(row.get("end") or 0),
                heading_path=row.get("heading_path") or "", title=row.get("title") or "", page=row.get("page"),
                mtime=row.get("mtime"), sha256=row.get("sha256"), **extra)
