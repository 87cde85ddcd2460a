"""Embeddings and knowledge bases (OpenAI's vector stores): the retrieval endpoints.

A knowledge base id is its name in the library (INHOUSE_HOME/kb); names are
plain, so a client can never point the server at another folder.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from inhouse import paths
from inhouse.errors import InvalidInputError, NotFoundError
from inhouse.serve import openai
from inhouse.serve.app import parse

router = APIRouter()
EMBEDDER_IDS = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    body = await parse(request, openai.EmbeddingRequest)
    if body.model not in EMBEDDER_IDS:
        raise NotFoundError(f"The model '{body.model}' does not exist; embeddings come from {EMBEDDER_IDS[0]}")
    texts = body.texts()
    vectors, tokens = await run_in_threadpool(_embed, texts)
    if body.dimensions is not None and body.dimensions != vectors.shape[1]:
        raise InvalidInputError(f"'dimensions' must be {vectors.shape[1]} for {EMBEDDER_IDS[0]}")
    return openai.embeddings(body.model, vectors, body.encoding_format, tokens)


def _embed(texts: list[str]) -> tuple[Any, int]:
    from inhouse.rag.embed import load_embedder

    embedder = load_embedder()
    tokens = sum(len(ids) for ids in embedder.tokenizer(texts, add_special_tokens=True)["input_ids"])
    return embedder.embed(texts), tokens


def _kb(name: str) -> Any:
    """The store of knowledge base `name`; 404 for an unknown or unsafe name."""
    from inhouse.rag.store import kb_path, store_at

    try:
        store = store_at(kb_path(name))
    except InvalidInputError:
        raise NotFoundError(f"No vector store found with id '{name}'.") from None
    if not store.meta():
        raise NotFoundError(f"No vector store found with id '{name}'.")
    return store


def _vector_store(store: Any) -> dict[str, Any]:
    meta, folder = store.meta(), Path(store.path)
    docs = len(store.manifest())
    updated = _epoch(meta.get("updated_at")) or int(folder.stat().st_mtime)
    return {"id": folder.name, "object": "vector_store", "name": folder.name, "status": "completed",
            "created_at": int(folder.stat().st_ctime), "last_active_at": updated, "metadata": {},
            "usage_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
            "file_counts": {"in_progress": 0, "completed": docs, "failed": 0, "cancelled": 0, "total": docs},
            "expires_after": None, "expires_at": None}


def _epoch(iso: str | None) -> int | None:
    try:
        return int(dt.datetime.fromisoformat(str(iso)).timestamp())
    except ValueError:
        return None


def _all_stores() -> list[dict[str, Any]]:
    """Every published knowledge base: an embedded one has kb.json, a PostgreSQL one a store.json
    (and is listed once its first index run has committed)."""
    from inhouse.rag.store import META, STORE_FILE

    root = paths.kbs()
    names = sorted(p.name for p in root.iterdir() if (p / META).is_file() or (p / STORE_FILE).is_file()) \
        if root.is_dir() else []
    stores = []
    for name in names:
        try:
            stores.append(_vector_store(_kb(name)))
        except NotFoundError:
            continue
    return stores


@router.get("/v1/vector_stores")
async def list_vector_stores(request: Request) -> dict[str, Any]:
    return openai.page(await run_in_threadpool(_all_stores))


@router.get("/v1/vector_stores/{store_id}")
async def get_vector_store(store_id: str) -> dict[str, Any]:
    return await run_in_threadpool(lambda: _vector_store(_kb(store_id)))


@router.post("/v1/vector_stores/{store_id}/search")
async def search_vector_store(store_id: str, request: Request) -> dict[str, Any]:
    body = await parse(request, openai.VectorStoreSearchRequest)
    hits = await run_in_threadpool(_search, store_id, body)
    threshold = float((body.ranking_options or {}).get("score_threshold") or 0.0)
    return {"object": "vector_store.search_results.page", "search_query": [body.text()],
            "data": [_result(h) for h in hits if h.score >= threshold], "has_more": False, "next_page": None}


def _search(store_id: str, body: openai.VectorStoreSearchRequest) -> list[Any]:
    from inhouse.rag.search import search

    return search(_kb(store_id), body.text(), k=body.max_num_results, where=body.where())


def _result(hit: Any) -> dict[str, Any]:
    attributes = {"doc_path": hit.doc_path, "title": hit.title, "heading_path": hit.heading_path,
                  "start": hit.start, "end": hit.end, "chunk_id": hit.chunk_id, "page": hit.page}
    return {"file_id": hit.doc_path, "filename": Path(hit.doc_path).name, "score": hit.score,
            "attributes": {k: v for k, v in attributes.items() if v is not None},
            "content": [{"type": "text", "text": hit.text}]}


@router.get("/v1/vector_stores/{store_id}/documents")
async def list_documents(store_id: str) -> dict[str, Any]:
    """inhouse's extension: the documents of a knowledge base (path, chunks, when indexed)."""
    store = await run_in_threadpool(_kb, store_id)
    manifest = await run_in_threadpool(store.manifest)
    return {"object": "list", "data": [{"path": p, **{k: v for k, v in e.items() if k != "sha256"}}
                                       for p, e in sorted(manifest.items())], "root": store.meta().get("root")}


@router.get("/v1/vector_stores/{store_id}/documents/content")
async def document_text(store_id: str, path: str) -> dict[str, Any]:
    """inhouse's extension: a document's text as indexed (what citation offsets point into). Only paths
    the knowledge base's manifest lists are read."""
    from inhouse.rag.ingest import load_document

    store = await run_in_threadpool(_kb, store_id)
    if path not in await run_in_threadpool(store.manifest):
        raise NotFoundError(f"No document '{path}' in vector store '{store_id}'.")
    doc = await run_in_threadpool(load_document, Path(store.meta()["root"]) / path)
    return {"path": path, "title": doc.title, "text": doc.text}


@router.post("/v1/vector_stores/{store_id}/documents")
async def add_documents(store_id: str, request: Request) -> dict[str, Any]:
    """inhouse's extension: upload documents into a knowledge base the server owns (created on first use)
    and index them; a knowledge base indexed from a folder of yours is re-indexed from that folder."""
    from starlette.datastructures import UploadFile

    form = await request.form(max_files=64, max_fields=8)
    try:
        uploads = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        if not uploads:
            raise InvalidInputError("Missing required parameter: 'file' (one or more documents).")
        report = await run_in_threadpool(_index_uploads, store_id, uploads, request.app.state.config.kb_store)
    finally:
        await form.close()
    return report


def _index_uploads(store_id: str, uploads: list, kb_store: str | None = None) -> dict[str, Any]:
    import shutil

    from inhouse.errors import ConflictError
    from inhouse.rag.index import index
    from inhouse.rag.store import STORE_FILE, kb_path, store_at

    target, root = kb_path(store_id), paths.home() / "kb-sources" / store_id
    published = store_at(target).meta()
    store = kb_store if not published and not (target / STORE_FILE).is_file() else None  # a new one only
    existing = published.get("root")
    if existing and Path(existing) != root:
        raise ConflictError(f"vector store '{store_id}' indexes {existing}; add documents there and run "
                            f"'inhouse rag index' again")
    root.mkdir(parents=True, exist_ok=True)
    for upload in uploads:
        name = Path(upload.filename or "document.txt").name
        if not name or name.startswith("."):
            raise InvalidInputError(f"document name {upload.filename!r} is not a plain file name")
        partial = root / f".{name}.upload"
        with open(partial, "wb") as out:
            shutil.copyfileobj(upload.file, out)
        partial.replace(root / name)  # a document appears whole or not at all
    report = index(root, store_id, progress=False, store=store)
    return {"added": report.added, "changed": report.changed, "skipped": [{"path": p, "reason": r}
                                                                          for p, r in report.skipped_files],
            "chunks_written": report.chunks_written, "vector_store": _vector_store(store_at(target))}
