"""OpenAI's fine-tuning jobs API over the durable queue (`inhouse.jobs`)."""

from __future__ import annotations

from typing import Any

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from inhouse.jobs import spec
from inhouse.jobs.store import ACTIVE
from inhouse.serve import openai
from inhouse.serve.app import parse

router = APIRouter(prefix="/v1/fine_tuning")
POLL_S = 0.5


@router.post("/jobs")
async def create(request: Request) -> dict[str, Any]:
    body = await parse(request, openai.CreateJobRequest)
    store, caps = request.app.state.store, request.app.state.capabilities
    return openai.job_object(await run_in_threadpool(spec.create_job, store, body, caps))


@router.get("/capabilities")
async def capabilities(request: Request) -> dict[str, Any]:
    """inhouse's extension: the bases a job may name, whether a typed folder path is allowed, and the GPUs
    it may ask for; the New fine-tune page is drawn from the same object."""
    return await run_in_threadpool(openai.capabilities_object, request.app.state.capabilities)


@router.get("/jobs")
async def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict[str, Any]:
    rows, more = request.app.state.store.page("jobs", after, max(1, min(limit, 100)))
    return openai.cursor_page([openai.job_object(r) for r in rows], more)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    return openai.job_object(request.app.state.store.get("jobs", job_id, "fine-tuning job"))


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: str, request: Request) -> dict[str, Any]:
    return openai.job_object(spec.cancel(request.app.state.store, job_id))


@router.get("/jobs/{job_id}/events")
async def events(job_id: str, request: Request, after: str | None = None, limit: int = 20) -> dict[str, Any]:
    store = request.app.state.store
    store.get("jobs", job_id, "fine-tuning job")
    rows, more = store.events(job_id, after, max(1, min(limit, 1000)))
    return openai.cursor_page([openai.event_object(r) for r in rows], more)


@router.get("/jobs/{job_id}/checkpoints")
async def checkpoints(job_id: str, request: Request, after: str | None = None, limit: int = 10) -> dict[str, Any]:
    store = request.app.state.store
    store.get("jobs", job_id, "fine-tuning job")
    rows, more = store.page("checkpoints", after, max(1, min(limit, 100)), "job_id = ?", (job_id,))
    return openai.cursor_page([openai.checkpoint_object(r) for r in rows], more)


@router.get("/jobs/{job_id}/events/stream")
async def stream_events(job_id: str, request: Request, after_seq: int = 0) -> StreamingResponse:
    """inhouse's extension: a job's events as server-sent events, oldest first, from `after_seq` on; then the
    job object whenever its status changes; the stream ends when the job does. A page that reloads
    reads the events it has missed from the store and follows on: nothing is lost."""
    store = request.app.state.store
    store.get("jobs", job_id, "fine-tuning job")

    async def follow():
        seq, status = after_seq, None
        while not await request.is_disconnected():
            rows = await run_in_threadpool(store.select, "select * from events where job_id = ? and seq > ? "
                                           "order by seq limit 500", (job_id, seq))
            for row in rows:
                seq = row["seq"]
                yield f"event: job_event\ndata: {json.dumps({**openai.event_object(row), 'seq': seq})}\n\n"
            job = await run_in_threadpool(store.get, "jobs", job_id, "fine-tuning job")
            if job["status"] != status or rows:
                status = job["status"]
                yield f"event: job\ndata: {json.dumps(openai.job_object(job))}\n\n"
            if status not in ACTIVE and not rows:
                return
            await asyncio.sleep(POLL_S)

    return StreamingResponse(follow(), media_type="text/event-stream", headers={"cache-control": "no-cache"})
