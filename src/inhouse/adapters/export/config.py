"""Options of `inhouse export`, defined once: the CLI flags and the Python API read them from here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Target = Literal["merged", "gguf", "ollama", "vllm"]
Quant = Literal["f32", "f16", "bf16", "q8_0", "q4_k_m"]
DEFAULT_QUANT: Quant = "q8_0"


class ExportConfig(BaseModel):
    """Where and how to export; each field is a flag of `inhouse export`."""

    model_config = ConfigDict(extra="forbid")

    to: Target = Field(..., description="merged (Hugging Face folder), gguf (llama.cpp), ollama (Modelfile + GGUF) "
                                        "or vllm (vLLM and SGLang multi-LoRA launch files).")
    out: Path = Field(..., description="A new folder for the export.")
    quant: Quant | None = Field(None, description="GGUF weights (gguf, ollama; default q8_0). q4_k_m uses llama.cpp's "
                                                  "quantiser: install llama-cpp-python (inhouse's gguf extra).")
    with_base: bool = Field(False, description="gguf/ollama: also write the base model as GGUF, so the GGUF LoRA is "
                                               "applied to it (llama-server --lora, Ollama ADAPTER).")
    system: str | None = Field(None, description="ollama: a SYSTEM prompt for the Modelfile.")
    overwrite: bool = Field(False, description="Replace --out when it holds an earlier inhouse export of this kind.")

    @model_validator(mode="after")
    def _quant_only_for_gguf(self) -> ExportConfig:
        if self.quant is not None and self.to in ("merged", "vllm"):
            raise ValueError(f"quant applies to GGUF exports (gguf, ollama), not to {self.to}")
        return self

    @property
    def gguf_quant(self) -> Quant:
        return self.quant or DEFAULT_QUANT
