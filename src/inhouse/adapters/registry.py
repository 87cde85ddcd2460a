"""The adapter library under INHOUSE_HOME (default ~/.inhouse).

Layout: `adapters/<name>/` is a standard PEFT adapter folder (or, for full
fine-tunes, a Hugging Face model folder) plus `inhouse.json` with lineage.
Results are built in a staging folder and renamed into place (`inhouse.atomic`),
so a crash or Ctrl-C never leaves a half-written adapter under a real name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inhouse import atomic
from inhouse.errors import InhouseError

LINEAGE = "inhouse.json"


def home() -> Path:
    return Path(os.environ.get("INHOUSE_HOME") or Path.home() / ".inhouse").expanduser()


def library() -> Path:
    return home() / "adapters"


def runs() -> Path:
    """Checkpoints of runs in progress (what --resume continues from)."""
    return home() / "runs"


def save_atomically(name: str, write: Callable[[Path], None]) -> Path:
    """Build an adapter folder with `write(folder)`; it appears in the library all at once."""
    try:
        return atomic.write_folder(library() / name, write)
    except FileExistsError:
        raise InhouseError(f"adapter {name!r} already exists in {library()}; choose another output_name") from None


def resolve(ref: str) -> Path:
    """An adapter by library name or by path."""
    for candidate in (Path(ref).expanduser(), library() / ref):
        if (candidate / LINEAGE).is_file() or (candidate / "adapter_config.json").is_file():
            return candidate
    names = ", ".join(a["name"] for a in list_adapters()[:10]) or "none yet"
    raise InhouseError(f"no adapter {ref!r} (not a folder, not in {library()}; available: {names})")


def lineage(path: Path) -> dict[str, Any]:
    file = path / LINEAGE
    if not file.is_file():
        return {}
    return json.loads(file.read_text(encoding="utf-8"))


def list_adapters() -> list[dict[str, Any]]:
    if not library().is_dir():
        return []
    found = [lineage(p) | {"name": p.name, "path": str(p)}
             for p in sorted(library().iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda a: a.get("finished_at", ""), reverse=True)
