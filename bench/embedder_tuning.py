"""Stock vs tuned embedder on Cranfield: vector and hybrid retrieval, side by side, in one command.

    python bench/embedder_tuning.py                       # defaults of `inhouse rag tune-embedder`
    python bench/embedder_tuning.py --pairs title --epochs 2 --max-seq-length 128

1. Writes the collection as one .txt per document (title line, blank line, abstract) and indexes it with
   the stock all-MiniLM-L6-v2 (`inhouse.rag.index.index`), as bench/rag_cranfield.py does.
2. Tunes the embedder with `inhouse.rag.tune.tune_embedder` on pairs made from the knowledge base's
   chunks only: document text, never cran.qry or cranqrel.
3. Rebuilds the knowledge base with the tuned embedder (`index(..., reindex=True)`).
4. Scores both on every judged query (binary relevance, codes 1-4): nDCG@10, recall@100 and MRR for
   vector and hybrid (reciprocal-rank fusion with BM25, search()'s defaults), on all queries and on the
   odd and even query ids apart. Settings compared across runs of this script are to be chosen on one half
   and reported on the other.

Prints a table and writes JSON (bench/results/embedder_tuning.json by default).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rag_cranfield as rc  # noqa: E402  (the collection, lists, fusion and scoring of the Cranfield bench)

REPO = Path(__file__).resolve().parents[1]
MODES = ("vector", "hybrid")
PARTS = ("all", "odd", "even")


def scores(kb: str, queries: dict[str, str], qrels: dict, judged: set[str]) -> dict[str, dict[str, dict]]:
    """{mode: {part: metrics}} for one knowledge base; hybrid fused as search(mode="hybrid") fuses."""
    lists = rc.fetch_lists(kb, queries, max(50, 4 * rc.CHUNKS_PER_QUERY))
    runs = {"vector": rc.single_run(lists, "vector", judged), "hybrid": rc.rrf_run(lists, judged)}
    halves = {"all": None, "odd": [q for q in qrels if int(q) % 2], "even": [q for q in qrels if not int(q) % 2]}
    return {mode: {part: rc.score(run, qrels, ids) for part, ids in halves.items()} for mode, run in runs.items()}


def timed(label: str, work: Any) -> tuple[Any, float]:
    clock = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - clock
    print(f"  {label}: {seconds:.0f} s", flush=True)
    return result, round(seconds, 1)


def run(args: argparse.Namespace, work: Path) -> dict:
    from inhouse.events import ConsoleEvents
    from inhouse.rag.config import TuneConfig
    from inhouse.rag.index import index
    from inhouse.rag.qrels import read_cranfield, write_collection
    from inhouse.rag.tune import tune_embedder

    data = read_cranfield(args.data)
    if args.limit_docs:
        data.docs[:] = data.docs[:args.limit_docs]
    judged = {d for j in data.qrels.values() for d in j}
    queries = {q: t for q, t in data.queries.items() if q in data.qrels}
    folder = work / "docs"
    files = write_collection(data.docs, folder)
    config = TuneConfig(**{k: v for k, v in vars(args).items() if k in TuneConfig.model_fields and v is not None})
    seconds: dict[str, float] = {}
    stock_report, seconds["index_stock"] = timed("index (stock)", lambda: index(folder, "cran", progress=False))
    stock, seconds["score_stock"] = timed("score (stock)", lambda: scores("cran", queries, data.qrels, judged))
    tuned_embedder, seconds["tune"] = timed("tune", lambda: tune_embedder(
        "cran", name="cran-tuned", config=config, events=ConsoleEvents(progress=not args.quiet)))
    tuned_report, seconds["index_tuned"] = timed("re-index (tuned)", lambda: index(
        folder, "cran", embedder="cran-tuned", reindex=True, progress=False))
    tuned, seconds["score_tuned"] = timed("score (tuned)", lambda: scores("cran", queries, data.qrels, judged))
    lineage = tuned_embedder.lineage
    return {"files": len(files), "chunks": stock_report.chunks_written, "chunks_tuned": tuned_report.chunks_written,
            "queries": len(queries), "config": config.model_dump(), "pairs": lineage.pairs,
            "tune_metrics": lineage.metrics, "seconds": seconds, "stock": stock, "tuned": tuned}


def table(result: dict) -> str:
    lines = ["| embedder | mode | queries | nDCG@10 | recall@100 | MRR | Δ nDCG@10 |",
             "|---|---|---|---:|---:|---:|---:|"]
    for mode in MODES:
        for part in PARTS:
            base = result["stock"][mode][part]["ndcg@10"]
            for name in ("stock", "tuned"):
                r = result[name][mode][part]
                delta = f"{r['ndcg@10'] - base:+.3f}" if name == "tuned" else ""
                lines.append(f"| {name} | {mode} | {part} ({r['queries']}) | {r['ndcg@10']:.3f} | "
                             f"{r['recall@100']:.3f} | {r['mrr']:.3f} | {delta} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=rc.DEFAULT_DATA, help="folder with cran.all.1400, cran.qry, cranqrel")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "embedder_tuning.json")
    p.add_argument("--limit-docs", type=int, default=0, help="index only the first N documents (smoke test)")
    p.add_argument("--quiet", action="store_true", help="no training progress bar")
    kinds = {"pairs": lambda s: s.split(","), "epochs": float, "learning_rate": float, "warmup_ratio": float,
             "validation_fraction": float, "batch_size": int, "max_pairs": int, "max_seq_length": int, "seed": int}
    for name, kind in kinds.items():  # TuneConfig's fields; unset: its defaults
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=f"tune-embedder's --{name}")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {"environment": rc.environment(), "command": " ".join(["python", *sys.argv]),
                              "args": {k: str(v) for k, v in vars(args).items()}}
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="embedder-tuning-") as tmp:
        os.environ["INHOUSE_HOME"] = str(Path(tmp) / "home")
        result["main"] = run(args, Path(tmp))
    result["wall_s"] = round(time.perf_counter() - clock, 1)
    rc.write(args.out, result)
    print(table(result["main"]))
    print(f"pairs: {result['main']['pairs']['counts']}; held-out pairs MRR@10: "
          f"{result['main']['tune_metrics']['held_out']}")
    print(f"wall time {result['wall_s']:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
