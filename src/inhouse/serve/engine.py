"""The server's side of the generating process (`inhouse.serve.worker`).

Handlers (on the event loop) submit a prompt and get a future, plus a queue
of text pieces when streaming. A reader thread waits on the pipe (blocking in
the kernel, holding no lock) and hands each message to the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from inhouse.errors import InhouseError, InvalidInputError
from inhouse.generation import Completion, GenerationConfig
from inhouse.model.generate import ChatModel
from inhouse.serve.worker import WorkerSpec, main


@dataclass
class Pending:
    """A request in the worker; `pieces` is set when the client streams."""

    id: int
    loop: asyncio.AbstractEventLoop
    result: asyncio.Future
    pieces: asyncio.Queue | None = None
    engine: Engine | None = field(default=None, repr=False)

    def cancel(self) -> None:
        """The client went away: free its row in the batch."""
        if not self.result.done() and self.engine is not None:
            self.engine.cancel(self.id)


class WorkerFailed(InhouseError):
    pass


class Engine:
    def __init__(self, spec: WorkerSpec, ready_timeout: float = 3600):
        context = multiprocessing.get_context("spawn")  # CUDA and lancedb do not survive a fork
        self.conn, child = context.Pipe()
        self.process = context.Process(target=main, args=(child, spec), name="inhouse-generate", daemon=True)
        self.process.start()
        child.close()
        self.info = self._ready(ready_timeout)
        self.pending: dict[int, Pending] = {}
        self.ids = itertools.count(1)
        self.batches = 0
        self.loaded: list[str] = []  # the adapters the worker holds in memory
        self.on_loaded: Callable[[list[str]], None] | None = None  # called (on the reader thread) as they change
        self.send_lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name="inhouse-engine-reader", daemon=True)
        self.reader.start()

    def _ready(self, timeout: float) -> dict:
        if not self.conn.poll(timeout):
            self.process.kill()
            raise WorkerFailed("the model did not load in time")
        try:
            kind, *rest = self.conn.recv()
        except EOFError:
            raise WorkerFailed(f"the generating process exited while loading (exit code {self.process.exitcode})") \
                from None
        if kind != "ready":
            raise WorkerFailed(rest[-1])
        return rest[0]

    def submit(self, chat: ChatModel, prompt_ids: list[int], config: GenerationConfig, stream: bool,
               folder: str | None = None) -> Pending:
        """Queue a request (call from the event loop)."""
        if not self.process.is_alive():
            raise WorkerFailed("the generating process is not running; restart the server")
        loop = asyncio.get_running_loop()
        pending = Pending(next(self.ids), loop, loop.create_future(), asyncio.Queue() if stream else None, self)
        self.pending[pending.id] = pending
        adapter = None if chat.adapter in (None, "__base__") else chat.adapter
        self._send(("generate", pending.id, prompt_ids, config.model_dump(), adapter, folder, stream,
                    sorted(chat.stop_ids)))
        return pending

    def cancel(self, rid: int) -> None:
        self._send(("cancel", rid))

    def _send(self, message: tuple) -> None:
        with self.send_lock:
            self.conn.send(message)

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break
            for pending, value in self._route(message):
                pending.loop.call_soon_threadsafe(_deliver, pending, value)
        for pending in list(self.pending.values()):  # the worker died: nobody waits forever
            pending.loop.call_soon_threadsafe(_deliver, pending, WorkerFailed("the generating process stopped"))

    def _route(self, message: tuple) -> list[tuple[Pending, object]]:
        kind = message[0]
        if kind == "pieces":
            return [(self.pending[rid], text) for rid, text in message[1] if rid in self.pending]
        if kind == "done":
            pending = self.pending.pop(message[1], None)
            return [(pending, Completion(**message[2]))] if pending else []
        if kind == "failed":
            error = (InvalidInputError if message[2] == "InvalidInputError" else WorkerFailed)(message[3])
            return [(self.pending.pop(rid), error) for rid in message[1] if rid in self.pending]
        if kind == "batch":
            self.batches = message[1]
        if kind == "loaded":
            self.loaded = message[1]
            if self.on_loaded is not None:
                self.on_loaded(self.loaded)
        return []

    def stop(self) -> None:
        try:
            self._send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()


def _deliver(pending: Pending, value: object) -> None:
    """On the event loop: a piece of text, or the end (a Completion or an error)."""
    if isinstance(value, str):
        if pending.pieces is not None:
            pending.pieces.put_nowait(value)
        return
    if pending.pieces is not None:
        pending.pieces.put_nowait(None)
    if pending.result.done():
        return
    if isinstance(value, BaseException):
        pending.result.set_exception(value)
    else:
        pending.result.set_result(value)
