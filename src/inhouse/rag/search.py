"""Search a knowledge base: vector, BM25 or both fused by weighted reciprocal rank.

Hybrid search fetches the top N (max(50, 4k)) of each retriever and fuses
them with weighted reciprocal rank fusion, score = sum of w / (rrf_k + rank),
ranks from 1. RRF uses ranks only, so cosine similarities and BM25 scores,
which live on different scales, need no calibration. An optional
cross-encoder then reorders the best fused candidates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from inhouse.errors import InhouseError, InvalidInputError, NotFoundError
from inhouse.rag.chunk import Hit
from inhouse.rag.embed import Embedder, default_device, load_embedder
from inhouse.rag.store import Store, open_kb

MODES = ("hybrid", "vector", "bm25")


def rrf_fuse(rankings: Sequence[Sequence[str]], weights: Sequence[float], rrf_k: int = 60) -> list[tuple[str, float]]:
    """Weighted reciprocal rank fusion of ranked id lists, best first; ties keep first-seen order."""
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (rrf_k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


__all__ = ["Hit", "MODES", "rerank", "rrf_fuse", "search"]


def search(kb: str | os.PathLike | Store, query: str, k: int = 5, mode: str = "hybrid",
           weights: tuple[float, float] = (1.0, 1.0), rrf_k: int = 60, where: Any = None,
           reranker: Any = None, embedder: Embedder | None = None) -> list[Hit]:
    """Top-k chunks for `query`. `weights` = (vector, bm25) for hybrid; `where` is SQL or {column: value};
    `reranker` is a local cross-encoder folder or any object with predict(pairs)."""
    _check_args(k, mode, weights, rrf_k)
    if isinstance(reranker, (str, os.PathLike)):
        reranker = load_reranker(reranker)  # before any retrieval: a bad folder fails at once
    store = kb if isinstance(kb, Store) else open_kb(kb)
    n = max(50, 4 * k)
    use_vec = mode == "vector" or (mode == "hybrid" and weights[0] > 0)
    use_text = mode == "bm25" or (mode == "hybrid" and weights[1] > 0)
    vec_rows = _vector_rows(store, query, n, where, embedder) if use_vec else []
    text_rows = store.search_text(query, n, where) if use_text else []
    hits = _rank(mode, vec_rows, text_rows, weights, rrf_k)
    if reranker is not None:
        hits = rerank(query, hits[:max(20, 4 * k)], reranker)
    return hits[:k]


def _check_args(k: int, mode: str, weights: Sequence[float], rrf_k: int) -> None:
    if mode not in MODES:
        raise InvalidInputError(f"search mode {mode!r} is not one of {', '.join(MODES)}")
    if k < 1 or rrf_k < 0:
        raise InvalidInputError(f"k must be at least 1 and rrf_k at least 0 (got k={k}, rrf_k={rrf_k})")
    if len(weights) != 2 or min(weights) < 0 or max(weights) == 0:
        raise InvalidInputError(f"weights must be two non-negative numbers (vector, bm25), not both 0; got {weights}")


def _vector_rows(store: Store, query: str, n: int, where: Any, embedder: Embedder | None) -> list[Hit]:
    """Embed the query with the index's own embedder: vectors of another model would be meaningless."""
    meta = store.meta()
    embedder = embedder or load_embedder(meta["embedder_name"])
    if (embedder.name, embedder.dim) != (meta["embedder_name"], meta["dim"]):
        raise InvalidInputError(f"knowledge base was indexed with {meta['embedder_name']} ({meta['dim']}-d); "
                           f"cannot search it with {embedder.name} ({embedder.dim}-d)")
    return store.search_vector(embedder.embed([query])[0], n, where)


def _rank(mode: str, vec_rows: list[Hit], text_rows: list[Hit], weights: Sequence[float],
          rrf_k: int) -> list[Hit]:
    """Hits in final order: one retriever's own order, or the fused one."""
    rows = {r.chunk_id: r for r in text_rows} | {r.chunk_id: r for r in vec_rows}
    vec_rank = {r.chunk_id: i for i, r in enumerate(vec_rows, start=1)}
    bm25_rank = {r.chunk_id: i for i, r in enumerate(text_rows, start=1)}
    if mode == "hybrid":
        order = rrf_fuse([list(vec_rank), list(bm25_rank)], weights, rrf_k)
    else:
        order = [(r.chunk_id, r.score) for r in (vec_rows if mode == "vector" else text_rows)]
    return [replace(rows[cid], score=float(score), vector_rank=vec_rank.get(cid), bm25_rank=bm25_rank.get(cid))
            for cid, score in order]


def rerank(query: str, hits: list[Hit], reranker: Any) -> list[Hit]:
    """Reorder hits by a cross-encoder, which reads query and chunk together and so judges relevance
    better than either retriever; `score` becomes the reranker's."""
    if not hits:
        return []
    model = load_reranker(reranker) if isinstance(reranker, (str, os.PathLike)) else reranker
    scores = model.predict([(query, h.text) for h in hits])
    scored = sorted(zip(hits, (float(s) for s in scores)), key=lambda hs: -hs[1])
    return [replace(h, score=s) for h, s in scored]


def load_reranker(path: str | os.PathLike) -> Any:
    """A sentence-transformers CrossEncoder from a local folder; none ships by default and none is downloaded."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise NotFoundError(f"reranker {str(path)!r} is not a local model folder (models are never downloaded)")
    return _load_cross_encoder(str(folder.resolve()), default_device())


@lru_cache(maxsize=2)
def _load_cross_encoder(folder: str, device: str) -> Any:
    try:
        from sentence_transformers import CrossEncoder
    except ImportError:
        raise InhouseError("reranking needs sentence-transformers: pip install sentence-transformers") from None
    try:
        return CrossEncoder(folder, device=device, local_files_only=True)
    except (OSError, ValueError) as e:
        raise InhouseError(f"could not load reranker from {folder}: {str(e).splitlines()[0]}") from e
