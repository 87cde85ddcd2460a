"""The adapter library under INHOUSE_HOME (default ~/.inhouse).

Layout: `adapters/<name>/` is a standard PEFT adapter folder (or, for full
fine-tunes, a Hugging Face model folder) plus `inhouse.json` with lineage.
Results are built in `adapters/.staging-*` and renamed into place, so a
crash or Ctrl-C never leaves a half-written adapter under a real name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inhouse.errors import InhouseError

LINEAGE = "inhouse.json"


def home() -> Path:
    return Path(os.environ.get("INHOUSE_HOME") or Path.home() / ".inhouse").expanduser()


def library() -> Path:
    return home() / "adapters"


def runs() -> Path:
    """Checkpoints of runs in progress (what --resume continues from)."""
    return home() / "runs"


def staging(name: str) -> Path:
    library().mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=library()))


def publish(staged: Path, name: str) -> Path:
    """Atomically move a finished adapter folder into the library."""
    target = library() / name
    if target.exists():
        shutil.rmtree(staged, ignore_errors=True)
        raise InhouseError(f"adapter {name!r} already exists in {library()}; choose another output_name")
    os.replace(staged, target)
    return target


def save_atomically(name: str, write: Callable[[Path], None]) -> Path:
    """Run `write(folder)` in a staging folder, then rename it into the library.

    All or nothing: on any failure (Ctrl-C included) the staging folder goes.
    """
    staged = staging(name)
    try:
        write(staged)
        return publish(staged, name)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


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
