"""Tune a knowledge base's embedder on (question, passage) pairs, with in-batch negatives.

`tune_embedder` reads pairs from a QA file or makes them from the knowledge base's chunks
(`inhouse.rag.pairs`), holds a few out (whole chunks), and trains a fresh copy of the base embedder
with sentence-transformers' own `SentenceTransformerTrainer`: for each question, its passage must score
above the other passages of the batch (`MultipleNegativesRankingLoss`), or above those the base
embedder does not already rank above it (`GISTEmbedLoss` with the base as guide, for pairs made from
the chunks: in a narrow collection many other passages are relevant too). The result is a
sentence-transformers folder in the library (`paths.embedders()/NAME`), written atomically with an
`inhouse.json` lineage (base, knowledge base, pairs and their sha256, settings, held-out retrieval
before and after, versions, dates). `inhouse rag index FOLDER --kb NAME --embedder NAME --reindex`
then rebuilds a knowledge base with it; the index records the library name, so search reloads it.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from inhouse import atomic, outputs, provenance
from inhouse.errors import InhouseError
from inhouse.events import Events, Stopped
from inhouse.rag.config import TuneConfig
from inhouse.rag.embed import default_device, embedder_path, resolve_embedder
from inhouse.rag.pairs import Pair, count_by_kind, pairs_digest, qa_pairs, synthetic_pairs
from inhouse.rag.store import Store, open_kb

EMBEDDER_KIND = "embedder"
LINEAGE = "inhouse.json"
MAX_HELD_OUT = 500
SCALE = 20.0  # similarity scale of the contrastive loss (1 / temperature): sentence-transformers' default
PACKAGES = ("inhouse", "sentence-transformers", "transformers", "torch")


class EmbedderLineage(BaseModel):
    """The contents of a tuned embedder's `inhouse.json`; unknown keys are kept."""

    model_config = ConfigDict(extra="allow")

    name: str
    kind: str = EMBEDDER_KIND
    base_embedder: str
    knowledge_base: dict[str, Any]
    pairs: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    versions: dict[str, str]
    device: str
    started_at: str
    finished_at: str


@dataclass(frozen=True)
class TunedEmbedder:
    """A tuned embedder in the library: index with `name` (`--embedder NAME`)."""

    name: str
    path: Path
    lineage: EmbedderLineage


def tune_embedder(kb: str | os.PathLike, *, pairs_file: str | os.PathLike | None = None, name: str | None = None,
                  config: TuneConfig | None = None, overwrite: bool = False,
                  events: Events | None = None) -> TunedEmbedder:
    """Tune the embedder of knowledge base `kb` on pairs from `pairs_file` (a QA file), or on pairs made
    from its chunks; saved in the library as `name` (default: `<kb>-tuned`)."""
    config, events, started = config or TuneConfig(), events or Events(), provenance.now()
    store = open_kb(kb)
    name = name or f"{store.path.name}-tuned"
    out = outputs.claim(embedder_path(name), EMBEDDER_KIND, overwrite=overwrite, flag="--out")
    base_name, base_folder = resolve_embedder(config.base or store.meta()["embedder_name"])
    pairs = _pairs(store, pairs_file, config)
    train, held = split_held_out(pairs, config)
    events.say(f"{len(train)} training pairs ({_kinds_text(train)}), {len(held)} held out; base {base_name}")
    model, device = fresh_model(base_folder), default_device()
    before = retrieval_scores(model, held)
    clock = time.perf_counter()
    negatives = guided_or_all(config, pairs_file)
    loss, steps = _train(model, train, config, events, base_folder if negatives == "guided" else None)
    after = retrieval_scores(model, held)
    metrics = {"train_loss": loss, "steps": steps, "negatives": negatives, "seconds": round(time.perf_counter() - clock, 1),
               "held_out": {"pairs": len(held), "before": before, "after": after}}
    lineage = EmbedderLineage(name=name, base_embedder=base_name, knowledge_base=_kb_info(store),
                              pairs=_pairs_info(pairs, train, held, pairs_file, config), config=config.model_dump(),
                              metrics=metrics, versions=versions(), device=device, started_at=started,
                              finished_at=provenance.now())
    path = out.write(lambda folder: _save(model, folder, lineage))
    events.say(f"embedder {name!r} saved to {path}" + (f"; held-out MRR@10 {before['mrr@10']:.3f} -> "
                                                       f"{after['mrr@10']:.3f}" if held else ""))
    return TunedEmbedder(name, path, lineage)


def read_lineage(folder: str | os.PathLike) -> EmbedderLineage:
    return EmbedderLineage.model_validate_json((Path(folder) / LINEAGE).read_text(encoding="utf-8"))


# --- pairs -----------------------------------------------------------------------------------------


def _pairs(store: Store, pairs_file: str | os.PathLike | None, config: TuneConfig) -> list[Pair]:
    if pairs_file is not None:
        pairs = qa_pairs(pairs_file, lambda item: passage_of(store, item))
    else:
        pairs = synthetic_pairs(store.chunks(), config.pairs, seed=config.seed)
    if config.max_pairs and len(pairs) > config.max_pairs:
        pairs = random.Random(config.seed).sample(pairs, config.max_pairs)
    if len(pairs) < 2:
        raise InhouseError(f"only {len(pairs)} training pair(s) from {pairs_file or store.path}; tuning needs at "
                           "least 2 (index more documents, or give a --questions file)")
    return pairs


def passage_of(store: Store, item: Any) -> str | None:
    """The text a QA item points at: its chunk (`chunk_id`), or the chunk of its document (`doc_path`) that
    holds its quote, else the one that matches the quote or question best by BM25, else the first."""
    if item.chunk_id:
        return next((c.text for c in store.chunks({"chunk_id": item.chunk_id})), None)
    where = {"doc_path": item.doc_path}
    quote = " ".join((item.quote or "").split())
    chunks = sorted(store.chunks(where), key=lambda c: c.start)
    holding = [c for c in chunks if quote and quote in " ".join(c.text.split())]
    best = holding or store.search_text(quote or item.question, 1, where) or chunks
    return best[0].text if best else None


def split_held_out(pairs: Sequence[Pair], config: TuneConfig) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): whole origins (chunks, or QA lines) held out, a seeded `validation_fraction`
    of them (at most MAX_HELD_OUT pairs), so no held-out passage was trained on."""
    origins = sorted({p.origin for p in pairs})
    random.Random(config.seed).shuffle(origins)
    held_origins: set[str] = set()
    for origin in origins[:int(len(origins) * config.validation_fraction)]:
        held_origins.add(origin)
        if len(held_origins) >= MAX_HELD_OUT:
            break
    held = [p for p in pairs if p.origin in held_origins]
    train = [p for p in pairs if p.origin not in held_origins]
    return (train, held) if len(held) >= 2 else (list(pairs), [])


def _kinds_text(pairs: Sequence[Pair]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(count_by_kind(pairs).items()))


# --- training --------------------------------------------------------------------------------------


def fresh_model(folder: Path) -> Any:
    """A fresh copy of the base model: the cached one `load_embedder` serves must never be trained."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(folder), device=default_device(), local_files_only=True)
    except (OSError, ValueError) as e:
        raise InhouseError(f"could not load embedder from {folder}: {str(e).splitlines()[0]}") from e


def guided_or_all(config: TuneConfig, pairs_file: Any) -> str:
    """`auto` resolved: pseudo-queries made from a narrow collection have many relevant passages besides
    their own, so their negatives are guided; a QA file's pairs are the user's, all negatives count."""
    if config.negatives != "auto":
        return config.negatives
    return "all" if pairs_file is not None else "guided"


def _train(model: Any, pairs: Sequence[Pair], config: TuneConfig, events: Events,
           guide: Path | None = None, negatives: Sequence[str] | None = None) -> tuple[float, int]:
    """sentence-transformers' trainer with in-batch negatives (guided by the model at `guide`, when given),
    plus one given hard negative per pair when `negatives` is; returns (mean loss, steps)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import PrinterCallback

    from inhouse.train.progress import EventsCallback, FiniteLossGuard, NonFiniteLoss

    columns = {"anchor": [p.query for p in pairs], "positive": [p.passage for p in pairs]}
    data = Dataset.from_dict(columns if negatives is None else columns | {"negative": list(negatives)})
    progress = EventsCallback(events, tokens=False)
    limit = model.max_seq_length
    model.max_seq_length = min(config.max_seq_length or limit, limit)
    with tempfile.TemporaryDirectory(prefix="inhouse-tune-") as run_dir:
        trainer = SentenceTransformerTrainer(model=model, args=_training_args(config, run_dir), train_dataset=data,
                                             loss=_loss(model, guide), callbacks=[progress, FiniteLossGuard()])
        trainer.remove_callback(PrinterCallback)
        try:
            result = trainer.train()
        except NonFiniteLoss as e:
            raise InhouseError(f"tuning diverged at step {e.step} (loss {e.loss}); nothing was saved: "
                               "lower --learning-rate") from None
        finally:
            model.max_seq_length = limit  # indexing reads whole chunks again
    if progress.stopped_at is not None:
        raise Stopped(f"tuning stopped on request at step {progress.stopped_at}; nothing was saved")
    return round(float(result.training_loss), 4), int(result.global_step)


def _loss(model: Any, guide: Path | None) -> Any:
    """In-batch negatives at scale 20 (temperature 0.05); with a guide, GISTEmbedLoss drops the negatives the
    guide scores above the pair's own passage."""
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss, MultipleNegativesRankingLoss

    if guide is None:
        return MultipleNegativesRankingLoss(model, scale=SCALE)
    guide_model = fresh_model(guide)
    guide_model.max_seq_length = model.max_seq_length
    return GISTEmbedLoss(model, guide_model, temperature=1 / SCALE)


def _training_args(config: TuneConfig, run_dir: str) -> Any:
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments

    return SentenceTransformerTrainingArguments(
        output_dir=run_dir, num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, warmup_steps=config.warmup_ratio,  # below 1: a ratio of all steps
        seed=config.seed, data_seed=config.seed,
        batch_sampler="no_duplicates",  # a repeated text in a batch would be a false negative
        logging_steps=1, logging_nan_inf_filter=False, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
    )


def retrieval_scores(model: Any, pairs: Sequence[Pair], batch_size: int = 64) -> dict[str, float]:
    """Each question against the held-out passages of every other origin: accuracy@1 and MRR@10 of its own
    (two pairs of one chunk have near-identical passages, so neither competes with the other)."""
    if not pairs:
        return {}
    encode = lambda texts: model.encode(texts, batch_size=batch_size, convert_to_numpy=True,  # noqa: E731
                                        normalize_embeddings=True, show_progress_bar=False)
    scores = encode([p.query for p in pairs]) @ encode([p.passage for p in pairs]).T
    origins = np.array([p.origin for p in pairs])
    rivals = (origins[:, None] != origins[None, :])
    gold = np.diag(scores)
    ranks = 1 + ((scores > gold[:, None]) & rivals).sum(axis=1)
    return {"accuracy@1": round(float((ranks == 1).mean()), 4),
            "mrr@10": round(float(np.where(ranks <= 10, 1.0 / ranks, 0.0).mean()), 4)}


# --- saving ----------------------------------------------------------------------------------------


def _save(model: Any, folder: Path, lineage: EmbedderLineage) -> None:
    model.save(str(folder), create_model_card=False)  # inhouse.json is the record (a card would quote the pairs)
    atomic.write_json(folder / LINEAGE, lineage.model_dump(mode="json"))


def _kb_info(store: Store) -> dict[str, Any]:
    meta = store.meta()
    return {"name": store.path.name, "path": str(store.path), "embedder": meta.get("embedder_name"),
            "table_version": meta.get("table_version"), "root": meta.get("root"), "chunks": store.count()}


def _pairs_info(pairs: Sequence[Pair], train: Sequence[Pair], held: Sequence[Pair],
                pairs_file: str | os.PathLike | None, config: TuneConfig) -> dict[str, Any]:
    if pairs_file is not None:
        source: dict[str, Any] = {"source": "questions", "file": str(Path(pairs_file).resolve()),
                                  "file_sha256": provenance.sha256_file(Path(pairs_file))}
    else:
        source = {"source": "chunks", "kinds": list(config.pairs)}
    return {**source, "counts": count_by_kind(pairs), "total": len(pairs), "train": len(train),
            "held_out": len(held), "sha256": pairs_digest(pairs)}


def versions() -> dict[str, str]:
    return provenance.versions(PACKAGES)
