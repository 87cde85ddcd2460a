"""Which pairs and negatives to tune the embedder on: variants scored on Cranfield, chosen on odd query ids.

    python bench/embedder_variants.py --work /tmp/embvar                 # every variant (about 15 min each on 2 cores)
    python bench/embedder_variants.py --work /tmp/embvar --only guided   # some of them

The exploration behind `inhouse rag tune-embedder`'s defaults (bench/embedder_tuning.py measures the
chosen one through the real pipeline). The stock knowledge base is indexed once (kept in --work with its
BM25 lists); each variant makes pairs from its chunks with `inhouse.rag.pairs.synthetic_pairs`, trains
a fresh MiniLM with sentence-transformers' trainer, embeds every chunk and judged query, ranks exactly by
cosine (what the store's exact search returns) and fuses with the stock BM25 lists as search() does
(rrf_run of bench/rag_cranfield.py). One variant uses what the product does not have (BM25 hard
negatives): it is here because it was tried. Scores: all / odd / even query
ids; choose on odd, report on even. Passages are cut at 128 tokens in training (--max-seq-length).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rag_cranfield as rc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASE = {"pairs": ["title", "sentence"], "negatives": "all", "learning_rate": 2e-5, "epochs": 1.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "stock": {},
    "title+sentence": {},
    "title": {"pairs": ["title"]},
    "title, 3 epochs, lr 5e-5": {"pairs": ["title"], "epochs": 3.0, "learning_rate": 5e-5},
    "title, BM25 hard negatives": {"pairs": ["title"], "hard_negatives": True},
    "guided": {"negatives": "guided"},
    "guided, lr 5e-5": {"negatives": "guided", "learning_rate": 5e-5},
}


def prepare(work: Path) -> dict:
    """The stock knowledge base and each judged query's BM25 list, made once per --work folder."""
    cached = work / "stock.pkl"
    if cached.is_file():
        return pickle.loads(cached.read_bytes())
    from inhouse.rag.index import index
    from inhouse.rag.qrels import read_cranfield, write_collection

    data = read_cranfield(rc.DEFAULT_DATA)
    write_collection(data.docs, work / "docs")
    index(work / "docs", "cran", progress=False)
    queries = {q: t for q, t in data.queries.items() if q in data.qrels}
    lists = rc.fetch_lists("cran", queries, max(50, 4 * rc.CHUNKS_PER_QUERY))
    state = {"queries": queries, "qrels": data.qrels, "judged": {d for j in data.qrels.values() for d in j},
             "bm25": {q: v["bm25"] for q, v in lists.items()}}
    cached.write_bytes(pickle.dumps(state))
    return state


def hard_negatives(store: Any, chunks: list, pairs: list) -> list[str]:
    """For each pair, one of the BM25 top 10 chunks of another document (seeded)."""
    doc_of = {c.chunk_id: c.doc_path for c in chunks}
    out = []
    for p in pairs:
        hits = [h for h in store.search_text(p.query, 12) if h.doc_path != doc_of[p.origin]][:10]
        out.append(random.Random(p.origin).choice(hits).text if hits else random.Random(p.origin).choice(chunks).text)
    return out


def train(variant: dict, pairs: list, negatives: list[str] | None, max_len: int) -> Any:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss, MultipleNegativesRankingLoss

    from inhouse.rag.tune import SCALE, fresh_model
    from inhouse.rag.embed import resolve_embedder

    folder = resolve_embedder(None)[1]
    model = fresh_model(folder)
    model.max_seq_length = max_len
    columns = {"anchor": [p.query for p in pairs], "positive": [p.passage for p in pairs]}
    if negatives is not None:
        columns["negative"] = negatives
    if variant["negatives"] == "guided":
        guide = fresh_model(folder)
        guide.max_seq_length = max_len
        loss = GISTEmbedLoss(model, guide, temperature=1 / SCALE)
    else:
        loss = MultipleNegativesRankingLoss(model, scale=SCALE)
    with tempfile.TemporaryDirectory() as run_dir:
        args = SentenceTransformerTrainingArguments(
            output_dir=run_dir, num_train_epochs=variant["epochs"], per_device_train_batch_size=32,
            learning_rate=variant["learning_rate"], warmup_steps=0.1, batch_sampler="no_duplicates",
            logging_steps=10, save_strategy="no", report_to="none", seed=0, disable_tqdm=True)
        SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns), loss=loss).train()
    model.max_seq_length = 256
    return model


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


def run_variant(name: str, state: dict, max_len: int) -> dict:
    from inhouse.rag.embed import load_embedder
    from inhouse.rag.pairs import count_by_kind, synthetic_pairs
    from inhouse.rag.store import open_kb

    store = open_kb("cran")
    chunks = sorted(store.chunks(), key=lambda c: c.chunk_id)
    clock = time.perf_counter()
    if name == "stock":
        return {"scores": evaluate(load_embedder(None, device="cpu").model, chunks, state)}
    variant = BASE | VARIANTS[name]
    pairs = synthetic_pairs(chunks, variant["pairs"])
    negatives = hard_negatives(store, chunks, pairs) if variant.get("hard_negatives") else None
    model = train(variant, pairs, negatives, max_len)
    seconds = round(time.perf_counter() - clock, 1)
    return {"variant": variant, "pairs": count_by_kind(pairs), "train_s": seconds,
            "scores": evaluate(model, chunks, state)}


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
    p.add_argument("--max-seq-length", type=int, default=128)
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
