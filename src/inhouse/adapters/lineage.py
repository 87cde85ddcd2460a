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
                  started: datetime, n_train: int, n_val: int) -> dict[str, Any]:
    files = [f for f in (recipe.train_file, recipe.validation_file) if f]
    return {
        "name": name,
        "kind": recipe.method,
        "base_model": recipe.base_model,
        "data": [{"path": str(Path(f).resolve()), "sha256": sha256_file(Path(f))} for f in files],
        "examples": {"train": n_train, "validation": n_val},
        "recipe": recipe.model_dump(mode="json"),
        "metrics": metrics,
        "history": history,
        "versions": versions(),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
