"""`inhouse export`: one adapter (or several, for vLLM) to a folder an engine runs, written atomically.

The folder always holds `export.json` (what was written, the stop tokens, the commands to run it) and
the export is recorded in the adapter's lineage. GGUF files are written into the staging folder, so
a failure or a cancel leaves nothing behind under --out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inhouse import atomic, outputs
from inhouse.adapters import registry
from inhouse.adapters.export.config import ExportConfig
from inhouse.errors import InvalidInputError
from inhouse.events import Events

MANIFEST = "export.json"


@dataclass
class ExportResult:
    path: Path
    target: str
    files: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"path": str(self.path)}


def check_refs(refs: list[str], to: str) -> None:
    if not refs:
        raise InvalidInputError("name at least one adapter to export")
    if len(refs) > 1 and to != "vllm":
        raise InvalidInputError(f"--to {to} exports one adapter; several adapters of one base go --to vllm")


def export(refs: list[str], config: ExportConfig, events: Events | None = None) -> ExportResult:
    """Export `refs` (library names or adapter folders) as `config` says; see docs/export.md."""
    events = events or Events()
    check_refs(refs, config.to)
    paths = [registry.resolve(r) for r in refs]
    target = outputs.claim(config.out, f"{config.to} export", paths, config.overwrite)
    result = ExportResult(target.path, config.to)
    write = _writer(paths, config, result, events)
    target.write(lambda folder: _fill(folder, write, result))
    for path in paths:
        _record(path, result, config.quant)
    return result


def _fill(folder: Path, write, result: ExportResult) -> None:
    write(folder)
    result.files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    atomic.write_json(folder / MANIFEST, result.as_dict())


def _writer(paths: list[Path], config: ExportConfig, result: ExportResult, events: Events):
    from inhouse.adapters.export import targets

    if config.to == "vllm":
        return lambda folder: targets.write_vllm(folder, paths, result)
    if config.to == "merged":
        return lambda folder: targets.write_merged(folder, paths[0], result, events)
    from inhouse.adapters.export.quantize import require_quantiser

    require_quantiser(config.gguf_quant)
    write = targets.write_gguf if config.to == "gguf" else targets.write_ollama
    return lambda folder: write(folder, paths[0], config, result, events)


def _record(path: Path, result: ExportResult, quant: str | None) -> None:
    """In the adapter's lineage; a folder inhouse did not make (no inhouse.json) is told so, not changed."""
    if not (path / registry.LINEAGE).is_file():
        result.notes.append(f"{path} has no inhouse.json: this export is not recorded there")
        return
    entry = {"target": result.target, "quant": quant, "path": str(result.path), "files": result.files,
             "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    registry.record(path, "exports", entry)


