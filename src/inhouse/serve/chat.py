"""Models, chat completions and text completions: the generating endpoints.

Every request is checked (model, parameters, template, context length) before
it joins the engine's queue, so a bad request fails at once with a 400/404,
never halfway through a stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from inhouse.errors import InvalidInputError
from inhouse.generation import Completion, GenerationConfig
from inhouse.serve import openai
from inhouse.serve.app import parse
from inhouse.serve.engine import Pending

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    catalog = request.app.state.catalog
    return {"object": "list", "data": [openai.model_object(m) for m in await run_in_threadpool(catalog.models)]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    return openai.model_object(await run_in_threadpool(request.app.state.catalog.find, model_id))


def max_tokens(request: Request, prompt_ids: list[int], asked: int | None) -> int:
    """The answer's length limit: as asked, else the server default; never past the model's context."""
    context = request.app.state.engine.info.get("context") or 2**31
    room = context - len(prompt_ids)
    if asked is not None and asked > room:
        raise InvalidInputError(f"This model's maximum context length is {context} tokens. However, you requested "
                                f"{len(prompt_ids) + asked} tokens ({len(prompt_ids)} in the messages, {asked} in the "
                                "completion). Please reduce the length of the messages or completion.")
    if room < 1:
        raise InvalidInputError(f"The prompt is {len(prompt_ids)} tokens, this model's context is {context}.")
    return asked if asked is not None else min(request.app.state.config.default_max_tokens, room)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    body = await parse(request, openai.ChatCompletionRequest)
    catalog, engine = request.app.state.catalog, request.app.state.engine
    chat = await run_in_threadpool(catalog.chat_model, body.model)
    messages, grounding = body.chat(), None
    if (search := body.search()) is not None:
        grounding = await run_in_threadpool(_ground, messages, search)
        if grounding.messages is None:
            return _refused(body, grounding)
        messages = grounding.messages
    prompt_ids = chat.prompt_ids(messages, GenerationConfig())  # HTTP requests carry their system message
    config = body.generation(max_tokens(request, prompt_ids, body.max_completion_tokens or body.max_tokens))
    pending = engine.submit(chat, prompt_ids, config, bool(body.stream), catalog.folder(body.model))
    rid = openai.new_id("chatcmpl")
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(_chat_stream(rid, body.model, pending, include, grounding))
    done = await pending.result
    return openai.chat_completion(rid, body.model, done, _grounded(done.text, grounding))


def _ground(messages: list[dict[str, str]], search: Any) -> Any:
    """Retrieval for the last user message, exactly as `inhouse ask` does it."""
    from inhouse.rag.answer import ground

    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if not question.strip():
        raise InvalidInputError("a grounded answer needs a user message with the question")
    return ground(question, search)


def _grounded(text: str, grounding: Any) -> dict[str, Any] | None:
    """The extension fields of a grounded answer: citations quoting exact spans, and whether it refused."""
    if grounding is None:
        return None
    from inhouse.rag.answer import finish

    answer = finish(text, grounding)
    return {"citations": [asdict(c) for c in answer.citations], "refused": answer.refused,
            "similarity": answer.similarity}


def _refused(body: Any, grounding: Any) -> Any:
    """Nothing in the knowledge base is close to the question: the refusal, without a model call."""
    from inhouse.rag.answer import REFUSAL

    done = Completion(REFUSAL, 0, 0, "stop")
    rid = openai.new_id("chatcmpl")
    if not body.stream:
        return openai.chat_completion(rid, body.model, done, _grounded("", grounding))

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        created = openai.now()
        yield openai.chat_chunk(rid, body.model, created, {"role": "assistant", "content": REFUSAL})
        yield openai.chat_chunk(rid, body.model, created, {}, "stop", _grounded("", grounding))

    return _sse(chunks())


async def _chat_stream(rid: str, model: str, pending: Pending, include_usage: bool,
                       grounding: Any) -> AsyncIterator[dict[str, Any]]:
    created = openai.now()
    yield openai.chat_chunk(rid, model, created, {"role": "assistant", "content": ""})
    async for piece in _pieces(pending):
        yield openai.chat_chunk(rid, model, created, {"content": piece})
    done = await pending.result
    yield openai.chat_chunk(rid, model, created, {}, done.finish_reason, _grounded(done.text, grounding))
    if include_usage:
        yield openai.usage_chunk(rid, model, created, [done], "chat.completion.chunk")


async def _pieces(pending: Pending) -> AsyncIterator[str]:
    """The text pieces of one request; a client that goes away cancels its row of the batch."""
    try:
        while (piece := await pending.pieces.get()) is not None:
            yield piece
    finally:
        pending.cancel()


@router.post("/v1/completions")
async def completions(request: Request) -> Any:
    body = await parse(request, openai.CompletionRequest)
    catalog = request.app.state.catalog
    chat = await run_in_threadpool(catalog.chat_model, body.model)
    prompts = [chat.tokenizer(p, add_special_tokens=False)["input_ids"] for p in body.prompts()]
    if any(not ids for ids in prompts):
        raise InvalidInputError("'prompt' must not be empty")
    config = body.generation(min(max_tokens(request, ids, body.max_tokens) for ids in prompts))
    engine, rid, folder = request.app.state.engine, openai.new_id("cmpl"), catalog.folder(body.model)
    pending = [engine.submit(chat, ids, config, bool(body.stream), folder) for ids in prompts]
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(_text_stream(rid, body.model, pending, include))
    return openai.text_completion(rid, body.model, [await p.result for p in pending])


async def _text_stream(rid: str, model: str, pending: list[Pending], include_usage: bool
                       ) -> AsyncIterator[dict[str, Any]]:
    created = openai.now()
    for index, p in enumerate(pending):  # several prompts stream one after the other
        async for piece in _pieces(p):
            yield openai.text_chunk(rid, model, created, index, piece)
        yield openai.text_chunk(rid, model, created, index, "", (await p.result).finish_reason)
    if include_usage:
        yield openai.usage_chunk(rid, model, created, [await p.result for p in pending], "text_completion")


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        except Exception as e:  # noqa: BLE001 - the status is sent already: report in the stream
            yield f"data: {json.dumps(openai.error_body(str(e), kind='server_error'))}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
