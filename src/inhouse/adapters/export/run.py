"""`inhouse export`: one adapter (or several, for vLLM) to a folder an engine runs, written atomically.

The folder always holds `export.json` (what was written, the stop tokens, the commands to run it) and
the export is recorded in the adapter's lineage. GGUF files are written into the staging folder, so
a failure or a cancel leaves nothing behind under --out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inhouse import atomic, outputs
from inhouse.adapters import registry
from inhouse.errors import InvalidInputError
from inhouse.events import Events, Stopped

TARGETS = ("merged", "gguf", "ollama", "vllm")
QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_k_m")
MANIFEST = "export.json"


@dataclass
class ExportResult:
    path: Path
    target: str
    files: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "target": self.target, "files": self.files, "commands": self.commands,
                "notes": self.notes}


def check_request(refs: list[str], to: str, quant: str | None) -> None:
    if to not in TARGETS:
        raise InvalidInputError(f"--to {to!r} is not an export target; choose one of {', '.join(TARGETS)}")
    if quant is not None and quant not in QUANTS:
        raise InvalidInputError(f"--quant {quant!r} is not supported; choose one of {', '.join(QUANTS)}")
    if quant is not None and to in ("merged", "vllm"):
        raise InvalidInputError(f"--quant applies to GGUF exports (gguf, ollama), not --to {to}")
    if not refs:
        raise InvalidInputError("name at least one adapter to export")
    if len(refs) > 1 and to != "vllm":
        raise InvalidInputError(f"--to {to} exports one adapter; several adapters of one base go --to vllm")


def export(refs: list[str], to: str, out: Path, quant: str | None = None, *, overwrite: bool = False,
           with_base: bool = False, events: Events | None = None) -> ExportResult:
    """Export `refs` (library names or adapter folders) to `out`; see docs/export.md."""
    events = events or Events()
    check_request(refs, to, quant)
    paths = [registry.resolve(r) for r in refs]
    target = outputs.claim(out, f"{to} export", paths, overwrite)
    result = ExportResult(target.path, to)
    write = _writer(to, paths, quant, with_base, result, events)
    target.write(lambda folder: _fill(folder, write, result))
    for path in paths:
        _record(path, result, quant)
    return result


def _fill(folder: Path, write, result: ExportResult) -> None:
    write(folder)
    result.files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    atomic.write_json(folder / MANIFEST, result.as_dict() | {"path": str(result.path)})


def _writer(to: str, paths: list[Path], quant: str | None, with_base: bool, result: ExportResult, events: Events):
    if to == "vllm":
        from inhouse.adapters.export.targets import write_vllm
        return lambda folder: write_vllm(folder, paths, result)
    from inhouse.adapters.export import targets
    if to == "merged":
        return lambda folder: targets.write_merged(folder, paths[0], result, events)
    from inhouse.adapters.export.quantize import require_quantiser
    require_quantiser(quant or targets.DEFAULT_QUANT)
    write = targets.write_gguf if to == "gguf" else targets.write_ollama
    return lambda folder: write(folder, paths[0], quant or targets.DEFAULT_QUANT, with_base, result, events)


def _record(path: Path, result: ExportResult, quant: str | None) -> None:
    entry = {"target": result.target, "quant": quant, "path": str(result.path), "files": result.files,
             "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    registry.record(path, "exports", entry)


def cancelled(events: Events) -> None:
    if events.should_stop():
        raise Stopped("export cancelled; nothing was written")
