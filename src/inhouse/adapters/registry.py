"""The adapter library under INHOUSE_HOME (default ~/.inhouse).

Layout: `adapters/<name>/` is a standard PEFT adapter folder (or, for full
fine-tunes, a Hugging Face model folder) plus `inhouse.json` with lineage.
Results are built in a staging folder and renamed into place (`inhouse.atomic`),
so a crash or Ctrl-C never leaves a half-written adapter under a real name.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from inhouse import atomic, outputs, paths
from inhouse.adapters.lineage import RECORDS, Lineage
from inhouse.errors import ConflictError, InhouseError, InvalidInputError, NotFoundError, did_you_mean

LINEAGE = "inhouse.json"
LOCK = ".inhouse.lock"  # beside inhouse.json: inhouse.json itself is replaced by each write, so it cannot hold a lock
MAX_TAG = 64


def library() -> Path:
    return paths.adapters()


def save_atomically(name: str, write: Callable[[Path], None]) -> Path:
    """Build an adapter folder with `write(folder)`; it appears in the library all at once."""
    try:
        return atomic.write_folder(library() / name, write)
    except FileExistsError:
        raise ConflictError(f"adapter {name!r} already exists in {library()}; choose another output_name") from None


def resolve(ref: str | Path) -> Path:
    """An adapter by library name or by path."""
    for candidate in (Path(ref).expanduser(), library() / ref):
        if (candidate / LINEAGE).is_file() or (candidate / "adapter_config.json").is_file():
            return candidate
    raise NotFoundError(f"no adapter {str(ref)!r}{did_you_mean(str(ref), names())} (not a folder, not in "
                        f"{library()}; available: {', '.join(names()[:10]) or 'none yet'})")


def names() -> list[str]:
    """Library names, newest first, without reading any lineage (fast, for hints)."""
    if not library().is_dir():
        return []
    found = [p for p in library().iterdir() if p.is_dir() and not p.name.startswith(".")]
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def entry_folder(name: str) -> Path:
    """The library folder of `name`: a plain name only, never a path (what may be tagged or removed)."""
    folder = library() / name
    plain = name and name not in (".", "..") and not any(c in name for c in "/\\\0") and not name.startswith(".")
    if not plain or not folder.is_dir():
        raise NotFoundError(f"no adapter {name!r} in {library()}{did_you_mean(name, names())}")
    return folder


class BrokenLineage(InhouseError):
    """An adapter folder whose inhouse.json cannot be read."""


def lineage(path: Path) -> Lineage:
    """The folder's lineage; an empty one for a folder without inhouse.json (made by another tool)."""
    file = path / LINEAGE
    if not file.is_file():
        return Lineage()
    try:
        return Lineage.model_validate(json.loads(file.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        raise BrokenLineage(f"{file}: cannot be read ({_reason(e)}); restore it or remove the folder") from None


def _reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(map(str, first["loc"]))
        return f"{where}: {first['msg']}" if where else "not a JSON object"
    return getattr(error, "strerror", None) or " ".join(str(error).split())[:120]


@dataclass(frozen=True)
class Entry:
    """One folder of the library: its lineage, or why that cannot be read (`broken`)."""

    name: str
    path: Path
    lineage: Lineage
    broken: str | None = None


def list_adapters() -> list[Entry]:
    """Every entry of the library, newest first; an entry whose lineage cannot be read is listed
    with `broken` (the reason) instead of failing the whole listing."""
    if not library().is_dir():
        return []
    found = [entry(p) for p in sorted(library().iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda e: str(e.lineage.finished_at or ""), reverse=True)


def entry(path: Path) -> Entry:
    try:
        return Entry(path.name, path, lineage(path).model_copy(update={"name": path.name}))
    except BrokenLineage as e:
        return Entry(path.name, path, Lineage(name=path.name), str(e))


# --- writing --------------------------------------------------------------------------------


def publish(name: str, write: Callable[[Path], None], lineage: Lineage, target: outputs.Output | None = None) -> Path:
    """The one way an entry is published (a trained adapter, a job's checkpoint, a merged model): `write(folder)`
    fills a staging folder with the weights, its inhouse.json and model card join them, and the folder
    appears under its name all at once, in the library or at `target` (an --out folder claimed earlier)."""
    where = target.path if target else library() / name

    def build(folder: Path) -> None:
        write(folder)
        write_lineage(folder, lineage, where)

    return target.write(build) if target else save_atomically(name, build)


def write_lineage(folder: Path, lineage: Lineage, where: Path) -> None:
    """inhouse.json and the README model card of `folder` (which is, or will be renamed to, `where`)."""
    from inhouse.adapters.card import write_card

    atomic.write_json(folder / LINEAGE, lineage.dump())
    write_card(folder, lineage.dump(), where)


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the folder's lock: read-modify-writes of its inhouse.json by two processes take turns."""
    with open(folder / LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def update(ref: str | Path, change: Callable[[Lineage], Lineage]) -> Lineage:
    """Rewrite an entry's lineage (and its card) with `change`, atomically and under its lock."""
    folder = resolve(ref)
    if not (folder / LINEAGE).is_file():
        raise NotFoundError(f"{folder} has no {LINEAGE} (it was not made by inhouse); nothing was recorded")
    with locked(folder):
        new = change(lineage(folder))
        write_lineage(folder, new, folder)
    return new


def record(ref: str | Path, field: str, entry: dict[str, Any]) -> Lineage:
    """Append `entry` to the `evaluations` or `exports` of an entry (by library name or folder): what was
    made from it after it was published."""
    if field not in RECORDS:
        raise InvalidInputError(f"cannot record {field!r}: an adapter records {' and '.join(RECORDS)}")
    return update(ref, lambda old: old.model_copy(update={field: [*getattr(old, field), entry]}))


def tag(ref: str | Path, label: str, remove: bool = False) -> Lineage:
    """Add a tag (a label shown in listings and usable to filter them), or remove one."""
    label = label.strip()
    if not label or len(label) > MAX_TAG or any(c.isspace() or c == "," for c in label):
        raise InvalidInputError(f"tag {label!r}: use 1 to {MAX_TAG} characters without spaces or commas")

    def change(old: Lineage) -> Lineage:
        if remove and label not in old.tags:
            raise NotFoundError(f"{old.name or Path(ref).name!r} has no tag {label!r} "
                                f"(its tags: {', '.join(old.tags) or 'none'})")
        tags = [t for t in old.tags if t != label] + ([] if remove else [label])
        return old.model_copy(update={"tags": tags})

    return update(ref, change)
