"""OpenAI's files API: training data uploaded once, validated, referred to by jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from inhouse.errors import InvalidInputError
from inhouse.jobs import files
from inhouse.serve import openai

router = APIRouter()


@router.post("/v1/files")
async def upload(request: Request) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=8)
    try:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidInputError("Missing required parameter: 'file' (a multipart file field).")
        if not isinstance(purpose, str):
            raise InvalidInputError("Missing required parameter: 'purpose'.")
        limit = int(request.app.state.config.max_file_mb * 2**20)
        row = await run_in_threadpool(files.save_upload, request.app.state.store, upload.file,
                                      upload.filename or "upload.jsonl", purpose, limit)
    finally:
        await form.close()
    return openai.file_object(row)


@router.get("/v1/files")
async def list_files(request: Request, after: str | None = None, limit: int = 100,
                     purpose: str | None = None) -> dict[str, Any]:
    where, args = ("purpose = ?", (purpose,)) if purpose else ("1=1", ())
    rows, more = request.app.state.store.page("files", after, max(1, min(limit, 10000)), where, args)
    return openai.cursor_page([openai.file_object(r) for r in rows], more)


@router.get("/v1/files/{file_id}")
async def get_file(file_id: str, request: Request) -> dict[str, Any]:
    return openai.file_object(request.app.state.store.get("files", file_id, "file"))


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request) -> FileResponse:
    row = request.app.state.store.get("files", file_id, "file")
    return FileResponse(files.blob(row["sha256"]), media_type="application/octet-stream", filename=row["filename"])


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
    await run_in_threadpool(files.delete, request.app.state.store, file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/v1/files/{file_id}/check")
async def check_file(file_id: str, request: Request, model: str | None = None) -> dict[str, Any]:
    """inhouse's extension: `inhouse data check` of an uploaded file, with the loss mask of a few examples
    rendered with `model`'s chat template (default: the server's base model)."""
    from inhouse.serve.inspect import inspect_file

    row = request.app.state.store.get("files", file_id, "file")
    catalog = request.app.state.catalog
    chat = await run_in_threadpool(catalog.chat_model, model or catalog.base_id)
    return await run_in_threadpool(inspect_file, files.blob(row["sha256"]), row["filename"], chat.tokenizer,
                                   chat.stop_ids)


@router.post("/v1/files/{file_id}/prepare")
async def prepare_file(file_id: str, request: Request) -> dict[str, Any]:
    """inhouse's extension: `inhouse data prepare` (normalise, dedup, PII, schema rules, split) of an uploaded
    file; the splits become new files, the report comes back."""
    from inhouse.serve.app import parse
    from inhouse.serve.preparing import PrepareRequest, prepare_upload

    body = await parse(request, PrepareRequest)
    return await run_in_threadpool(prepare_upload, request.app.state.store, file_id, body,
                                   request.app.state.catalog.base_ref)
