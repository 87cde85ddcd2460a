"""What `inhouse.json` records about an adapter: where it came from, exactly."""

from __future__ import annotations

import hashlib
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from inhouse.recipe import Recipe

PACKAGES = ("inhouse", "torch", "transformers", "peft", "accelerate", "tokenizers")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def build_lineage(recipe: Recipe, name: str, metrics: dict[str, Any], history: list[dict],
                  started: datetime, drawn: list | None = None, *, n_train: int, n_val: int) -> dict[str, Any]:
    return {
        "name": name,
        "kind": recipe.method,
        "base_model": recipe.base_model,
        "data": data_files(recipe, drawn or []),
        "examples": {"train": n_train, "validation": n_val},
        "recipe": recipe.model_dump(mode="json"),
        "metrics": metrics,
        "history": history,
        "versions": versions(),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


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
