"""What a retrieval does: one config for `rag search`, `rag eval`, `ask` and the HTTP API.

Kept free of heavy imports so the CLI can build its flags before lancedb or
torch are loaded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inhouse.generation import GenerationConfig

MIN_SIMILARITY = 0.30  # calibrated on Cranfield: see inhouse.rag.answer


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
    where: dict[str, Any] | None = Field(None, description="Metadata filter {column: value} (YAML and HTTP only).")

    @field_validator("weights")
    @classmethod
    def _two_weights(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or min(value) < 0 or max(value) == 0:
            raise ValueError("give two non-negative weights (vector,bm25), not both 0")
        return value

    def search_kwargs(self) -> dict[str, Any]:
        """The keywords of `inhouse.rag.search.search` (all but kb)."""
        return {"k": self.k, "mode": self.mode, "weights": tuple(self.weights), "reranker": self.reranker,
                "where": self.where}


class AskConfig(BaseModel):
    """`inhouse ask`: a retrieval and a generation."""

    model_config = ConfigDict(extra="forbid")

    search: SearchConfig
    generation: GenerationConfig = GenerationConfig()
