"""Index a folder into a knowledge base, incrementally.

Each run hashes every file (sha256 of its bytes) and compares it with the
manifest of the last run: only new and changed files are parsed, chunked and
embedded; chunks of changed and removed files are deleted first. Chunks are
upserted by chunk_id, so indexing the same folder twice never duplicates one.
The manifest is committed last (see `inhouse.rag.store`), so a crash or
Ctrl-C leaves the previous index intact. Every CHECKPOINT_S seconds the run
also records which documents it has fully written; the next run over the same
root resumes from there instead of embedding them again.

Documents are stored under their path relative to `root` (posix), so a moved
folder is still recognised; the root itself is recorded in kb.json.

`reindex=True` rebuilds a published knowledge base from scratch, with another
embedder if one is given (vectors of two models never share an index): the new
index is written into a staging folder beside it while the old one's writer
lock is held, and renamed into place only when complete. In PostgreSQL the new
chunks are staged instead and replace the old ones (in new tables, so the embedder
may have another dimension) in the commit's one transaction. Readers search the old index until then; a
crash leaves it as it was (a rebuild does not resume).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from inhouse import atomic, outputs, paths
from inhouse.events import Events, Stopped
from inhouse.rag.chunk import HEADING_SEP, Chunk
from inhouse.rag.embed import Embedder, load_embedder
from inhouse.rag.store import LanceStore, Store, check_kb_folder, kb_path, resolve_kb, store_at

__all__ = ["IndexReport", "default_chunker", "index", "kb_path"]

FLUSH_CHUNKS = 1024  # chunks embedded and written per step: bounds memory, keeps table versions few
CHECKPOINT_S = 30.0  # the checkpoint rewrites the list of done documents: not after every flush


@dataclass
class IndexReport:
    """What a run did; doc paths are relative to the indexed root. skipped_files: (path, reason)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    resumed: int = 0  # documents an interrupted run had already written (counted in added/changed too)
    chunks_written: int = 0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)


def default_chunker(embedder: Embedder, max_tokens: int = 256, overlap: int = 32) -> Callable[[Any], list]:
    """Chunks counted in the embedder's own tokens and never longer than it reads (2 left for CLS/SEP)."""
    from inhouse.rag.chunk import chunk_document, token_counter_for

    count = token_counter_for(embedder.tokenizer)
    limit = min(max_tokens, embedder.max_tokens - 2)
    return lambda doc: chunk_document(doc, count, max_tokens=limit, overlap=min(overlap, limit // 4))


def index(root: str | os.PathLike, kb: str | os.PathLike, embedder: Embedder | str | None = None,
          chunker: Callable[[Any], Sequence[Any]] | None = None, progress: bool = True,
          batch_size: int = 64, lock_timeout: float = 0.0, follow_links: bool = False,
          events: Events | None = None, reindex: bool = False, store: str | None = None) -> IndexReport:
    """Bring knowledge base `kb` (a name under paths.kbs(), or a folder) in line with the files under `root`;
    `reindex`: rebuild it whole (with `embedder`, else its own), replacing it once complete; `store`: where
    a new knowledge base keeps its chunks (see `inhouse.rag.config.STORE_HELP`)."""
    from inhouse.rag.ingest import scan_folder

    root = Path(root).expanduser().resolve()
    target = store_at(resolve_kb(kb), store)
    outputs.check_not_overlapping(target.path, [root], flag="--kb")
    check_kb_folder(target.path)  # before the embedder loads; the writer checks again
    replace = bool(reindex and target.meta()) and not isinstance(target, LanceStore)  # rebuilt in place
    if reindex and target.meta() and not replace:
        again = {"embedder": embedder if embedder is not None else target.meta().get("embedder_name"),
                 "chunker": chunker, "progress": progress, "batch_size": batch_size,
                 "follow_links": follow_links, "events": events}
        return rebuild(target, lambda staged: index(root, staged, **again), lock_timeout)
    files, skipped = scan_folder(root, follow_links=follow_links)
    skipped = [(paths.shown(_rel(root, p)), why) for p, why in skipped]
    if embedder is None or isinstance(embedder, (str, os.PathLike)):  # None: the one the KB was built with
        embedder = load_embedder(str(embedder) if embedder is not None else target.meta().get("embedder_name"))
    chunker = chunker or default_chunker(embedder)
    report = IndexReport(skipped_files=skipped)
    with target.writer(embedder.name, embedder.dim, timeout=lock_timeout, resume_key=str(root), replace=replace):
        old, point = ({}, {}) if replace else (target.manifest(), target.resume_point())
        done, gone = point.get("done", {}), set(point.get("deleted", []))
        manifest, todo = _plan(root, files, old, report, done, gone)
        written = {rel: entry for rel, entry in done.items() if manifest.get(rel) is entry}  # resumed
        deleted = [*(p for p in report.changed if p not in written), *report.removed]
        target.delete_docs(deleted)
        gone.update(deleted)
        report.chunks_written = _write(target, embedder, chunker, todo, manifest, written, report, progress,
                                       batch_size, lambda: target.checkpoint(written, sorted(gone)), events or Events())
        target.commit(manifest, root=str(root))
    return report


def rebuild(store: LanceStore, build: Callable[[Path], IndexReport], lock_timeout: float = 0.0) -> IndexReport:
    """`build(staging folder)` a whole new index beside the store's, holding its writer lock, then swap
    it in: readers see the old index until the new one is complete, and a failed build leaves it as is."""
    reports: list[IndexReport] = []
    with store.locked(lock_timeout):
        atomic.write_folder(store.path, lambda staged: reports.append(build(staged)), replace=lambda: None)
    return reports[0]


def _plan(root: Path, files: Iterable[Path], old: dict, report: IndexReport, done: dict,
          gone: set[str]) -> tuple[dict, list[tuple[str, Path]]]:
    """Sort files into unchanged (kept in the manifest), resumed (`done` by a crashed run, same hash),
    added and changed (to do); the rest were removed. A crashed run's doc counts as changed when its
    hash moved since (`done`) or when that run deleted its published chunks (`gone`)."""
    manifest: dict[str, Any] = {}
    todo: list[tuple[str, Path]] = []
    for path in files:
        rel = _rel(root, path)
        try:
            sha = _sha256(path)
        except OSError as e:  # a transient read error must not delete a good index entry
            report.skipped_files.append((rel, f"cannot be read ({e.strerror or e})"))
            if rel in old:
                manifest[rel] = old[rel]
            continue
        if rel in done and done[rel].get("sha256") == sha:
            manifest[rel] = done[rel]
            report.resumed += 1
            (report.changed if rel in old else report.added).append(rel)
        elif rel not in done and rel not in gone and rel in old and old[rel].get("sha256") == sha:
            manifest[rel] = old[rel]
            report.unchanged += 1
        else:  # in `done` with another hash: its crashed-run chunks are stale, so it counts as changed
            (report.changed if rel in old or rel in done else report.added).append(rel)
            todo.append((rel, path))
    seen = {_rel(root, p) for p in files}
    report.removed = sorted(p for p in {*old, *done} if p not in seen)
    return manifest, todo


def _write(store: Store, embedder: Embedder, chunker: Callable, todo: list[tuple[str, Path]],
           manifest: dict, written: dict, report: IndexReport, progress: bool, batch_size: int,
           checkpoint: Callable[[], None], events: Events) -> int:
    """Load, chunk, embed and upsert the docs to do, FLUSH_CHUNKS at a time; returns chunks written.

    `written` (docs fully in the table, resumed ones included) is checkpointed every CHECKPOINT_S."""
    from inhouse.rag.ingest import UnreadableDocument, load_document

    pending: list[tuple[Any, Any]] = []
    chunks_out, last = 0, time.monotonic()
    for done_docs, (rel, path) in enumerate(tqdm(todo, desc="embedding", unit="doc", disable=not progress or not todo)):
        if events.should_stop():  # what is written so far is checkpointed: the next run goes on from there
            written.update((d.path, manifest[d.path]) for d, _ in pending)
            chunks_out += _flush(store, embedder, pending, batch_size)
            checkpoint()
            raise Stopped(f"indexing stopped on request after {done_docs} of {len(todo)} documents; "
                          "the knowledge base is unchanged and the next run resumes")
        events.log("progress", done=done_docs, total=len(todo), unit="documents")
        try:
            doc = dataclasses.replace(load_document(path), path=rel)
        except UnreadableDocument as e:  # its old chunks are gone too: stale text must not be cited
            report.skipped_files.append((rel, e.reason))
            for done in (report.added, report.changed):
                if rel in done:
                    done.remove(rel)
            continue
        chunks = list(chunker(doc))
        manifest[rel] = {"sha256": doc.sha256, "chunks": len(chunks),
                         "indexed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        pending += [(doc, c) for c in chunks]
        if len(pending) >= FLUSH_CHUNKS:
            written.update((d.path, manifest[d.path]) for d, _ in pending)
            chunks_out += _flush(store, embedder, pending, batch_size)
            if time.monotonic() - last >= CHECKPOINT_S:
                checkpoint()
                last = time.monotonic()
    return chunks_out + _flush(store, embedder, pending, batch_size)


def _flush(store: Store, embedder: Embedder, pending: list[tuple[Any, Any]], batch_size: int) -> int:
    """Embed and upsert the pending chunks, then empty the list."""
    if not pending:
        return 0
    chunks = [stamped(doc, chunk) for doc, chunk in pending]
    store.upsert(chunks, embedder.embed([c.text for c in chunks], batch_size=batch_size))
    pending.clear()
    return len(chunks)


def stamped(doc: Any, chunk: Any) -> Chunk:
    """The chunk as stored: under the document's indexed path, with the version it was cut from. A custom
    chunker may return any object with the Chunk's fields (a heading path as a list is joined)."""
    heading = chunk.heading_path
    return Chunk(doc_path=doc.path, chunk_id=chunk.chunk_id, text=chunk.text, start=chunk.start, end=chunk.end,
                 heading_path=heading if isinstance(heading, str) else HEADING_SEP.join(heading or ()),
                 title=getattr(chunk, "title", None) or doc.title, page=getattr(chunk, "page", None),
                 mtime=doc.mtime, sha256=doc.sha256)


def _rel(root: Path, path: Path) -> str:
    """A file's key: relative to root (posix), or its name when root is the file itself."""
    path = Path(path)
    return path.name if path == root else path.relative_to(root).as_posix()


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
