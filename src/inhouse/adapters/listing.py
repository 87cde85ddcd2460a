"""What `inhouse adapters list` and `show` tell about the library: typed rows, and their text.

A merged model reports the training of the adapter it came from (`Lineage.trained`): its data,
its validation loss. Sizes are measured on disk, files only (what removing the entry frees).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from inhouse.adapters import registry
from inhouse.adapters.lineage import Lineage

LOSS_KEYS = ("validation_loss", "valid_loss")  # a trained entry's, a job checkpoint's
COLUMNS = ("name", "base", "method", "data", "val loss", "size", "created (UTC)", "tags")


class Summary(BaseModel):
    """One row of the listing (`--json` prints a list of these)."""

    name: str
    path: str
    kind: str | None = None
    base_model: str | None = None
    data: list[str] = []
    validation_loss: float | None = None
    size_bytes: int = 0
    created: str | None = None
    tags: list[str] = []
    broken: str | None = None


def size_on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink())


def validation_loss(lineage: Lineage) -> float | None:
    metrics = lineage.trained().metrics or {}
    found = next((metrics[k] for k in LOSS_KEYS if isinstance(metrics.get(k), (int, float))), None)
    return None if isinstance(found, bool) else found


def data_names(lineage: Lineage) -> list[str]:
    return [Path(str(d["path"])).name for d in lineage.trained().data or [] if isinstance(d, dict) and d.get("path")]


def summarize(entry: registry.Entry) -> Summary:
    info = entry.lineage
    return Summary(name=entry.name, path=str(entry.path), kind=info.kind, base_model=info.base_model,
                   data=data_names(info), validation_loss=validation_loss(info), size_bytes=size_on_disk(entry.path),
                   created=info.finished_at, tags=info.tags, broken=entry.broken)


def summaries(tag: str | None = None) -> list[Summary]:
    """The library, newest first; with `tag`, only the entries carrying it."""
    return [summarize(e) for e in registry.list_adapters() if tag is None or tag in e.lineage.tags]


def details(ref: str) -> dict[str, Any]:
    """Everything recorded about one entry, by library name or folder (`show --json`): its lineage,
    where it is and its size."""
    folder = registry.resolve(ref)
    lineage = named(ref)
    return lineage.dump() | {"name": lineage.name, "path": str(folder), "size_bytes": size_on_disk(folder)}


def named(ref: str) -> Lineage:
    """An entry's lineage by library name or folder; a library entry is named by its folder."""
    folder = registry.resolve(ref)
    lineage = registry.lineage(folder)
    in_library = folder.resolve().parent == registry.library().resolve()
    return lineage.model_copy(update={"name": folder.name if in_library else lineage.name or folder.name})


# --- text ---------------------------------------------------------------------------------


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns by GB


def short_base(base: str | None) -> str:
    """A base folder by its name (the full path is in `show`); a hub id or builtin as it is."""
    return Path(base).name if base and Path(base).is_absolute() else base or "?"


def when(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def clip(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def row(s: Summary) -> tuple[str, ...]:
    loss = "-" if s.validation_loss is None else f"{s.validation_loss:.4f}"
    return (s.name, clip(short_base(s.base_model), 32), s.kind or "?", clip(", ".join(s.data) or "-"), loss,
            human_size(s.size_bytes), when(s.created), ", ".join(s.tags) or "-")


def format_list(rows: list[Summary], where: Path) -> str:
    """An aligned table; an entry whose lineage cannot be read shows why instead of its columns."""
    table = [COLUMNS] + [row(s) for s in rows if not s.broken]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    lines = [f"{len(rows)} adapter(s) in {where}"]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table] if len(table) > 1 else []
    return "\n".join(lines + [f"{s.name}  BROKEN {s.broken}" for s in rows if s.broken])


def format_show(info: dict[str, Any]) -> str:
    """`details` as text: facts first, then data, recipe, metrics and what was made from the entry."""
    lineage = Lineage.model_validate(info)
    trained = lineage.trained()
    facts = [("name", info["name"]), ("path", info["path"]), ("kind", lineage.kind), ("base", lineage.base_model),
             ("merged from", lineage.merged_from and f"{lineage.merged_from} (in {lineage.merged_dtype or '?'})"),
             ("step", lineage.step), ("started", trained.started_at), ("finished", lineage.finished_at),
             ("size", human_size(info["size_bytes"])), ("tags", ", ".join(lineage.tags)),
             ("origin", ", ".join(f"{k} {v}" for k, v in (lineage.origin or {}).items() if v))]
    lines = [f"{k:<12} {v}" for k, v in facts if v not in (None, "")]
    lines += _data(trained) + _section("recipe", trained.recipe) + _metrics(trained)
    lines += _section("versions", lineage.versions)
    for key in ("evaluations", "exports"):
        lines += _section(key, getattr(lineage, key))
    return "\n".join(lines + _section("also recorded", _extra(lineage)))


def _data(lineage: Lineage) -> list[str]:
    lines = []
    for d in lineage.data or []:
        counts = ", ".join(f"{n} {k}" for k, n in (d.get("examples") or {}).items())
        lines.append(f"  {d.get('role', 'file'):<10} {d.get('path')}  sha256 {d.get('sha256')}"
                     + (f"  ({counts})" if counts else ""))
    examples = ", ".join(f"{n} {k}" for k, n in (lineage.examples or {}).items())
    return (["", "data"] + lines if lines else []) + ([f"  examples used: {examples}"] if examples else [])


def _metrics(lineage: Lineage) -> list[str]:
    from inhouse.adapters.card import loss_lines

    metrics = {k: v for k, v in (lineage.metrics or {}).items() if v is not None}
    width = max(map(len, metrics), default=0)
    lines = [f"  {k:<{width}}  {v:.6g}" if isinstance(v, float) else f"  {k:<{width}}  {v}" for k, v in metrics.items()]
    history = [f"  {line.removeprefix('- ')}" for line in loss_lines(lineage.history)]
    return ["", "metrics", *lines, *history] if lines or history else []


def _section(title: str, value: Any) -> list[str]:
    """A titled YAML block (recipes, versions, records: nested data, shown as it is stored)."""
    if not value:
        return []
    text = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return ["", title, *(f"  {line}" for line in text.rstrip("\n").splitlines())]


def _extra(lineage: Lineage) -> dict[str, Any]:
    """Keys the typed lineage does not name (written by other versions), and the speed plan."""
    shown = {"path", "size_bytes"}
    return {k: v for k, v in (lineage.model_extra or {}).items() if k not in shown} | \
        ({"speed": lineage.speed} if lineage.speed else {})

