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
import random
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
# The GPU grid (--group gpu): what a CPU cannot afford to explore. Two knobs are not product settings
# (yet): `sentences` makes that many sentence pairs per chunk (the union of pair seeds 0..k-1), and
# `mined` adds to each pair one hard negative, a chunk of another document that the stock embedder ranks
# between those two places for the pair's query.
TS = {"learning_rate": 5e-5}
GPU_VARIANTS: dict[str, dict[str, Any]] = {
    "stock": {},
    "default": {},
    "lr 5e-5, 3 epochs": TS | {"epochs": 3.0},
    "title, lr 5e-5, 3 epochs": TS | {"pairs": ["title"], "epochs": 3.0},
    "x3 sentences, lr 5e-5, 3 epochs": TS | {"sentences": 3, "epochs": 3.0},
    "x3 sentences, lr 5e-5, 5 epochs": TS | {"sentences": 3, "epochs": 5.0},
    "x6 sentences, lr 5e-5, 3 epochs": TS | {"sentences": 6, "epochs": 3.0},
    "lr 1e-4, 5 epochs": {"learning_rate": 1e-4, "epochs": 5.0},
    "lr 2e-5, 10 epochs": {"epochs": 10.0},
    "x3 sentences, batch 128, lr 1e-4, 5 epochs": {"sentences": 3, "batch_size": 128, "learning_rate": 1e-4,
                                                   "epochs": 5.0},
    "mined 10-30, lr 5e-5, 3 epochs": TS | {"mined": (10, 30), "epochs": 3.0},
    "mined 3-10, lr 5e-5, 3 epochs": TS | {"mined": (3, 10), "epochs": 3.0},
    "mined 10-30, all negatives, lr 5e-5, 3 epochs": TS | {"mined": (10, 30), "negatives": "all", "epochs": 3.0},
    "all negatives, lr 5e-5, 3 epochs": TS | {"negatives": "all", "epochs": 3.0},
    "x3 sentences, mined 10-30, lr 5e-5, 3 epochs": TS | {"sentences": 3, "mined": (10, 30), "epochs": 3.0},
    "sentence x6, lr 5e-5, 3 epochs": TS | {"pairs": ["sentence"], "sentences": 6, "epochs": 3.0},
    "lr 5e-5, 3 epochs, seed 1": TS | {"epochs": 3.0, "seed": 1},
    "x3 sentences, lr 5e-5, 3 epochs, seed 1": TS | {"sentences": 3, "epochs": 3.0, "seed": 1},
    "x3 sentences, lr 5e-5, 3 epochs, seed 2": TS | {"sentences": 3, "epochs": 3.0, "seed": 2},
}
GROUPS = {"cpu": VARIANTS, "gpu": GPU_VARIANTS}


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
    from inhouse.rag.pairs import count_by_kind
    from inhouse.rag.tune import _train, fresh_model, guided_or_all, split_held_out

    settings = dict(settings)
    hard, sentences, mined = settings.pop("bm25_hard", False), settings.pop("sentences", 1), settings.pop("mined", None)
    config = TuneConfig(**({"max_seq_length": max_len} | settings))
    folder = resolve_embedder(None)[1]
    pairs = make_pairs(chunks, config, sentences)
    if hard:
        pairs = bm25_hard(pairs)
    train_pairs, _ = split_held_out(pairs, config)
    model = fresh_model(folder)
    guide = folder if guided_or_all(config, None) == "guided" else None
    negatives = mine(folder, train_pairs, chunks, mined, config.seed) if mined else None
    loss, steps = _train(model, train_pairs, config, Events(), guide, negatives)
    return model, {"config": config.model_dump(), "pairs": count_by_kind(train_pairs), "loss": loss, "steps": steps,
                   "sentences": sentences, "mined": mined}


def make_pairs(chunks: list, config: Any, sentences: int) -> list:
    """synthetic_pairs, with `sentences` sentence pairs per chunk: the union over pair seeds, each query once."""
    from inhouse.rag.pairs import synthetic_pairs

    pairs = synthetic_pairs(chunks, config.pairs, config.seed)
    seen = {(p.query, p.origin) for p in pairs}
    for extra in range(1, sentences if "sentence" in config.pairs else 1):
        for p in synthetic_pairs(chunks, ["sentence"], config.seed + 1000 * extra):
            if (p.query, p.origin) not in seen:
                seen.add((p.query, p.origin))
                pairs.append(p)
    random.Random(config.seed).shuffle(pairs)
    return pairs


def mine(folder: Path, pairs: list, chunks: list, ranks: tuple[int, int], seed: int) -> list[str]:
    """One negative per pair: a chunk of another document at a seeded rank in [lo, hi) of the stock
    embedder's ranking for the pair's query (the top ranks of a narrow collection are often relevant)."""
    from inhouse.rag.tune import fresh_model

    stock = fresh_model(folder)
    encode = lambda texts: stock.encode(texts, batch_size=256, normalize_embeddings=True,  # noqa: E731
                                        convert_to_numpy=True, show_progress_bar=False)
    scores = encode([p.query for p in pairs]) @ encode([c.text for c in chunks]).T
    doc_of = {c.chunk_id: c.doc_path for c in chunks}
    rng, lo, hi = random.Random(seed), ranks[0], ranks[1]
    negatives = []
    for i, p in enumerate(pairs):
        own = doc_of.get(p.origin)
        others = [j for j in np.argsort(-scores[i])[:hi + 20] if chunks[j].doc_path != own]
        negatives.append(chunks[rng.choice(others[lo:hi] or others)].text)
    return negatives


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


def run_variant(name: str, settings: dict, state: dict, max_len: int | None) -> tuple[dict, Any]:
    from inhouse.rag.embed import load_embedder

    clock, measured = time.perf_counter(), rc.environment()
    if name == "stock":
        return {"environment": measured, "scores": evaluate(load_embedder(None).model, state["chunks"], state)}, None
    model, info = train(settings, state["chunks"], max_len)
    return info | {"environment": measured, "train_s": round(time.perf_counter() - clock, 1),
                   "scores": evaluate(model, state["chunks"], state)}, model


def save_parts(model: Any, out: Path, part_mb: int = 15) -> list[str]:
    """The model's weights in fp16, cut into parts that fit the device's file limit; `cat` joins them."""
    from safetensors.torch import save

    blob = save({k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in model[0].auto_model.state_dict().items()})
    size = part_mb * 2**20
    names = []
    for i in range(0, len(blob), size):
        names.append(f"best.safetensors.{i // size:02d}")
        (out / names[-1]).write_bytes(blob[i:i + size])
    return names


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
    p.add_argument("--group", choices=GROUPS, default="cpu", help="cpu: the product settings; gpu: the wider grid")
    p.add_argument("--only", nargs="*", default=None, help="variants of the group (default: all of them)")
    p.add_argument("--max-seq-length", type=int, default=None, help="tokens of a passage in training (default: "
                   "TuneConfig's, the embedder's own 256)")
    p.add_argument("--budget-s", type=float, default=None, help="start no variant after this many seconds")
    p.add_argument("--save-best", type=Path, default=None, help="folder for the weights of the trained variant "
                   "best on odd query ids (hybrid nDCG@10), fp16 in parts")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "embedder_variants.json")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["INHOUSE_HOME"] = str(args.work / "home")
    state, variants, clock = prepare(args.work), GROUPS[args.group], time.perf_counter()
    done = json.loads(args.out.read_text()) if args.out.is_file() else {"environment": rc.environment(), "results": {}}
    best: tuple[float, str, Any] = (-1.0, "", None)
    for name in args.only or list(variants):
        if args.budget_s and time.perf_counter() - clock > args.budget_s:
            print(f"budget spent: {name} and later not run", flush=True)
            break
        done["results"][name], model = run_variant(name, variants[name], state, args.max_seq_length)
        args.out.write_text(json.dumps(done, indent=1) + "\n", encoding="utf-8")
        print(table({name: done["results"][name]}).splitlines()[-1], flush=True)
        odd = done["results"][name]["scores"]["hybrid"]["odd"]["ndcg@10"]
        if model is not None and odd > best[0]:
            best = (odd, name, model)
    print(table(done["results"]))
    if args.save_best and best[2] is not None:
        args.save_best.mkdir(parents=True, exist_ok=True)
        print(f"best on odd ids: {best[1]} ({best[0]:.4f}) -> {save_parts(best[2], args.save_best)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
