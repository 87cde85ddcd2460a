"""What `inhouse.json` records about an adapter: where it came from, exactly.

One typed `Lineage` for every entry of the library (a trained adapter, a job's checkpoint, a merged
model), so each field is spelled once. Every field is optional and unknown keys are kept: a file
written by any earlier inhouse (or holding keys a newer one added) still reads, and is written back
with nothing lost.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inhouse import provenance
from inhouse.provenance import now, sha256_file  # noqa: F401 (this module's API since it began)
from inhouse.recipe import Recipe

PACKAGES = ("inhouse", "torch", "transformers", "peft", "accelerate", "tokenizers")
RECORDS = ("evaluations", "exports")  # the lists `registry.record` appends to after publishing


class Lineage(BaseModel):
    """The contents of `inhouse.json`."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    kind: str | None = Field(None, description="lora, qlora, full, checkpoint or merged")
    base_model: str | None = None
    data: list[dict[str, Any]] | None = Field(None, description="each file: path, sha256, role, mix, examples")
    examples: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] | None = None
    versions: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    origin: dict[str, Any] | None = Field(None, description="what asked for it, e.g. the fine-tuning job")
    parent: Lineage | None = Field(None, description="a merged model: the adapter's own lineage")
    merged_from: str | None = None
    merged_dtype: str | None = None
    step: int | None = Field(None, description="a checkpoint: the optimizer step it was saved at")
    speed: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    evaluations: list[dict[str, Any]] = Field(default_factory=list)
    exports: list[dict[str, Any]] = Field(default_factory=list)

    def dump(self) -> dict[str, Any]:
        """As JSON data, without the fields this entry never had (an old file keeps its shape)."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def trained(self) -> Lineage:
        """The lineage that holds the training details: a merged model's adapter, else this one."""
        return self.parent or self


def versions() -> dict[str, str]:
    return provenance.versions(PACKAGES)


def build_lineage(recipe: Recipe, name: str, metrics: dict[str, Any], history: list[dict],
                  started: datetime, drawn: list | None = None, *, n_train: int, n_val: int) -> Lineage:
    return Lineage(name=name, kind=recipe.method, base_model=recipe.base_model, data=data_files(recipe, drawn or []),
                   examples={"train": n_train, "validation": n_val}, recipe=recipe.model_dump(mode="json"),
                   metrics=metrics, history=history, versions=versions(),
                   started_at=started.isoformat(timespec="seconds"), finished_at=now())


def data_files(recipe: Recipe, drawn: list) -> list[dict[str, Any]]:
    """Each file with its sha256; a training file also with how it was mixed and how many examples it gave
    (`train` per epoch, repeats included, before examples over max_seq_length are dropped)."""
    files = [{**_file(d.source.path), "role": "train", "weight": d.source.weight, "max_examples": d.source.max_examples,
              "examples": {"read": d.read, "train": d.train, "validation": d.validation}} for d in drawn]
    if recipe.validation_file:
        files.append({**_file(recipe.validation_file), "role": "validation"})
    return files


def _file(path: Path) -> dict[str, str]:
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(Path(path))}
