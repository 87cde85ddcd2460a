"""Options of `inhouse data raft`, kept free of heavy imports: the CLI builds its flags from them before
lancedb or torch are loaded."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from inhouse.recipe import MAX_SEED

MAX_DISTRACTORS = 50  # passages per prompt: more would not fit any model's context with real chunks
MAX_GENERATE = 100_000


class RaftConfig(BaseModel):
    """Where the questions come from and how each RAFT example is built; each field is a flag."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kb: str = Field(..., description="Knowledge base the questions are about: a name (under INHOUSE_HOME/kb) or a folder path.")
    questions: Path | None = Field(None, description="Question/answer JSONL: question, answer, and the doc_path or chunk_id the answer comes from (quote optional; \"answerable\": false for questions the documents cannot answer).")
    generate: int | None = Field(None, ge=1, le=MAX_GENERATE, description="Also have --teacher write a question, answer and verbatim quote for this many sampled chunks (each checked: the quote must occur in its chunk).")
    teacher: str | None = Field(None, description="With --generate: the local model or adapter that writes the questions.")
    distractors: int = Field(3, ge=0, le=MAX_DISTRACTORS, description="Distractor passages beside the oracle; an example without the oracle gets one more, so both kinds show the same number of sources.")
    random_distractors: int = Field(1, ge=0, le=MAX_DISTRACTORS, description="How many of the distractors are random chunks; the rest are hard negatives (the question's top hybrid-search hits).")
    oracle_fraction: float = Field(0.8, ge=0.0, le=1.0, description="Share of answerable examples that show the oracle passage (exactly the rounded count); the rest show distractors only and are taught to refuse.")
    heldout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share of the documents held out: their questions go to heldout.jsonl and validation.jsonl, and no chunk of theirs appears in train.jsonl.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for the held-out documents, the oracle draw, random distractors and passage order.")

    @model_validator(mode="after")
    def _a_source_of_questions(self) -> RaftConfig:
        if self.questions is None and self.generate is None:
            raise ValueError("give the questions: --questions QA.jsonl, or --generate N --teacher MODEL (or both)")
        if (self.generate is None) != (self.teacher is None):
            raise ValueError("--generate N and --teacher MODEL go together: the teacher writes the N questions")
        return self
