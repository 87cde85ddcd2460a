"""The FastAPI application: load once at start-up, route, map errors to OpenAI's shape.

Routes live in `serve.chat` (chat and text completions, models) and
`serve.knowledge` (embeddings, vector stores); this module wires them with the
model pool, the generating engine, authentication and limits.
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from inhouse.adapters.catalog import Catalog
from inhouse.jobs.runner import Runner, gpu_slots
from inhouse.jobs.spec import Capabilities
from inhouse.jobs.store import Store
from inhouse.errors import ConflictError, InhouseError, InvalidInputError, NotFoundError
from inhouse.serve.config import ServeConfig
from inhouse.serve.engine import Engine
from inhouse.serve.worker import WorkerSpec
from inhouse.serve.openai import Unsupported, error_body
from inhouse.serve.security import Access, AccessMiddleware, BodyLimitMiddleware, model_paths_allowed

T = TypeVar("T", bound=BaseModel)
log = logging.getLogger("inhouse.serve")
STATUS = {NotFoundError: 404, ConflictError: 409, InvalidInputError: 400}


@dataclass
class Services:
    """What the routes use: the catalog, the generating process, the job store and its runner."""

    catalog: Catalog
    engine: Engine
    store: Store
    runner: Runner | None
    gpus: tuple[int, ...] = ()

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        self.engine.stop()


def start(config: ServeConfig, loader=None, tokenizer=None) -> Services:
    """The generating process (model loaded), the catalog of what it serves, and the job queue."""
    spec = WorkerSpec(config.model, config.max_adapters, config.max_batch, config.batch_window_ms / 1000, loader)
    engine = Engine(spec)
    try:
        catalog = Catalog(config.model, config.served_model_name, tokenizer, engine.info["eos"])
        store = Store()
        slots = gpu_slots()
        runner = Runner(store, slots) if config.jobs else None
    except BaseException:
        engine.stop()
        raise
    if runner is not None:
        runner.start()
    return Services(catalog, engine, store, runner, tuple(int(s) for s in slots if s is not None))


def capabilities(config: ServeConfig, running: Services) -> Capabilities:
    """What a job may ask of this server, fixed at start-up (the bases are listed afresh on each call)."""
    typed = model_paths_allowed(config.allow_model_paths, config.host, config.api_key)
    return Capabilities(running.catalog.base_id, running.catalog.base_ref, typed, running.gpus)


def create_app(config: ServeConfig, services: Services | None = None) -> FastAPI:
    """The app; the model is loaded at start-up unless `services` are given (see `start`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        running = services or start(config)
        app.state.catalog, app.state.engine, app.state.store = running.catalog, running.engine, running.store
        app.state.capabilities = capabilities(config, running)
        yield
        running.stop()

    app = FastAPI(title="inhouse", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.config = config
    _routes(app)
    _errors(app)
    app.add_middleware(BodyLimitMiddleware, limit=int(config.max_body_mb * 2**20),
                       upload_limit=int(config.max_file_mb * 2**20))
    app.state.access = Access(config.api_key)
    app.add_middleware(AccessMiddleware, access=app.state.access)
    if config.cors_origin:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origin, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["authorization", "content-type"])
    return app


def _routes(app: FastAPI) -> None:
    from fastapi.staticfiles import StaticFiles

    from inhouse.serve import chat, files, jobs, knowledge, library
    from inhouse.serve.ui import pages

    app.get("/health")(health)
    for module in (chat, knowledge, files, jobs, library, pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")


async def health(request: Request) -> dict[str, Any]:
    catalog, engine = request.app.state.catalog, request.app.state.engine
    return {"status": "ok", "model": catalog.base_id, "device": engine.info.get("device"), "batches": engine.batches}


async def parse(request: Request, schema: type[T]) -> T:
    """The JSON body as `schema`; a broken or invalid body is a 400 naming the parameter."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise InvalidInputError("We could not parse the JSON body of your request (not valid JSON).") from None
    except RecursionError:
        raise InvalidInputError("We could not parse the JSON body of your request (nested too deeply).") from None
    if not isinstance(body, dict):
        raise InvalidInputError("The request body must be a JSON object.")
    try:  # an escaped lone surrogate parses, then fails wherever the text is encoded (SQLite, a file name)
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(f"The JSON body holds a lone surrogate escape (\\u{ord(e.object[e.start]):04x}), "
                                "which is not Unicode text.") from None
    try:
        return schema.model_validate(body)
    except ValidationError as e:
        raise _invalid(e) from None


class BadParameter(InvalidInputError):
    def __init__(self, message: str, param: str | None):
        super().__init__(message)
        self.param = param


def _invalid(error: ValidationError) -> BadParameter:
    first = error.errors()[0]
    param = ".".join(str(p) for p in first["loc"] if "[" not in str(p)) or None  # not pydantic's union tags
    if first["type"] == "extra_forbidden":
        return BadParameter(f"Unrecognized request argument supplied: {param}", param)
    if first["type"] == "missing":
        return BadParameter(f"Missing required parameter: '{param}'.", param)
    return BadParameter(f"Invalid value for '{param}': {first['msg']}.", param)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(InhouseError)
    async def inhouse_error(request: Request, exc: InhouseError) -> JSONResponse:
        status = getattr(exc, "status", None) or next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
        param = getattr(exc, "param", None)
        code = "model_not_found" if status == 404 and "model" in str(exc).lower() else \
            "unsupported_parameter" if isinstance(exc, Unsupported) else None
        return JSONResponse(error_body(str(exc), param=param, code=code), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        return JSONResponse(error_body(f"Invalid request: {first['msg']}", param=param), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = "Not found: no such endpoint." if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(error_body(message), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)  # the client gets no traceback
        return JSONResponse(error_body(f"The server had an error processing your request ({type(exc).__name__}).",
                                       kind="server_error"), status_code=500)
