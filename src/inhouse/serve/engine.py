"""The generating thread: requests that arrive together become one batch.

Handlers (on the event loop) submit a prompt and get a future, plus a queue of
text pieces when streaming. One thread owns the model: it takes the first
waiting request, lets others join it for a short window, attaches the
adapters the batch needs and runs one `generate` for all of them (the base and
several adapters mixed). Results and pieces go back to the event loop with
`call_soon_threadsafe`, so the loop never waits on the model.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from inhouse.adapters.pool import ModelPool
from inhouse.generation import Completion, GenerationConfig
from inhouse.model import batch
from inhouse.model.generate import ChatModel


@dataclass
class Pending:
    """A request waiting for (or in) a batch; `pieces` is set when the client streams."""

    chat: ChatModel
    prompt_ids: list[int]
    config: GenerationConfig
    loop: asyncio.AbstractEventLoop
    result: asyncio.Future
    pieces: asyncio.Queue | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def send(self, piece: str | None) -> None:
        if self.pieces is not None:
            self.loop.call_soon_threadsafe(self.pieces.put_nowait, piece)

    def finish(self, value: Completion | BaseException) -> None:
        def settle() -> None:
            if self.result.done():
                return
            if isinstance(value, BaseException):
                self.result.set_exception(value)
            else:
                self.result.set_result(value)

        self.send(None)
        self.loop.call_soon_threadsafe(settle)


class Engine:
    def __init__(self, pool: ModelPool, window_s: float = 0.01, max_batch: int = 64):
        self.pool, self.window_s, self.max_batch = pool, window_s, max_batch
        self.waiting: queue.Queue[Pending | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="inhouse-generate", daemon=True)
        self.batches = 0  # how many generate calls ran (tests and the benchmark read it)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.waiting.put(None)
        self.thread.join(timeout=30)

    def submit(self, chat: ChatModel, prompt_ids: list[int], config: GenerationConfig, stream: bool) -> Pending:
        """Queue a request (call from the event loop)."""
        loop = asyncio.get_running_loop()
        pending = Pending(chat, prompt_ids, config, loop, loop.create_future(), asyncio.Queue() if stream else None)
        self.waiting.put(pending)
        return pending

    def _run(self) -> None:
        while (first := self.waiting.get()) is not None:
            group = self._collect(first)
            for part in self._parts(group):
                self._generate(part)
            if None in group:
                return

    def _collect(self, first: Pending) -> list[Pending | None]:
        """The first request plus whatever arrives within the window, up to max_batch."""
        group: list[Pending | None] = [first]
        deadline = time.monotonic() + self.window_s
        while len(group) < self.max_batch and (left := deadline - time.monotonic()) > 0:
            try:
                group.append(self.waiting.get(timeout=left))
            except queue.Empty:
                break
            if group[-1] is None:
                break
        while len(group) < self.max_batch:  # those already waiting join without waiting longer
            try:
                group.append(self.waiting.get_nowait())
            except queue.Empty:
                break
        return group

    def _parts(self, group: list[Pending | None]) -> Iterator[list[Pending]]:
        """Split so that no part needs more adapters than the pool keeps loaded."""
        part: list[Pending] = []
        adapters: set[str] = set()
        for p in (p for p in group if p is not None and not p.cancelled.is_set()):
            name = p.chat.adapter or batch.BASE
            if name != batch.BASE and name not in adapters and len(adapters) >= self.pool.max_adapters:
                yield part
                part, adapters = [], set()
            part.append(p)
            adapters.add(name) if name != batch.BASE else None
        if part:
            yield part

    def _generate(self, part: list[Pending]) -> None:
        try:
            models = [p.chat.adapter or batch.BASE for p in part]
            self.pool.attach(set(models))
            requests = [batch.Request(p.prompt_ids, p.config, None, p.send if p.pieces else None, p.cancelled.is_set)
                        for p in part]
            stops = set().union(*(p.chat.stop_ids for p in part))
            with self.pool.select(models):
                results = batch.generate(self.pool.model, self.pool.tokenizer, requests, stops)
            self.batches += 1
        except BaseException as e:  # noqa: BLE001 - every waiting client must hear about it
            for p in part:
                p.finish(e)
            return
        for p, done in zip(part, results):
            p.finish(done)

