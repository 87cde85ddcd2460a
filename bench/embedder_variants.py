"""Which tuning settings to give `inhouse rag tune-embedder`: variants scored on Cranfield, chosen on odd query ids.

    python bench/embedder_variants.py --work /tmp/embvar                     # every variant
    python bench/embedder_variants.py --work /tmp/embvar --only default title # some of them

The exploration behind the command's defaults (bench/embedder_tuning.py then measures the chosen one
through the real pipeline: tune, re-index, search). The stock knowledge base is indexed once; its chunks
and each judged query's BM25 list are kept in --work/stock.pkl, which is all a variant needs, so the
pickle can travel to a GPU machine without a knowledge base. Each variant is TuneConfig settings: pairs
made from the chunks by `synthetic_pairs`, the held-out split, loss and trainer of `inhouse.rag.tune`,
from a fresh MiniLM; then every chunk and judged query is embedded, ranked exactly by cosine (what the
store's exact search returns) and fused with the stock BM25 lists as search() fuses (rrf_run of
bench/rag_cranfield.py). Scores: all / odd / even query ids; choose on odd, report on even.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rag_cranfield as rc

REPO = Path(__file__).resolve().parents[1]
# Each variant is TuneConfig settings (inhouse.rag.config): the product's own trainer (inhouse.rag.tune._train)
# runs it, so the winner is a default of `inhouse rag tune-embedder` as it stands.
VARIANTS: dict[str, dict[str, Any]] = {
    "stock": {},
    "default": {},
    "3 epochs": {"epochs": 3.0},
    "lr 5e-5": {"learning_rate": 5e-5},
    "lr 5e-5, 3 epochs": {"learning_rate": 5e-5, "epochs": 3.0},
    "lr 1e-4, 3 epochs": {"learning_rate": 1e-4, "epochs": 3.0},
    "batch 128": {"batch_size": 128},
    "batch 128, lr 1e-4, 3 epochs": {"batch_size": 128, "learning_rate": 1e-4, "epochs": 3.0},
    "batch 256, lr 2e-4, 5 epochs": {"batch_size": 256, "learning_rate": 2e-4, "epochs": 5.0},
    "all negatives": {"negatives": "all"},
    "all negatives, 3 epochs": {"negatives": "all", "epochs": 3.0},
    "title": {"pairs": ["title"]},
    "title, lr 5e-5, 3 epochs": {"pairs": ["title"], "learning_rate": 5e-5, "epochs": 3.0},
    "sentence": {"pairs": ["sentence"]},
    "sentence, lr 5e-5, 3 epochs": {"pairs": ["sentence"], "learning_rate": 5e-5, "epochs": 3.0},
    "5 epochs, lr 5e-5": {"epochs": 5.0, "learning_rate": 5e-5},
    # Not a product setting (yet): only the pairs BM25 does not already solve (its top hit is another
    # chunk), so the dense side learns what the fusion's other list misses.
    "BM25-hard pairs, lr 5e-5, 3 epochs": {"bm25_hard": True, "learning_rate": 5e-5, "epochs": 3.0},
}


def prepare(work: Path) -> dict:
    """The stock knowledge base's chunks and each judged query's BM25 list, made once per --work folder.
    The state pickle is all a variant needs (no knowledge base), so it can travel to a GPU machine."""
    cached = work / "stock.pkl"
    if cached.is_file():
        return pickle.loads(cached.read_bytes())
    from inhouse.rag.index import index
    from inhouse.rag.qrels import read_cranfield, write_collection
    from inhouse.rag.store import open_kb

    data = read_cranfield(rc.DEFAULT_DATA)
    write_collection(data.docs, work / "docs")
    index(work / "docs", "cran", progress=False)
    queries = {q: t for q, t in data.queries.items() if q in data.qrels}
    lists = rc.fetch_lists("cran", queries, max(50, 4 * rc.CHUNKS_PER_QUERY))
    state = {"queries": queries, "qrels": data.qrels, "judged": {d for j in data.qrels.values() for d in j},
             "bm25": {q: v["bm25"] for q, v in lists.items()},
             "chunks": sorted(open_kb("cran").chunks(), key=lambda c: c.chunk_id)}
    cached.write_bytes(pickle.dumps(state))
    return state


def train(settings: dict, chunks: list, max_len: int | None) -> tuple[Any, dict]:
    """A fresh base model tuned as `tune_embedder` tunes it (the same pairs, held-out split, loss and trainer)."""
    from inhouse.events import Events
    from inhouse.rag.config import TuneConfig
    from inhouse.rag.embed import resolve_embedder
    from inhouse.rag.pairs import count_by_kind, synthetic_pairs
    from inhouse.rag.tune import _train, fresh_model, guided_or_all, split_held_out

    settings = dict(settings)
    hard = settings.pop("bm25_hard", False)
    config = TuneConfig(**({"max_seq_length": max_len} | settings))
    folder = resolve_embedder(None)[1]
    pairs = synthetic_pairs(chunks, config.pairs, config.seed)
    if hard:
        pairs = bm25_hard(pairs)
    train_pairs, _ = split_held_out(pairs, config)
    model = fresh_model(folder)
    negatives = guided_or_all(config, None)
    loss, steps = _train(model, train_pairs, config, Events(), folder if negatives == "guided" else None)
    return model, {"config": config.model_dump(), "pairs": count_by_kind(train_pairs), "loss": loss, "steps": steps}


def bm25_hard(pairs: list) -> list:
    """The pairs whose own chunk is not BM25's top hit for their pseudo-query (the stock knowledge base)."""
    from inhouse.rag.store import open_kb

    store = open_kb("cran")
    return [p for p in pairs if [h.chunk_id for h in store.search_text(p.query, 1)] != [p.origin]]


def evaluate(model: Any, chunks: list, state: dict) -> dict:
    """Exact cosine top 1200 per query, fused with the stock BM25 lists; all / odd / even."""
    encode = lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True,  # noqa: E731
                                        convert_to_numpy=True, show_progress_bar=False)
    qids = list(state["queries"])
    scores = encode([state["queries"][q] for q in qids]) @ encode([c.text for c in chunks]).T
    lists = {}
    for i, q in enumerate(qids):
        top = np.argsort(-scores[i])[:max(50, 4 * rc.CHUNKS_PER_QUERY)]
        lists[q] = {"vector": [(chunks[j].chunk_id, chunks[j].doc_path, float(scores[i, j])) for j in top],
                    "bm25": state["bm25"][q]}
    judged, qrels = state["judged"], state["qrels"]
    runs = {"vector": rc.single_run(lists, "vector", judged), "hybrid": rc.rrf_run(lists, judged)}
    halves = {"all": None, "odd": [q for q in qrels if int(q) % 2], "even": [q for q in qrels if not int(q) % 2]}
    return {m: {h: rc.score(run, qrels, ids) for h, ids in halves.items()} for m, run in runs.items()}


def run_variant(name: str, state: dict, max_len: int | None) -> dict:
    from inhouse.rag.embed import load_embedder

    clock, measured = time.perf_counter(), rc.environment()
    if name == "stock":
        return {"environment": measured, "scores": evaluate(load_embedder(None).model, state["chunks"], state)}
    model, info = train(VARIANTS[name], state["chunks"], max_len)
    return info | {"environment": measured, "train_s": round(time.perf_counter() - clock, 1),
                   "scores": evaluate(model, state["chunks"], state)}


def table(results: dict) -> str:
    lines = ["| variant | vector odd | vector even | vector all | hybrid odd | hybrid even | hybrid all |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        s = r["scores"]
        lines.append(f"| {name} | " + " | ".join(f"{s[m][h]['ndcg@10']:.3f}" for m in ("vector", "hybrid")
                                                  for h in ("odd", "even", "all")) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the stock index and lists (reused)")
    p.add_argument("--only", nargs="*", default=list(VARIANTS), help=f"variants: {', '.join(VARIANTS)}")
    p.add_argument("--max-seq-length", type=int, default=None, help="tokens of a passage in training (default: "
                   "TuneConfig's, the embedder's own 256)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "embedder_variants.json")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["INHOUSE_HOME"] = str(args.work / "home")
    state = prepare(args.work)
    done = json.loads(args.out.read_text()) if args.out.is_file() else {"environment": rc.environment(), "results": {}}
    for name in args.only:
        done["results"][name] = run_variant(name, state, args.max_seq_length)
        args.out.write_text(json.dumps(done, indent=1) + "\n", encoding="utf-8")
        print(table({name: done["results"][name]}).splitlines()[-1], flush=True)
    print(table(done["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
