"""Options of `inhouse eval`, kept free of heavy imports so the CLI starts fast."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from inhouse.generation import GenerationConfig
from inhouse.rag.config import SearchConfig
from inhouse.recipe import MAX_BATCH


class EvalConfig(BaseModel):
    """Options of `inhouse eval`; each is a flag."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    data: Path = Field(..., description="Held-out conversations (chat JSONL, Alpaca, prompt/completion), or preference pairs (OpenAI's preference JSONL: adds reward accuracy and margin); with --kb, a question/answer file (question, answer, doc_path or chunk_id, answerable).")
    schema_file: Path | None = Field(None, description="JSON Schema for structured answers (conformance rate).",
                                     json_schema_extra={"flag": "schema"})
    judge: str | None = Field(None, description="Judge model or adapter for 1-5 rubric scores (off when unset).")
    reference_file: Path | None = Field(None, description="General text for the forgetting perplexity (default: bundled).",
                                        json_schema_extra={"flag": "reference"})
    multiple_choice: Path | None = Field(None, description="JSONL of {question, choices, answer} for forgetting accuracy.")
    forgetting_threshold: float = Field(0.10, ge=0, description="Flag forgetting when perplexity rises (relative) or accuracy drops (absolute) by more.")
    refusal_phrases: list[str] | None = Field(None, description="Count answers containing these phrases as refusals (comma-separated).")
    batch_size: int = Field(8, ge=1, le=MAX_BATCH, description="Conversations per generation/loss batch.")
    max_examples: int | None = Field(None, ge=1, description="Evaluate only the first N examples.")
    generation: GenerationConfig = Field(GenerationConfig(), description="How answers are generated (greedy by default).")
    search: SearchConfig | None = Field(None, description="Giving --kb (with a question/answer --data) adds closed-book vs retrieval-augmented answers (as `inhouse ask` gives them), base and tuned, side by side.")
    out: Path | None = Field(None, description="Report folder (default: INHOUSE_HOME/evals/<adapter>-<time>).")
    overwrite: bool = Field(False, description="Replace --out when it holds an earlier inhouse report (never any other folder).")
