"""Retrieval metrics: recall@k, nDCG@k and MRR, plus means over a whole run.

Rankings are lists of document ids, best first. A document retrieved twice
(two chunks of one file) counts once, at its first rank, so chunk-level
results never inflate a score. Relevance comes from qrels as
``{doc: gain}``; a gain above 0 means relevant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from statistics import mean
from typing import Any

from inhouse.errors import InvalidInputError


def _unique(ranked: Iterable[str]) -> list[str]:
    """First occurrence of each doc, so duplicates can neither add gain nor push others down twice."""
    seen: set[str] = set()
    return [d for d in ranked if not (d in seen or seen.add(d))]


def _relevant(relevant: Iterable[str] | Mapping[str, float]) -> set[str]:
    """Accept a set of ids or a qrels dict (gain > 0 is relevant), so callers need not convert."""
    if isinstance(relevant, Mapping):
        return {d for d, g in relevant.items() if g > 0}
    return set(relevant)


def recall_at_k(ranked: Sequence[str], relevant: Iterable[str] | Mapping[str, float], k: int) -> float:
    """Share of the relevant docs found in the top k; 0.0 when nothing is relevant (undefined)."""
    rel = _relevant(relevant)
    if not rel:
        return 0.0
    return len(rel.intersection(_unique(ranked)[:k])) / len(rel)


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, float] | Iterable[str], k: int = 10,
              graded: bool = False) -> float:
    """DCG of the top k over the ideal DCG of the judged relevant docs (log2 discount).

    Binary by default (every relevant doc gains 1), as most published
    Cranfield numbers are; ``graded=True`` uses the gains themselves.
    """
    gains = relevance if isinstance(relevance, Mapping) else {d: 1 for d in relevance}
    gains = {d: (float(g) if graded else 1.0) for d, g in gains.items() if g > 0}
    ideal = _dcg(sorted(gains.values(), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return _dcg([gains.get(d, 0.0) for d in _unique(ranked)[:k]]) / ideal


def _dcg(gains: Sequence[float]) -> float:
    """Rank i (1-based) is discounted by log2(i + 1): rank 1 counts fully, rank 3 by half."""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def mrr(ranked: Sequence[str], relevant: Iterable[str] | Mapping[str, float], k: int | None = None) -> float:
    """1 / rank of the first relevant doc (0 if none in the top k): how far a reader must scroll."""
    rel = _relevant(relevant)
    for i, d in enumerate(_unique(ranked)[:k]):
        if d in rel:
            return 1.0 / (i + 1)
    return 0.0


def per_query(ranked: Sequence[str], judged: Mapping[str, float], ks: Sequence[int] = (5, 10, 100),
              ndcg_k: int = 10, graded: bool = False) -> dict[str, float]:
    """Every metric for one query, so runs can also be compared query by query."""
    row = {f"recall@{k}": recall_at_k(ranked, judged, k) for k in ks}
    row[f"ndcg@{ndcg_k}"] = ndcg_at_k(ranked, judged, ndcg_k, graded)
    row["mrr"] = mrr(ranked, judged)
    return row


def evaluate_run(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, float]],
                 ks: Sequence[int] = (5, 10, 100), ndcg_k: int = 10, graded: bool = False,
                 with_per_query: bool = False) -> dict[str, Any]:
    """Mean metrics over the queries with at least one relevant doc.

    A judged query missing from the run scores 0 (the system found nothing);
    queries without any relevant doc (in qrels or only in the run) cannot be
    scored and are counted in ``skipped`` rather than silently averaged in.
    """
    scored = sorted(q for q, j in qrels.items() if _relevant(j))
    rows = {q: per_query(run.get(q, []), qrels[q], ks, ndcg_k, graded) for q in scored}
    skipped = sorted((set(run) | set(qrels)) - set(scored))
    out: dict[str, Any] = {"queries": len(scored), "skipped": len(skipped), "skipped_ids": skipped}
    names = [f"recall@{k}" for k in ks] + [f"ndcg@{ndcg_k}", "mrr"]
    out.update({n: (mean(r[n] for r in rows.values()) if rows else 0.0) for n in names})
    if with_per_query:
        out["per_query"] = rows
    return out


# --- running queries against a knowledge base -------------------------------------------------


def doc_key(doc_path: str, judged: set[str]) -> str:
    """The qrels id of a retrieved file: its path, name or stem, whichever the qrels use.

    Qrels name documents however their author liked (``184``, ``184.txt``,
    ``manuals/x.pdf``); trying the usual spellings lets one qrels file work
    with any ingest root. Unjudged docs fall back to the stem.
    """
    p = Path(doc_path)
    for cand in (doc_path, p.as_posix(), p.name, p.stem):
        if cand in judged:
            return cand
    return p.stem


def run_queries(kb: str, queries: Mapping[str, str], k: int = 100, judged: set[str] | None = None,
                retrieve: Callable[..., list] | None = None, depth: int = 3, **search_kw: Any
                ) -> dict[str, list[str]]:
    """Search every query and turn chunk hits into a ranked list of k doc ids.

    Asks for ``depth * k`` chunks, because several chunks of one document
    collapse into one entry (the document's best chunk sets its rank).
    """
    if retrieve is None:
        from inhouse.rag.search import search as retrieve
    judged = judged or set()
    run = {}
    for qid, text in queries.items():
        hits = retrieve(kb, text, k=depth * k, **search_kw)
        run[qid] = _unique(doc_key(h.doc_path, judged) for h in hits)[:k]
    return run


def evaluate_kb(kb: str, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, float]],
                ks: Sequence[int] = (5, 10, 100), retrieve: Callable[..., list] | None = None,
                **search_kw: Any) -> dict[str, Any]:
    """What `inhouse rag eval` reports: search each judged query, then `evaluate_run`.

    Judged queries absent from the query file are listed in ``missing_queries``
    instead of scoring 0: that is a file mismatch, not a retrieval failure.
    """
    judged = {d for j in qrels.values() for d in j}
    wanted = {q: t for q, t in queries.items() if q in qrels}
    if not wanted:
        raise InvalidInputError(f"no query id of the query file is judged in the qrels (queries: {_sample(queries)}; "
                                f"qrels: {_sample(qrels)}); are they files of the same collection?")
    run = run_queries(kb, wanted, max(ks), judged, retrieve, **search_kw)
    retrieved = {d for ranked in run.values() for d in ranked}
    if retrieved and not retrieved & judged:
        raise InvalidInputError(f"no retrieved document matches a judged document id (judged: {_sample(judged)}; "
                                f"retrieved: {_sample(retrieved)}); documents are matched by path, file name or "
                                "stem, so name the files after the ids the qrels use")
    result = evaluate_run(run, {q: qrels[q] for q in wanted}, ks)
    result["missing_queries"] = sorted(set(qrels) - set(queries))
    return result


def _sample(ids: Any, n: int = 5) -> str:
    listed = sorted(map(str, ids))
    return ", ".join(listed[:n]) + (f", ... ({len(listed)} in all)" if len(listed) > n else "")


def format_metrics(result: Mapping[str, Any]) -> str:
    """One metric per line, with how many queries were scored or skipped."""
    names = [n for n in result if n.startswith(("recall@", "ndcg@")) or n == "mrr"]
    lines = [f"{n:<11}{result[n]:.4f}" for n in names]
    lines.append(f"queries    {result['queries']} scored, {result['skipped']} skipped (no relevant doc)")
    if result.get("missing_queries"):
        lines.append(f"warning    {len(result['missing_queries'])} judged queries have no text in the query file")
    return "\n".join(lines)
