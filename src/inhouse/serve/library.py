"""inhouse's extension endpoints for the adapter library and evaluation reports (what the Models page shows).

Names are library names (plain, checked); nothing a client sends becomes a path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from inhouse import paths
from inhouse.adapters import registry
from inhouse.adapters.lineage import Lineage
from inhouse.errors import NotFoundError

router = APIRouter(prefix="/v1")
SUMMARY = ("name", "kind", "base_model", "metrics", "finished_at", "examples", "origin", "tags", "broken")


def plain(name: str, noun: str) -> str:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name.startswith("."):
        raise NotFoundError(f"No {noun} named '{name}'.")
    return name


def adapter_lineage(name: str) -> Lineage:
    folder = registry.library() / plain(name, "adapter")
    if not folder.is_dir():
        raise NotFoundError(f"No adapter named '{name}' in the library.")
    return registry.lineage(folder).model_copy(update={"name": name})


def summary(entry: registry.Entry) -> dict[str, Any]:
    shown = entry.lineage.dump() | {"tags": entry.lineage.tags, "broken": entry.broken}
    return {k: shown.get(k) for k in SUMMARY}


@router.get("/adapters")
async def list_adapters() -> dict[str, Any]:
    found = await run_in_threadpool(registry.list_adapters)
    return {"object": "list", "data": [summary(e) for e in found]}


@router.get("/adapters/{name}")
async def get_adapter(name: str) -> dict[str, Any]:
    return (await run_in_threadpool(adapter_lineage, name)).dump()


@router.delete("/adapters/{name}")
async def delete_adapter(name: str) -> dict[str, Any]:
    """Remove an entry, refused (409) while a fine-tuning job or a server (this one too) uses it."""
    from inhouse.adapters.remove import remove

    await run_in_threadpool(remove, plain(name, "adapter"))
    return {"id": name, "object": "model", "deleted": True}


@router.post("/adapters/{name}/merge")
async def merge_adapter(name: str) -> dict[str, Any]:
    """Merge into the base (reloaded in bf16); the merged model joins the library as `<name>-merged`."""
    from inhouse.adapters.merge import merge

    adapter_lineage(name)
    path = await run_in_threadpool(merge, name)
    return {"name": path.name, "path": str(path)}


def reports() -> list[dict[str, Any]]:
    root = paths.evals()
    found = []
    for folder in sorted(root.iterdir(), reverse=True) if root.is_dir() else []:
        try:
            report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append({"name": folder.name, "adapter": report.get("adapter"), "n": report.get("n"),
                      "base": report.get("base"), "tuned": report.get("tuned")})
    return found


@router.get("/evals")
async def list_reports() -> dict[str, Any]:
    return {"object": "list", "data": await run_in_threadpool(reports)}


@router.get("/evals/{name}/report.html")
async def report_html(name: str) -> FileResponse:
    path = paths.evals() / plain(name, "report") / "report.html"
    if not Path(path).is_file():
        raise NotFoundError(f"No evaluation report named '{name}'.")
    return FileResponse(path, media_type="text/html")
