"""OpenAI's fine-tuning jobs API over the durable queue (`inhouse.jobs`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from inhouse.jobs import spec
from inhouse.serve import openai
from inhouse.serve.app import parse

router = APIRouter(prefix="/v1/fine_tuning/jobs")


@router.post("")
async def create(request: Request) -> dict[str, Any]:
    body = await parse(request, openai.CreateJobRequest)
    catalog, store = request.app.state.catalog, request.app.state.store
    row = await run_in_threadpool(spec.create_job, store, body, catalog.base_id, catalog.base_ref)
    return openai.job_object(row)


@router.get("")
async def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict[str, Any]:
    rows, more = request.app.state.store.page("jobs", after, max(1, min(limit, 100)))
    return openai.cursor_page([openai.job_object(r) for r in rows], more)


@router.get("/{job_id}")
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    return openai.job_object(request.app.state.store.get("jobs", job_id, "fine-tuning job"))


@router.post("/{job_id}/cancel")
async def cancel(job_id: str, request: Request) -> dict[str, Any]:
    return openai.job_object(spec.cancel(request.app.state.store, job_id))


@router.get("/{job_id}/events")
async def events(job_id: str, request: Request, after: str | None = None, limit: int = 20) -> dict[str, Any]:
    store = request.app.state.store
    store.get("jobs", job_id, "fine-tuning job")
    rows, more = store.events(job_id, after, max(1, min(limit, 1000)))
    return openai.cursor_page([openai.event_object(r) for r in rows], more)


@router.get("/{job_id}/checkpoints")
async def checkpoints(job_id: str, request: Request, after: str | None = None, limit: int = 10) -> dict[str, Any]:
    store = request.app.state.store
    store.get("jobs", job_id, "fine-tuning job")
    rows, more = store.page("checkpoints", after, max(1, min(limit, 100)), "job_id = ?", (job_id,))
    return openai.cursor_page([openai.checkpoint_object(r) for r in rows], more)
