"""The web UI: server-rendered pages whose every action is a call of the HTTP API.

Pages are shells (Jinja2, autoescaped) with the data a first paint needs;
the browser then talks to /v1 like any client (static/app.js), so whatever
a page does, a script can do. Lists that change refresh through htmx
fragments rendered here from the same store the API reads.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from inhouse.errors import NotFoundError
from inhouse.recipe import Recipe
from inhouse.serve.openai import capabilities_object

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)
MAIN_FIELDS = ("method", "lora_r", "max_steps", "max_seq_length")  # shown first; the rest fold away
HIDDEN_FIELDS = ("base_model", "train_file", "train_files", "validation_file", "output_name", "epochs", "batch_size",
                 "learning_rate", "devices", "strategy")  # set from the job request itself


def page(request: Request, template: str, **context: Any) -> HTMLResponse:
    access = request.app.state.access
    return templates.TemplateResponse(request, template, {"csrf": access.csrf, "keyed": bool(access.key),
                                                          "nav": template.split(".")[0], **context})


@router.get("", include_in_schema=False)
async def home() -> RedirectResponse:
    return RedirectResponse("/ui/jobs", status_code=303)


@router.get("/login")
async def login_page(request: Request, next: str = "/ui/jobs", failed: int = 0) -> HTMLResponse:
    return page(request, "login.html", next=_local(next), failed=failed)


@router.post("/login")
async def login(request: Request, key: str = Form(...), next: str = Form("/ui/jobs")) -> RedirectResponse:
    access = request.app.state.access
    if not access.key or not secrets.compare_digest(key.encode(), access.key):
        return RedirectResponse(f"/ui/login?failed=1&next={_local(next)}", status_code=303)
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(access.COOKIE, access.session, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


def _local(target: str) -> str:
    """Only a path of this UI: never a redirect to another site."""
    return target if target.startswith("/ui") and "//" not in target and "\\" not in target else "/ui/jobs"


@router.get("/data")
async def data_page(request: Request) -> HTMLResponse:
    return page(request, "data.html")


@router.get("/fragments/{table}")
async def fragment(table: str, request: Request) -> HTMLResponse:
    """The newest files or jobs as a table, for htmx to swap in (the same rows the API lists)."""
    if table not in ("files", "jobs"):
        raise NotFoundError(f"No list named '{table}'.")
    rows, _ = request.app.state.store.page(table, None, 200)
    return templates.TemplateResponse(request, f"_{table}.html", {table: rows})


@router.get("/data/{file_id}")
async def file_page(file_id: str, request: Request) -> HTMLResponse:
    row = request.app.state.store.get("files", file_id, "file")
    return page(request, "file.html", file=row, models=await _models(request))


@router.get("/new")
async def new_page(request: Request, file: str | None = None) -> HTMLResponse:
    rows, _ = request.app.state.store.page("files", None, 200, "status = 'processed'")
    schema = Recipe.model_json_schema()["properties"]
    fields = [_field(name, schema[name]) for name in Recipe.model_fields if name not in HIDDEN_FIELDS]
    caps = await run_in_threadpool(capabilities_object, request.app.state.capabilities)  # as the API gives it
    return page(request, "new.html", files=rows, chosen=file, base=request.app.state.catalog.base_id,
                bases=caps["models"], model_paths=caps["model_paths"], gpus=caps["gpus"],
                main=[f for f in fields if f["name"] in MAIN_FIELDS],
                advanced=[f for f in fields if f["name"] not in MAIN_FIELDS])


def _field(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A form control from the recipe's own JSON schema: the field is defined once, in Recipe."""
    options = schema.get("anyOf", [schema])
    kinds = [o.get("type") for o in options if o.get("type") != "null"]
    enum = next((o["enum"] for o in options if "enum" in o), None)
    kind = "select" if enum or "boolean" in kinds else "number" if {"integer", "number"} & set(kinds) else "text"
    choices = enum or (["true", "false"] if "boolean" in kinds else None)
    return {"name": name, "kind": kind, "choices": choices, "step": "1" if "integer" in kinds else "any",
            "default": schema.get("default"), "description": schema.get("description", ""),
            "list": "array" in kinds}


@router.get("/jobs")
async def jobs_page(request: Request) -> HTMLResponse:
    return page(request, "jobs.html")


@router.get("/jobs/{job_id}")
async def job_page(job_id: str, request: Request) -> HTMLResponse:
    return page(request, "job.html", job=request.app.state.store.get("jobs", job_id, "fine-tuning job"))


@router.get("/models")
async def models_page(request: Request) -> HTMLResponse:
    from inhouse.serve.library import reports

    return page(request, "models.html", reports=await run_in_threadpool(reports))


@router.get("/models/compare")
async def compare_page(request: Request, a: str, b: str) -> HTMLResponse:
    from inhouse.adapters.diff import diff
    from inhouse.serve.library import adapter_lineage

    left, right = await run_in_threadpool(adapter_lineage, a), await run_in_threadpool(adapter_lineage, b)
    changes = diff(left, right)
    return page(request, "compare.html", a=left, b=right, diff=[(c.field, c.a, c.b) for c in changes.recipe],
                same=changes.same_recipe)


@router.get("/playground")
async def playground_page(request: Request) -> HTMLResponse:
    from inhouse.serve.knowledge import _all_stores

    return page(request, "playground.html", models=await _models(request), stores=await run_in_threadpool(_all_stores))


@router.get("/kb/{name}")
async def kb_page(name: str, request: Request, path: str | None = None, start: int = 0, end: int = 0
                  ) -> HTMLResponse:
    return page(request, "kb.html", name=name, path=path, start=start, end=end)


async def _models(request: Request) -> list[str]:
    catalog = request.app.state.catalog
    return [m.id for m in await run_in_threadpool(catalog.models)]
