"""OpenAI's wire format, in one module: request schemas, response objects, the error shape.

Requests are parsed strictly: an unknown parameter, or one we cannot honour
(n > 1, tools, logprobs, images), is a 400 naming the parameter, never a
silent ignore. Parameters that change nothing here at their neutral value
(presence_penalty 0, user, metadata...) are accepted.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from inhouse.errors import InvalidInputError
from inhouse.generation import Completion, GenerationConfig
from inhouse.rag.config import SearchConfig


class Unsupported(InvalidInputError):
    """A request parameter this server does not implement; `param` names it."""

    def __init__(self, param: str, why: str):
        super().__init__(f"'{param}' is not supported by this server: {why}")
        self.param = param


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class KnowledgeBase(_Strict):
    """The extension that makes a chat completion grounded: a knowledge base and how to search it."""

    name: str
    k: int = Field(5, ge=1, le=50)
    mode: Literal["hybrid", "vector", "bm25"] = "hybrid"
    min_similarity: float | None = None


NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {}, "top_logprobs": 0, "logprobs": False,
           "n": 1, "parallel_tool_calls": None, "best_of": 1, "echo": False, "suffix": None}


class _Sampling(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None

    def refuse_unsupported(self) -> None:
        for name, neutral in NEUTRAL.items():
            value = getattr(self, name, None)
            if value is not None and value != neutral:
                raise Unsupported(name, f"only {neutral!r} is implemented")

    def generation(self, max_tokens: int | None) -> GenerationConfig:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        values = {"max_new_tokens": max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                  "stop": stop or None, "seed": self.seed}
        return GenerationConfig(**{k: v for k, v in values.items() if v is not None})


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: Any = None
    tool_call_id: str | None = None
    function_call: Any = None
    refusal: str | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    reasoning_effort: str | None = None
    prediction: Any = None
    web_search_options: Any = None
    knowledge_base: str | KnowledgeBase | None = None

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        self.refuse_unsupported()
        for name in ("tools", "tool_choice", "functions", "function_call", "audio", "prediction", "web_search_options"):
            if getattr(self, name) is not None:
                raise Unsupported(name, "tool calling, audio and predicted outputs are not implemented")
        if self.modalities not in (None, ["text"]):
            raise Unsupported("modalities", "only text is implemented")
        if self.response_format not in (None, {"type": "text"}):
            raise Unsupported("response_format", "only {'type': 'text'} is implemented")
        if self.reasoning_effort is not None:
            raise Unsupported("reasoning_effort", "the served models have no reasoning setting")
        return self

    def chat(self) -> list[dict[str, str]]:
        """The messages as role/content text; images, audio and tool turns are refused by name."""
        return [_plain_message(i, m) for i, m in enumerate(self.messages)]

    def search(self) -> SearchConfig | None:
        kb = self.knowledge_base
        if kb is None:
            return None
        kb = KnowledgeBase(name=kb) if isinstance(kb, str) else kb
        extra = {"min_similarity": kb.min_similarity} if kb.min_similarity is not None else {}
        return SearchConfig(kb=kb.name, k=kb.k, mode=kb.mode, **extra)


def _plain_message(i: int, m: ChatMessage) -> dict[str, str]:
    if m.role in ("tool", "function") or m.tool_calls is not None or m.function_call is not None:
        raise Unsupported(f"messages[{i}]", "tool and function messages are not implemented")
    if isinstance(m.content, list):
        texts = []
        for j, part in enumerate(m.content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise Unsupported(f"messages[{i}].content[{j}]", f"content of type {part.get('type')!r} "
                                  "(only text is implemented)")
            texts.append(part["text"])
        content = "".join(texts)
    else:
        content = m.content or ""
    return {"role": "system" if m.role == "developer" else m.role, "content": content}


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    best_of: int | None = None
    echo: bool | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _check(self) -> CompletionRequest:
        self.refuse_unsupported()
        if isinstance(self.prompt, list) and not self.prompt:
            raise InvalidInputError("'prompt' is an empty list")
        return self

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class EmbeddingRequest(_Strict):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts or any(not t for t in texts):
            raise InvalidInputError("'input' must be a non-empty string or a list of non-empty strings")
        return texts


class VectorStoreSearchRequest(_Strict):
    query: str | list[str]
    max_num_results: int = Field(10, ge=1, le=50)
    filters: dict[str, Any] | None = None
    ranking_options: dict[str, Any] | None = None
    rewrite_query: bool = False

    @model_validator(mode="after")
    def _check(self) -> VectorStoreSearchRequest:
        if self.rewrite_query:
            raise Unsupported("rewrite_query", "queries are searched as given")
        return self

    def text(self) -> str:
        return self.query if isinstance(self.query, str) else " ".join(self.query)

    def where(self) -> dict[str, Any] | None:
        """OpenAI's comparison filters (eq, and of eq) as the store's {column: value} filter."""
        if not self.filters:
            return None
        parts = self.filters.get("filters") if self.filters.get("type") == "and" else [self.filters]
        where = {}
        for f in parts or []:
            if not isinstance(f, dict) or f.get("type") not in ("eq", "in") or "key" not in f:
                raise Unsupported("filters", "only 'eq' and 'in' comparisons, alone or joined by 'and'")
            where[f["key"]] = f.get("value")
        return where


# --- responses -------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(completions: list[Completion]) -> dict[str, int]:
    prompt = sum(c.prompt_tokens for c in completions)
    done = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def chat_completion(rid: str, model: str, done: Completion, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": now(), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text, "refusal": None},
                         "finish_reason": done.finish_reason, "logprobs": None}],
            "usage": usage([done]), **(extra or {})}


def chat_chunk(rid: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **(extra or {})}


def usage_chunk(rid: str, model: str, created: int, done: list[Completion], obj: str) -> dict[str, Any]:
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": usage(done)}


def text_completion(rid: str, model: str, done: list[Completion]) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": now(), "model": model,
            "choices": [{"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
                        for i, c in enumerate(done)], "usage": usage(done)}


def text_chunk(rid: str, model: str, created: int, index: int, text: str, finish: str | None = None) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": text, "finish_reason": finish, "logprobs": None}]}


def embeddings(model: str, vectors: np.ndarray, fmt: str, tokens: int) -> dict[str, Any]:
    def encode(v: np.ndarray) -> Any:
        return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() if fmt == "base64" else v.tolist()

    return {"object": "list", "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]}


def model_object(served: Any) -> dict[str, Any]:
    return {"id": served.id, "object": "model", "created": served.created, "owned_by": "inhouse",
            "root": served.parent or served.id, "parent": served.parent}


def page(data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": False,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """A message that quotes the request (a lone surrogate from a JSON escape, a file name that is not
    UTF-8) is escaped, so the answer can still be encoded as UTF-8."""
    message, param = (_encodable(t) if t is not None else None for t in (message, param))
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _encodable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# --- files and fine-tuning jobs -----------------------------------------------------------------


class CreateJobRequest(_Strict):
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    suffix: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None
    recipe: dict[str, Any] | None = None  # inhouse's extension: any recipe field but files and names
    devices: list[Annotated[int, Field(ge=0)]] | Literal["auto"] | None = Field(None, min_length=1)  # inhouse's: GPUs

    @model_validator(mode="after")
    def _check(self) -> CreateJobRequest:
        if self.integrations:
            raise Unsupported("integrations", "runs report to the job's events; experiment trackers are not wired here")
        return self


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
            "filename": row["filename"], "purpose": row["purpose"], "status": row["status"],
            "status_details": row["status_details"], "expires_at": None}


def job_object(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object": "fine_tuning.job", "created_at": row["created_at"], "model": row["model"],
            "organization_id": "local", "status": row["status"], "training_file": row["training_file"],
            "validation_file": row["validation_file"], "hyperparameters": row["hyperparameters"],
            "method": row["method"], "seed": row["seed"], "suffix": row["suffix"], "metadata": row["metadata"],
            "fine_tuned_model": row["fine_tuned_model"], "trained_tokens": row["trained_tokens"],
            "finished_at": row["finished_at"], "estimated_finish": row["estimated_finish"], "error": row["error"],
            "result_files": [], "integrations": []}


def capabilities_object(caps: Any) -> dict[str, Any]:
    """inhouse's extension: what a job may ask of this server (the New fine-tune page shows the same)."""
    return {"object": "fine_tuning.capabilities", "models": list(caps.bases()), "model_paths": caps.model_paths,
            "gpus": list(caps.gpus), "max_devices": caps.max_devices}


def event_object(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object": "fine_tuning.job.event", "created_at": row["created_at"],
            "level": row["level"], "message": row["message"], "type": row["type"], "data": row["data"]}


def checkpoint_object(row: dict[str, Any]) -> dict[str, Any]:
    metrics = {k: v for k, v in row["metrics"].items() if v is not None}
    return {"id": row["id"], "object": "fine_tuning.job.checkpoint", "created_at": row["created_at"],
            "fine_tuned_model_checkpoint": row["model"], "fine_tuning_job_id": row["job_id"],
            "step_number": row["step"], "metrics": metrics}


def cursor_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
