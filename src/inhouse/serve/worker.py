"""The generating process: owns the model, batches what arrives together, streams back per step.

Generation runs in its own (spawned) process, not a thread of the server: a
decoding loop is Python that launches GPU work without pause, and sharing the
interpreter lock with it starved the server's event loop (an H200 run took
16 s to send the first token of 8 concurrent streams). The two processes talk
over a pipe:

    server -> worker   ("generate", id, prompt_ids, config, adapter, folder, stream, stop_ids)
                       ("cancel", id)  ("stop",)
    worker -> server   ("ready", info)  ("pieces", [(id, text), ...])  ("done", id, completion)
                       ("batch", how many so far)  ("failed", ids, kind, message)
                       ("loaded", [adapter names])   whenever the adapters held in memory change

One "pieces" message carries a whole step's new text, so the server wakes once
per step, not once per token per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from inhouse.generation import GenerationConfig

MAX_WAIT_WINDOWS = 10  # the longest a first request waits for company: 10 windows (100 ms by default)


@dataclass(frozen=True)
class WorkerSpec:
    base: str
    max_adapters: int = 8
    max_batch: int = 64
    window_s: float = 0.01
    loader: Callable[[], tuple] | None = None  # instead of loading `base` (benchmarks; must be picklable)


@dataclass
class Job:
    id: int
    prompt_ids: list[int]
    config: GenerationConfig
    adapter: str | None
    folder: str | None
    stream: bool
    stops: list[int]
    arrived: float = field(default_factory=time.monotonic)


def main(conn: Connection, spec: WorkerSpec) -> None:
    """Entry point of the spawned process."""
    import os
    import signal

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # this process is an application of its own
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C reaches the whole process group: the server
        signal.signal(sig, signal.SIG_IGN)        # drains its requests first, then tells this process to stop
    from inhouse.adapters.pool import ModelPool

    try:
        pool = ModelPool(spec.base, spec.max_adapters, spec.loader)
    except Exception as e:  # noqa: BLE001 - the server reports it and exits
        conn.send(("failed", [], type(e).__name__, str(e)))
        return
    eos = pool.model.generation_config.eos_token_id
    context = getattr(pool.model.config, "max_position_embeddings", None)
    conn.send(("ready", {"eos": eos, "context": context, "device": str(pool.model.device)}))
    Worker(conn, pool, spec).run()


class Worker:
    """Runs the active batch; new requests join it at the next step (the batch pauses and continues with
    them), so nobody waits for a whole generation to end before their first token."""

    def __init__(self, conn: Connection, pool, spec: WorkerSpec):
        self.conn, self.pool, self.spec = conn, pool, spec
        self.waiting: list[Job] = []
        self.active: list[tuple[Job, object]] = []  # (job, batch.Request with its progress)
        self.cancelled: set[int] = set()
        self.pieces: list[tuple[int, str]] = []
        self.stopping = False
        self.batches = 0
        self.loaded: list[str] = []

    def run(self) -> None:
        while not (self.stopping and not self.active):
            if not self.waiting and not self.active:
                self._receive(block=True)
                self._collect()
            self._admit()
            if self.active:
                self._generate()

    def _receive(self, block: bool, timeout: float = 0.0) -> None:
        """Take every message that is there (waiting up to `timeout`, or for one when `block`)."""
        while not self.stopping and self.conn.poll(None if block else timeout):
            try:
                message = self.conn.recv()
            except EOFError:  # the server is gone
                self.stopping = True
                return
            block, timeout = False, 0.0
            if message[0] == "generate":
                _, rid, ids, config, adapter, folder, stream, stops = message
                self.waiting.append(Job(rid, ids, GenerationConfig(**config), adapter, folder, stream, stops))
            elif message[0] == "cancel":
                self.cancelled.add(message[1])
            elif message[0] == "stop":
                self.stopping = True

    def _collect(self) -> None:
        """Let requests join the first one while they keep coming: the batch starts after a gap of
        `window_s` with no new request, and at the latest after MAX_WAIT_WINDOWS windows."""
        start = time.monotonic()
        deadline = start + self.spec.window_s
        while len(self.waiting) < self.spec.max_batch:
            left = min(deadline, start + MAX_WAIT_WINDOWS * self.spec.window_s) - time.monotonic()
            if left <= 0:
                return
            before = len(self.waiting)
            self._receive(block=False, timeout=left)
            if len(self.waiting) > before:
                deadline = time.monotonic() + self.spec.window_s

    def _admit(self) -> None:
        """Move waiting jobs into the active batch while it has room (rows and adapter slots)."""
        from inhouse.model import batch

        adapters = self._adapters()
        keep = []
        for job in self.waiting:
            if job.id in self.cancelled:
                self.conn.send(("failed", [job.id], "Cancelled", "cancelled"))
                continue
            if not self._fits(job, adapters):
                keep.append(job)
                continue
            adapters |= {job.adapter} if job.adapter else set()
            request = batch.Request(job.prompt_ids, job.config, None, self._streamer(job) if job.stream else None,
                                    lambda rid=job.id: rid in self.cancelled)
            self.active.append((job, request))
        self.waiting = keep

    def _adapters(self) -> set[str]:
        return {job.adapter for job, _ in self.active if job.adapter}

    def _fits(self, job: Job, adapters: set[str]) -> bool:
        """Room for one more row, and a LoRA slot for its adapter."""
        new_slot = bool(job.adapter) and job.adapter not in adapters
        return len(self.active) < self.spec.max_batch and not (new_slot and len(adapters) >= self.spec.max_adapters)

    def _generate(self) -> None:
        from inhouse.model import batch

        jobs = [job for job, _ in self.active]
        try:
            self.pool.attach({j.adapter: Path(j.folder) for j in jobs if j.adapter})
            self._report_loaded()
            with self.pool.select([j.adapter for j in jobs]):
                results = batch.generate(self.pool.model, self.pool.tokenizer, [r for _, r in self.active],
                                         set().union(*(set(j.stops) for j in jobs)), on_step=self._step)
        except Exception as e:  # noqa: BLE001 - every client of the batch must hear about it
            self._report_loaded()
            self._flush()
            self.active = []
            self.conn.send(("failed", [j.id for j in jobs], type(e).__name__, str(e)))
            return
        self._flush()
        self.batches += 1
        self.conn.send(("batch", self.batches))
        for (job, _), done in zip(self.active, results):
            if done is not None:
                self.conn.send(("done", job.id, asdict(done)))
                self.cancelled.discard(job.id)
        self.active = [(job, r) for (job, r), done in zip(self.active, results) if done is None]

    def _report_loaded(self) -> None:
        """Tell the server which adapters are in memory (it registers them: `inhouse.adapters.servers`)."""
        if sorted(self.pool.loaded) != self.loaded:
            self.loaded = sorted(self.pool.loaded)
            self.conn.send(("loaded", self.loaded))

    def _streamer(self, job: Job) -> Callable[[str], None]:
        return lambda text: self.pieces.append((job.id, text))

    def _step(self) -> bool:
        """After each token: send the step's text in one message, read what came meanwhile, and pause
        the batch when waiting requests can join it. Joining costs a pause (the batch's context is read
        again), so arrivals are gathered as in `_collect`: a window's gap after the last, or
        MAX_WAIT_WINDOWS windows after the first."""
        self._flush()
        self._receive(block=False)
        adapters = self._adapters()
        joining = [job for job in self.waiting if self._fits(job, adapters)]
        if not joining:
            return False
        now, window = time.monotonic(), self.spec.window_s
        return now - max(j.arrived for j in joining) >= window or \
            now - min(j.arrived for j in joining) >= MAX_WAIT_WINDOWS * window

    def _flush(self) -> None:
        if self.pieces:
            self.conn.send(("pieces", self.pieces))
            self.pieces = []
