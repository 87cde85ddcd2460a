"""The adapter library under INHOUSE_HOME (default ~/.inhouse).

Layout: `adapters/<name>/` is a standard PEFT adapter folder (or, for full
fine-tunes, a Hugging Face model folder) plus `inhouse.json` with lineage.
Results are built in a staging folder and renamed into place (`inhouse.atomic`),
so a crash or Ctrl-C never leaves a half-written adapter under a real name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inhouse import atomic, paths
from inhouse.errors import ConflictError, InhouseError, NotFoundError, did_you_mean

LINEAGE = "inhouse.json"


def library() -> Path:
    return paths.adapters()


def save_atomically(name: str, write: Callable[[Path], None]) -> Path:
    """Build an adapter folder with `write(folder)`; it appears in the library all at once."""
    try:
        return atomic.write_folder(library() / name, write)
    except FileExistsError:
        raise ConflictError(f"adapter {name!r} already exists in {library()}; choose another output_name") from None


def resolve(ref: str) -> Path:
    """An adapter by library name or by path."""
    for candidate in (Path(ref).expanduser(), library() / ref):
        if (candidate / LINEAGE).is_file() or (candidate / "adapter_config.json").is_file():
            return candidate
    raise NotFoundError(f"no adapter {ref!r}{did_you_mean(ref, names())} (not a folder, not in {library()}; "
                        f"available: {', '.join(names()[:10]) or 'none yet'})")


def names() -> list[str]:
    """Library names, newest first, without reading any lineage (fast, for hints)."""
    if not library().is_dir():
        return []
    found = [p for p in library().iterdir() if p.is_dir() and not p.name.startswith(".")]
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


class BrokenLineage(InhouseError):
    """An adapter folder whose inhouse.json cannot be read."""


def lineage(path: Path) -> dict[str, Any]:
    file = path / LINEAGE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BrokenLineage(f"{file}: cannot be read ({_reason(e)}); restore it or remove the folder") from None
    if not isinstance(data, dict):
        raise BrokenLineage(f"{file}: is not a JSON object; restore it or remove the folder")
    return data


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or " ".join(str(error).split())[:120]


def list_adapters() -> list[dict[str, Any]]:
    """Every entry of the library, newest first; an entry whose lineage cannot be read is listed
    with `broken` (the reason) instead of failing the whole listing."""
    if not library().is_dir():
        return []
    found = [_entry(p) for p in sorted(library().iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda a: str(a.get("finished_at", "")), reverse=True)


def _entry(path: Path) -> dict[str, Any]:
    try:
        return lineage(path) | {"name": path.name, "path": str(path)}
    except BrokenLineage as e:
        return {"name": path.name, "path": str(path), "broken": str(e)}
