"""What a retrieval does: one config for `rag search`, `rag eval`, `ask` and the HTTP API; and how an
embedder is tuned for a knowledge base (`rag tune-embedder`).

Kept free of heavy imports so the CLI can build its flags before lancedb or
torch are loaded.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inhouse.generation import GenerationConfig
from inhouse.listsyntax import split_list
from inhouse.recipe import MAX_BATCH, MAX_EPOCHS, MAX_SEED

MIN_SIMILARITY = 0.30  # calibrated on Cranfield: see inhouse.rag.answer
STORE_HELP = ("Where a new knowledge base keeps its chunks: lancedb (embedded, in its folder; the default), a "
              "postgresql://USER@HOST/DB connection string without password (PGPASSWORD or ~/.pgpass supply it), "
              "or env:VARIABLE naming an environment variable that holds one. An existing knowledge base keeps its own.")

# The metadata of every chunk (the store's columns, vector aside) and the type of each: what
# `where` can filter on.
FILTER_KEYS: dict[str, type] = {"chunk_id": str, "doc_path": str, "title": str, "heading_path": str, "text": str,
                                "start": int, "end": int, "page": int, "mtime": float, "sha256": str}
_WILDCARD = re.compile(r"(?<!\\)[*?]")


class SearchConfig(BaseModel):
    """Which knowledge base, how many chunks, and how they are ranked."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kb: str = Field(..., description="Knowledge base: a name (under INHOUSE_HOME/kb) or a folder path.")
    k: int = Field(5, ge=1, le=200, description="Number of chunks returned (given to the model by ask).",
                   json_schema_extra={"short": "-k"})
    mode: Literal["hybrid", "vector", "bm25"] = Field("hybrid", description="Retrieval: vector and BM25 fused by reciprocal rank, or one of them.")
    weights: list[float] = Field([1.0, 1.0], description="Hybrid fusion weights: vector,bm25.")
    reranker: str | None = Field(None, description="Local cross-encoder folder that reorders the best candidates (off when unset).")
    min_similarity: float = Field(MIN_SIMILARITY, ge=-1.0, le=1.0, description="ask: refuse without calling the model when no chunk is at least this similar (cosine) to the question.")
    where: dict[str, Any] | None = Field(None, description="Only chunks whose metadata match: KEY=VALUE, comma-separated "
                                        "(all must hold; a key twice matches either value; * and ? are wildcards: "
                                        "doc_path=handbook/*). Keys: " + ", ".join(FILTER_KEYS) + ".")

    @field_validator("weights")
    @classmethod
    def _two_weights(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or min(value) < 0 or max(value) == 0:
            raise ValueError("give two non-negative weights (vector,bm25), not both 0")
        return value

    @field_validator("where", mode="before")
    @classmethod
    def _filter(cls, value: Any) -> Any:
        """Flag text or a mapping, checked against the keys that exist: a typo fails before the search."""
        if isinstance(value, str):
            value = parse_where(value)
        return check_where(value) if isinstance(value, dict) else value

    def search_kwargs(self) -> dict[str, Any]:
        """The keywords of `inhouse.rag.search.search` (all but kb)."""
        return {"k": self.k, "mode": self.mode, "weights": tuple(self.weights), "reranker": self.reranker,
                "where": self.where}


def parse_where(text: str) -> dict[str, Any]:
    """`--where` text as the {key: value} filter: `KEY=VALUE,...`; every condition must hold, a key given
    twice matches either value (a list), and a value with `*` or `?` is a wildcard pattern ({"glob": ...}).
    `\\,`, `\\*` and `\\?` are literal."""
    where: dict[str, list[Any]] = {}
    for item in split_list(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--where {item!r}: write KEY=VALUE; keys: {', '.join(FILTER_KEYS)}")
        value = value.strip()
        glob = _WILDCARD.search(value)
        where.setdefault(key.strip(), []).append({"glob": value} if glob else re.sub(r"\\([*?])", r"\1", value))
    return {key: values[0] if len(values) == 1 else values for key, values in where.items()}


def check_where(where: dict[str, Any]) -> dict[str, Any]:
    """Known keys only, and numbers for the numeric ones (`page=3` from a flag is text until here)."""
    return {key: _filter_values(key, value) for key, value in where.items()}


def _filter_values(key: str, value: Any) -> Any:
    if key not in FILTER_KEYS:
        raise ValueError(f"--where: unknown key {key!r}; keys: {', '.join(FILTER_KEYS)}")
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_filter_value(key, v) for v in value]
    return _filter_value(key, value)


def _filter_value(key: str, value: Any) -> Any:
    kind = FILTER_KEYS[key]
    if isinstance(value, dict):
        if set(value) != {"glob"} or not isinstance(value["glob"], str) or kind is not str:
            raise ValueError(f"--where {key}={value!r}: a pattern is {{glob: TEXT}}, on a text key")
        return value
    if kind is str:
        return str(value)
    try:
        if isinstance(value, bool):
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"--where {key}={value!r}: {key} is a number") from None


class AskConfig(BaseModel):
    """`inhouse ask`: a retrieval and a generation."""

    model_config = ConfigDict(extra="forbid")

    search: SearchConfig
    generation: GenerationConfig = GenerationConfig()


class TuneConfig(BaseModel):
    """`inhouse rag tune-embedder`: which pairs, and how the embedder learns from them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    base: str | None = Field(None, description="Embedder to start from: all-MiniLM-L6-v2, a tuned embedder's name or a local sentence-transformers folder; none: the one the knowledge base was indexed with.")
    pairs: list[Literal["title", "sentence"]] = Field(["title", "sentence"], description="Without --questions, the pairs made from each chunk: title (its heading path, else its document's title or title line -> the chunk), sentence (one of its sentences -> the rest of it).")
    max_pairs: int | None = Field(None, ge=1, le=10_000_000, description="Train on at most this many pairs (a seeded sample).")
    negatives: Literal["auto", "guided", "all"] = Field("auto", description="Which in-batch passages count as a question's negatives. all: every other passage of the batch (MultipleNegativesRankingLoss). guided: those the base embedder scores above the question's own passage are left out, as in a narrow collection they are often relevant too (GISTEmbedLoss, the base embedder as guide). auto: guided for pairs made from the chunks, all for --questions.")
    epochs: float = Field(1.0, gt=0, le=MAX_EPOCHS, description="Passes over the pairs.")
    learning_rate: float = Field(2e-5, gt=0, le=1, description="Peak learning rate (linear warm-up, then linear decay).")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of the steps spent warming the learning rate up.")
    batch_size: int = Field(32, ge=2, le=MAX_BATCH, description="Pairs per step; the other passages of a batch are each query's negatives (in-batch negatives), so a larger batch is a harder task.")
    max_seq_length: int | None = Field(None, ge=8, le=8192, description="Tokens of a passage read in training; longer ones are cut there (not when indexing), and lower is faster on a CPU. none: the embedder's own limit (256 for MiniLM).")
    validation_fraction: float = Field(0.05, ge=0, le=0.5, description="Share of the pairs (at most 500) held out to score retrieval before and after tuning.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the pair sample, the held-out pairs and training.")
