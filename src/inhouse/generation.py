"""How text is generated: one config for every command and the HTTP API, and what comes back.

Kept free of heavy imports: the CLI builds its flags from `GenerationConfig`
before torch is loaded, and the server's request schema maps onto it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP = 4  # as OpenAI's API


class GenerationConfig(BaseModel):
    """Sampling and length of one answer; each field is a flag of generate, chat, ask and eval."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_new_tokens: int = Field(256, ge=1, le=32768, description="Longest answer in tokens.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy (deterministic); higher = more varied.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling: keep the smallest set of tokens whose probability reaches this (with temperature > 0).")
    stop: list[str] | None = Field(None, description=f"Up to {MAX_STOP} strings that end the answer (not included in it), comma-separated.")
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1, description="Seed for sampling: the same seed and request give the same answer.")
    system: str | None = Field(None, description="System message put before the conversation when it has none.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value):
        if isinstance(value, str):
            value = [value]
        if value is not None and (len(value) > MAX_STOP or any(not isinstance(s, str) or not s for s in value)):
            raise ValueError(f"give at most {MAX_STOP} non-empty stop strings")
        return value

    def with_system(self, messages: list[dict]) -> list[dict]:
        """The conversation with this config's system message first, unless it has one already."""
        if not self.system or (messages and messages[0].get("role") == "system"):
            return list(messages)
        return [{"role": "system", "content": self.system}, *messages]


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Completion:
    """One generated answer: the text (stop strings and end-of-turn token removed), token counts, and why
    it ended: `stop` (end of turn or a stop string) or `length` (max_new_tokens reached)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
