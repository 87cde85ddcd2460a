"""Retrieval quality and speed on Cranfield: BM25 vs dense vs hybrid, side by side.

    python bench/rag_cranfield.py                      # the comparison (indexes Cranfield 3 times)
    python bench/rag_cranfield.py --scale              # also: 100,000 chunks, throughput and latency
    python bench/rag_cranfield.py --scale --no-main    # the scale run alone

Writes the collection as one .txt per document (title as first line), indexes
it with `inhouse.rag.index.index` into a knowledge base under a temporary
INHOUSE_HOME, and evaluates every judged query (binary relevance: codes 1-4)
with nDCG@10, recall@100 and MRR.

Hybrid variations (fusion weights, rrf_k, document-level fusion, score
fusion) are computed offline from each query's vector and BM25 lists,
fetched once with `search(mode="vector"/"bm25")` at the depth hybrid search
itself uses, fused with `inhouse.rag.search.rrf_fuse`; the default hybrid is
also run through `search(mode="hybrid")` to check both agree. Variations that
change the index (title line, chunk size) re-index. Tuned settings are also
cross-checked: chosen on odd query ids, scored on even ones, and vice versa.

--scale synthesises 100,000 one-chunk documents by dropping words from
Cranfield chunks (each copy a distinct file and chunk id), and indexes them
through the same `index()` with an embedder that serves each copy its
source chunk's real vector plus noise: this measures everything except the
model (ingest, chunking with the real tokenizer, LanceDB writes, the BM25
index). The model's own CPU throughput is measured on a sample of the same
chunks; their combination estimates the end-to-end rate. Query latency at
that size is measured for real (the query is embedded by the real model).
--scale-embed real embeds every one of the 100,000 chunks with the model
instead: the true end-to-end indexing time (about an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cranfield"
KS = (5, 10, 100)
DOCS_PER_QUERY = 100  # ranked documents kept per query: recall@100 needs 100
CHUNKS_PER_QUERY = 3 * DOCS_PER_QUERY  # as metrics.run_queries asks: chunks of one doc collapse
DEFAULT_HYBRID = "rrf w=(1,1.0) k=60"  # search()'s defaults: weights (1, 1), rrf_k 60
# Questions nothing in Cranfield answers, to calibrate the refusal threshold of `answer()`.
OFF_TOPIC = [
    "what is our company's parental leave policy", "how do I reset my email password",
    "best recipe for chocolate chip cookies", "who won the football world cup in 2018",
    "how much vacation do new employees get", "how do I file an expense report",
    "what is the dress code at the office", "when is the next board meeting",
    "how to install python on windows", "what are the symptoms of the flu",
    "how do I cancel my subscription", "which wines pair well with fish",
    "what time does the cafeteria open", "how do I configure the vpn client",
    "what is the refund policy for online orders", "who is the ceo of the company",
    "what is the wifi password for guests", "how to bake sourdough bread", "what is the plot of hamlet",
    "how do I apply for a mortgage", "what are the opening hours of the museum",
    "translate hello into spanish", "how do I train a puppy", "what is the tax deadline this year",
    "how do I book a meeting room", "what is kubernetes used for", "what is the capital of france",
    "what is the boiling point of water",
]


# --- embeddings, remembered by text ----------------------------------------------------------


def _key(text: str) -> str:
    return hashlib.sha1(" ".join(text.split()).encode()).hexdigest()


class RecordingEmbedder:
    """The real embedder, remembering every vector by text: variants and the scale run reuse them,
    and a re-run with --cache skips the model for texts it has embedded before."""

    def __init__(self, inner: Any, cache: dict[str, np.ndarray]):
        self.inner, self.cache, self.misses = inner, cache, 0
        self.name, self.dim, self.tokenizer, self.max_tokens = inner.name, inner.dim, inner.tokenizer, inner.max_tokens

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if _key(t) not in self.cache))
        if missing:
            for t, v in zip(missing, self.inner.embed(missing, batch_size)):
                self.cache[_key(t)] = v
            self.misses += len(missing)
        return np.stack([self.cache[_key(t)] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


def load_cache(folder: Path | None) -> dict[str, np.ndarray]:
    path = folder / "embeddings.npz" if folder else None
    return dict(np.load(path)) if path and path.is_file() else {}


def save_cache(folder: Path | None, cache: dict[str, np.ndarray]) -> None:
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "embeddings.npz", **cache)


# --- building and querying ---------------------------------------------------------------------


def build_kb(name: str, docs: list, work: Path, embedder: RecordingEmbedder, title: bool = True,
             chunk_tokens: int = 256) -> dict:
    """Write the collection as text files and index it; time the whole `index()` call."""
    from inhouse.rag.index import default_chunker, index
    from inhouse.rag.qrels import write_collection

    folder = work / f"docs-{name}"
    files = write_collection(docs, folder, title=title)
    before = embedder.misses
    chunker = default_chunker(embedder, max_tokens=chunk_tokens, overlap=min(32, chunk_tokens // 8))
    t0 = time.perf_counter()
    report = index(folder, name, embedder=embedder, chunker=chunker, progress=False)
    seconds = time.perf_counter() - t0
    embedded = embedder.misses - before
    print(f"  indexed {name}: {len(files)} files, {report.chunks_written} chunks in {seconds:.1f} s "
          f"({embedded} embedded, {report.chunks_written - embedded} from cache)", flush=True)
    return {"kb": name, "files": len(files), "chunks": report.chunks_written, "seconds": round(seconds, 2),
            "embedded_now": embedded, "title_line": title, "chunk_tokens": chunk_tokens}


def fetch_lists(kb: str, queries: dict[str, str], depth: int) -> dict[str, dict[str, list]]:
    """Each query's vector and BM25 lists of (chunk_id, doc_path, score), best first."""
    from inhouse.rag.search import search

    out = {}
    for qid, text in queries.items():
        out[qid] = {m: [(h.chunk_id, h.doc_path, h.score) for h in search(kb, text, k=depth, mode=m)]
                    for m in ("vector", "bm25")}
    return out


def to_docs(chunk_ranking: Sequence[str], doc_of: dict[str, str], judged: set[str]) -> list[str]:
    """Chunk ids -> ranked doc ids, each doc at its best chunk's rank."""
    from inhouse.rag.metrics import doc_key

    seen: dict[str, None] = {}
    for cid in chunk_ranking:
        seen.setdefault(doc_key(doc_of[cid], judged), None)
        if len(seen) == DOCS_PER_QUERY:
            break
    return list(seen)


def single_run(lists: dict, mode: str, judged: set[str]) -> dict[str, list[str]]:
    return {q: to_docs([c for c, _, _ in v[mode]][:CHUNKS_PER_QUERY], _doc_of(v), judged) for q, v in lists.items()}


def _doc_of(v: dict) -> dict[str, str]:
    return {c: p for m in ("vector", "bm25") for c, p, _ in v[m]}


def rrf_run(lists: dict, judged: set[str], weights=(1.0, 1.0), rrf_k: int = 60, doc_level: bool = False
            ) -> dict[str, list[str]]:
    """Hybrid exactly as `search(mode="hybrid", k=300)` fuses: top max(50, 4k) of each list, weighted RRF.

    ``doc_level`` first collapses each list to documents, so a document with
    two matching chunks is not ranked twice in either list before fusing.
    """
    from inhouse.rag.search import rrf_fuse

    n = max(50, 4 * CHUNKS_PER_QUERY)
    run = {}
    for q, v in lists.items():
        doc_of = _doc_of(v)
        vec, bm = ([c for c, _, _ in v[m]][:n] for m in ("vector", "bm25"))
        if doc_level:
            vec, bm = (to_docs(x, doc_of, judged) for x in (vec, bm))
            fused = [d for d, _ in rrf_fuse([vec, bm], weights, rrf_k)]
            run[q] = fused[:DOCS_PER_QUERY]
        else:
            run[q] = to_docs([c for c, _ in rrf_fuse([vec, bm], weights, rrf_k)], doc_of, judged)
    return run


def score_fusion_run(lists: dict, judged: set[str], alpha: float) -> dict[str, list[str]]:
    """Convex combination of min-max normalised scores, per document (best chunk): alpha on the vector side."""
    from inhouse.rag.metrics import doc_key

    run = {}
    for q, v in lists.items():
        fused: dict[str, float] = {}
        for mode, w in (("vector", alpha), ("bm25", 1 - alpha)):
            best: dict[str, float] = {}
            for _, path, s in v[mode]:
                d = doc_key(path, judged)
                best[d] = max(best.get(d, -1e9), s)
            if best:
                lo, hi = min(best.values()), max(best.values())
                for d, s in best.items():
                    fused[d] = fused.get(d, 0.0) + w * ((s - lo) / (hi - lo) if hi > lo else 1.0)
        run[q] = sorted(fused, key=lambda d: -fused[d])[:DOCS_PER_QUERY]
    return run


def search_run(kb: str, queries: dict[str, str], judged: set[str], mode: str, **kw: Any) -> dict[str, list[str]]:
    """Through the public search API, as `inhouse rag eval` runs it."""
    from inhouse.rag.metrics import run_queries

    return run_queries(kb, queries, DOCS_PER_QUERY, judged, mode=mode, **kw)


# --- scoring -------------------------------------------------------------------------------------


def score(run: dict, qrels: dict, qids: Sequence[str] | None = None) -> dict:
    from inhouse.rag.metrics import evaluate_run

    q = {k: v for k, v in qrels.items() if qids is None or k in qids}
    r = evaluate_run(run, q, KS)
    return {"ndcg@10": r["ndcg@10"], "recall@100": r["recall@100"], "recall@10": r["recall@10"], "mrr": r["mrr"],
            "queries": r["queries"]}


def cross_checked(configs: dict[str, Callable[[], dict]], qrels: dict) -> dict:
    """Choose the best config on odd query ids and score it on even ones, and the other way round,
    next to the default hybrid on the same half: a gain found on all queries may be noise."""
    odd = [q for q in qrels if int(q) % 2]
    even = [q for q in qrels if not int(q) % 2]
    runs = {name: make() for name, make in configs.items()}
    out = {}
    for tune, test, label in ((odd, even, "tuned on odd, scored on even"), (even, odd, "tuned on even, scored on odd")):
        best = max(runs, key=lambda n: score(runs[n], qrels, tune)["ndcg@10"])
        out[label] = {"config": best, "ndcg@10": score(runs[best], qrels, test)["ndcg@10"],
                      "default_ndcg@10": score(runs[DEFAULT_HYBRID], qrels, test)["ndcg@10"]}
    return out


# --- latency and calibration ---------------------------------------------------------------------


def latency(kb: str, queries: Sequence[str], modes: Sequence[str] = ("bm25", "vector", "hybrid"),
            k: int = 10) -> dict:
    """Median and p95 wall time of one `search()` call per mode, after a warm-up (model load, table open).

    Modes take turns query by query, so load from other processes on a
    shared machine falls on all of them alike.
    """
    from inhouse.rag.search import search

    for q in queries[:5]:
        for m in modes:
            search(kb, q, k=k, mode=m)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i, q in enumerate(queries):
        for m in modes[i % len(modes):] + modes[:i % len(modes)]:
            t0 = time.perf_counter()
            search(kb, q, k=k, mode=m)
            times[m].append((time.perf_counter() - t0) * 1000)
    return {m: {"median_ms": round(statistics.median(t), 1), "p95_ms": round(float(np.percentile(t, 95)), 1),
                "queries": len(t), "k": k} for m, t in times.items()}


def calibration(kb: str, lists: dict, judged_queries: Sequence[str]) -> dict:
    """Best cosine similarity (the refusal signal of `answer()`) for real and off-topic questions."""
    from inhouse.rag.search import search

    real = np.array([lists[q]["vector"][0][2] for q in judged_queries if lists[q]["vector"]])
    off = np.array([search(kb, q, k=1, mode="vector")[0].score for q in OFF_TOPIC])
    pct = lambda a: {str(p): round(float(np.percentile(a, p)), 3) for p in (0, 1, 5, 25, 50, 100)}  # noqa: E731
    refused = {str(t): {"real": int((real < t).sum()), "off_topic": int((off < t).sum())}
               for t in (0.25, 0.3, 0.35, 0.4, 0.45)}
    return {"real_percentiles": pct(real), "off_topic_percentiles": pct(off), "refused_at": refused,
            "n_real": len(real), "n_off_topic": len(off),
            "off_topic": {q: round(float(s), 3) for q, s in zip(OFF_TOPIC, off)}}


# --- the comparison ------------------------------------------------------------------------------


def main_comparison(args: argparse.Namespace, data: Any, work: Path, emb: RecordingEmbedder) -> dict:
    from inhouse.rag.qrels import Cranfield

    assert isinstance(data, Cranfield)
    judged = {d for j in data.qrels.values() for d in j}
    queries = {q: t for q, t in data.queries.items() if q in data.qrels}
    builds = [build_kb("cran", data.docs, work, emb)]
    save_cache(args.cache, emb.cache)
    t0 = time.perf_counter()
    lists = fetch_lists("cran", queries, max(50, 4 * CHUNKS_PER_QUERY))
    print(f"  fetched vector and BM25 lists in {time.perf_counter() - t0:.0f} s", flush=True)
    results = core_rows(lists, data.qrels, judged)
    results["hybrid (search API)"] = score(search_run("cran", queries, judged, "hybrid"), data.qrels)
    grid = fusion_grid(lists, data.qrels, judged)
    variants = reindexed_variants(args, data, work, emb, queries, judged, builds)
    lat = latency("cran", list(queries.values()))
    calib = calibration("cran", lists, list(queries))
    return {"builds": builds, "results": results, "grid": grid, "variants": variants, "latency": lat,
            "calibration": calib}


def core_rows(lists: dict, qrels: dict, judged: set[str]) -> dict:
    return {"bm25": score(single_run(lists, "bm25", judged), qrels),
            "vector": score(single_run(lists, "vector", judged), qrels),
            "hybrid rrf (1,1) k=60": score(rrf_run(lists, judged), qrels)}


def fusion_grid(lists: dict, qrels: dict, judged: set[str]) -> dict:
    """Weights x rrf_k, chunk- and document-level, plus score fusion; and the cross-checked choice."""
    configs: dict[str, Callable[[], dict]] = {}
    for wb in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0):
        for rk in (5, 10, 20, 30, 60, 100):
            configs[f"rrf w=(1,{wb}) k={rk}"] = lambda wb=wb, rk=rk: rrf_run(lists, judged, (1.0, wb), rk)
            configs[f"doc-rrf w=(1,{wb}) k={rk}"] = lambda wb=wb, rk=rk: rrf_run(lists, judged, (1.0, wb), rk, True)
    for a in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        configs[f"score-fusion alpha={a}"] = lambda a=a: score_fusion_run(lists, judged, a)
    scores = {name: score(make(), qrels) for name, make in configs.items()}
    return {"scores": scores, "cross_checked": cross_checked(configs, qrels)}


def reindexed_variants(args: argparse.Namespace, data: Any, work: Path, emb: RecordingEmbedder,
                       queries: dict, judged: set[str], builds: list) -> dict:
    """Index-changing variations, each scored for BM25, vector and default hybrid."""
    out = {}
    for name, kw in (("abstract only (no title line)", {"title": False}),
                     ("chunks of 128 tokens", {"chunk_tokens": 128})):
        if name.split()[0] not in args.variants:
            continue
        kb = "cran-" + re.sub(r"\W+", "-", name).strip("-")
        builds.append(build_kb(kb, data.docs, work, emb, **kw))
        save_cache(args.cache, emb.cache)
        lists = fetch_lists(kb, queries, max(50, 4 * CHUNKS_PER_QUERY))
        out[name] = core_rows(lists, data.qrels, judged)
        out[name]["doc-rrf (1,1) k=60"] = score(rrf_run(lists, judged, doc_level=True), data.qrels)
    return out


# --- the 100k scale run --------------------------------------------------------------------------


class CachedVectors:
    """Serves each synthetic chunk its prepared vector: the index path runs, the model does not."""

    def __init__(self, real: Any, vectors: dict[str, np.ndarray]):
        self.vectors, self.fallbacks = vectors, 0
        self.name, self.dim, self.tokenizer, self.max_tokens = real.name, real.dim, real.tokenizer, real.max_tokens

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        rows = []
        for t in texts:
            v = self.vectors.get(_key(t))
            if v is None:  # a copy the chunker split differently: a random unit vector keeps the run going
                self.fallbacks += 1
                v = _unit(np.random.default_rng(int(_key(t)[:8], 16)).standard_normal(self.dim))
            rows.append(v)
        return np.asarray(rows, dtype=np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def perturb(text: str, rng: random.Random, drop: float = 0.12) -> str:
    """Drop words at random (never the first line's), so copies differ for BM25 and for dedup."""
    head, _, body = text.partition("\n")
    words = body.split(" ")
    kept = [w for w in words if rng.random() >= drop] or words[:1]
    return head + "\n" + " ".join(kept)


def synthesise(sources: list[tuple[str, np.ndarray]], n: int, folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """n one-chunk files (copy j of source i in c<j>/<i>.txt) and their vectors (source + noise)."""
    rng, nrng, vectors = random.Random(seed), np.random.default_rng(seed), {}
    for j in range(0, n // len(sources) + 1):
        sub = folder / f"c{j:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        for i, (text, vec) in enumerate(sources):
            if j * len(sources) + i >= n:
                return vectors
            copy = perturb(text, rng) if j else text
            (sub / f"{i}.txt").write_text(copy, encoding="utf-8")
            vectors[_key(copy)] = _unit(vec + 0.15 * nrng.standard_normal(vec.shape[0]) / np.sqrt(vec.shape[0]))
    return vectors


def scale_run(args: argparse.Namespace, data: Any, work: Path, emb: RecordingEmbedder) -> dict:
    """Index args.scale_chunks synthetic chunks; measure throughput and query latency at that size."""
    from inhouse.rag.index import index
    from inhouse.rag.qrels import doc_text

    limit = min(200, emb.max_tokens - 2)
    texts = [t for t in (doc_text(d) for d in data.docs if d.text) if len(emb.tokenizer.tokenize(t)) <= limit]
    print(f"  {len(texts)} one-chunk Cranfield documents as sources; embedding any not cached", flush=True)
    sources = list(zip(texts, emb.embed(texts)))
    save_cache(args.cache, emb.cache)
    model_rate = model_throughput(emb.inner, texts, args.embed_sample)
    folder = work / "scale-docs"
    t0 = time.perf_counter()
    vectors = synthesise(sources, args.scale_chunks, folder)
    write_s = time.perf_counter() - t0
    real = args.scale_embed == "real"  # the whole path, the model included: about an hour on 2 cores
    embedder = emb.inner if real else CachedVectors(emb, vectors)
    t0 = time.perf_counter()
    report = index(folder, "scale", embedder=embedder, progress=real)
    index_s = time.perf_counter() - t0
    rate = report.chunks_written / index_s
    common = {"chunks": report.chunks_written, "files_written_s": round(write_s, 1), "index_s": round(index_s, 1),
              "latency": latency("scale", list(data.queries.values()))}
    if real:
        return {"embedder": "real", **common, "end_to_end_chunks_per_s": round(rate, 2),
                "model_chunks_per_s_sample": round(model_rate, 2)}
    end_to_end = 1 / (1 / rate + 1 / model_rate)
    return {"embedder": "cached vectors", **common, "pipeline_chunks_per_s": round(rate, 1),
            "vector_fallbacks": embedder.fallbacks, "model_chunks_per_s": round(model_rate, 2),
            "estimated_end_to_end_chunks_per_s": round(end_to_end, 2),
            "estimated_end_to_end_hours": round(report.chunks_written / end_to_end / 3600, 2)}


def model_throughput(embedder: Any, texts: list[str], n: int) -> float:
    """all-MiniLM-L6-v2 chunks per second on this CPU, on n chunks not seen before (perturbed)."""
    rng = random.Random(1)
    sample = [perturb(texts[i % len(texts)], rng) for i in range(n)]
    embedder.embed(sample[:8])  # warm-up
    t0 = time.perf_counter()
    embedder.embed(sample)
    rate = n / (time.perf_counter() - t0)
    print(f"  model: {rate:.1f} chunks/s on {n} chunks", flush=True)
    return rate


# --- report --------------------------------------------------------------------------------------


def table(rows: dict[str, dict], base: float | None = None) -> str:
    head = "| run | nDCG@10 | recall@100 | MRR |" + (" Δ nDCG@10 |" if base is not None else "")
    lines = [head, "|---|---:|---:|---:|" + ("---:|" if base is not None else "")]
    for name, r in rows.items():
        delta = f" {r['ndcg@10'] - base:+.3f} |" if base is not None else ""
        lines.append(f"| {name} | {r['ndcg@10']:.3f} | {r['recall@100']:.3f} | {r['mrr']:.3f} |{delta}")
    return "\n".join(lines)


def report(result: dict) -> str:
    out = []
    main = result.get("main")
    if main:
        base = main["results"]["hybrid rrf (1,1) k=60"]["ndcg@10"]
        out += ["Index builds:", *(f"  {b}" for b in main["builds"]), "", table(main["results"]), ""]
        top = sorted(main["grid"]["scores"].items(), key=lambda kv: -kv[1]["ndcg@10"])[:12]
        out += ["Fusion variations (top 12 of the grid):", table(dict(top), base), ""]
        out += [f"Cross-checked: {json.dumps(main['grid']['cross_checked'])}", ""]
        for name, rows in main["variants"].items():
            out += [f"Variant: {name}", table(rows, base), ""]
        out += ["Latency (k=10): " + json.dumps(main["latency"]), "", "Calibration: " + json.dumps(
            {k: v for k, v in main["calibration"].items() if k != "off_topic"}), ""]
    if result.get("scale"):
        out += ["Scale: " + json.dumps(result["scale"], indent=1)]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with cran.all.1400, cran.qry, cranqrel")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "rag_cranfield.json")
    p.add_argument("--cache", type=Path, default=None, help="keep embeddings here between runs (timing then "
                   "excludes the model for cached texts; the JSON says how many were embedded)")
    p.add_argument("--variants", nargs="*", default=["abstract", "chunks"], help="re-indexed variants to run")
    p.add_argument("--scale", action="store_true", help="also run the 100,000-chunk throughput/latency test")
    p.add_argument("--scale-chunks", type=int, default=100_000)
    p.add_argument("--scale-embed", choices=["cached", "real"], default="cached",
                   help="cached: copies reuse their source's vector plus noise (minutes); real: MiniLM embeds "
                   "every chunk, the true end-to-end time (about an hour on 2 cores)")
    p.add_argument("--embed-sample", type=int, default=256, help="chunks embedded to time the model")
    p.add_argument("--no-main", action="store_true", help="skip the quality comparison")
    p.add_argument("--limit-docs", type=int, default=0, help="index only the first N documents (smoke test)")
    return p.parse_args(argv)


def environment() -> dict:
    import torch

    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "load_avg_at_start": os.getloadavg()}


def write(path: Path, result: dict) -> None:
    """After each stage, so a failure in the scale run keeps the comparison."""
    result["environment"]["load_avg_at_end"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from inhouse.rag.embed import load_embedder
    from inhouse.rag.qrels import read_cranfield

    data = read_cranfield(args.data)
    if args.limit_docs:
        data.docs[:] = data.docs[:args.limit_docs]
    result: dict[str, Any] = {"environment": environment(), "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="rag-cranfield-") as tmp:
        work = Path(tmp)
        os.environ["INHOUSE_HOME"] = str(work / "home")
        emb = RecordingEmbedder(load_embedder(None, device="cpu"), load_cache(args.cache))
        if not args.no_main:
            result["main"] = main_comparison(args, data, work, emb)
            write(args.out, result)
            print(report(result), flush=True)
        if args.scale:
            result["scale"] = scale_run(args, data, work, emb)
            write(args.out, result)
            print(report({"scale": result["scale"]}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
