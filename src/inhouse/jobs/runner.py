"""The queue's worker, inside the server: validate files, start jobs one per slot, watch them.

A slot is a GPU (a job sees only its own through CUDA_VISIBLE_DEVICES) or, on
a machine without one, the CPU. A job that asked for a GPU (`devices`) waits
for that one; the others take the first free slot. Every job runs in its own process
(`inhouse.jobs.run`). What survives a crash:

- the server stops (Ctrl-C, SIGTERM): running jobs are asked to pause; they go
  back to the queue and resume from their last checkpoint on the next start;
- the server dies: its jobs notice and pause the same way; a job still marked
  running whose process is gone is queued again at the next start;
- a job's process dies (kill -9, out of memory): the job fails with a message
  saying so, never stays `running`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from inhouse.jobs import spec
from inhouse.jobs.store import Store, now

STOP_GRACE_S = 60.0  # how long a job may take to reach its next step and pause
CANCEL_GRACE_S = 10  # how long a cancelled job may take to stop by itself before it is killed


def gpu_slots() -> list[str | None]:
    try:
        import torch

        count = torch.cuda.device_count()
    except ImportError:
        count = 0
    return [str(i) for i in range(count)] or [None]


class Runner:
    def __init__(self, store: Store, slots: list[str | None] | None = None, poll_s: float = 0.5,
                 log_dir: Path | None = None):
        self.store, self.slots, self.poll_s = store, slots or gpu_slots(), poll_s
        self.log_dir = log_dir or store.path.parent / "logs"
        self.running: dict[str, tuple[subprocess.Popen, tuple[str | None, ...]]] = {}  # job id -> (process, slots)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="inhouse-jobs", daemon=True)

    def start(self) -> None:
        self._recover()
        self.thread.start()

    def stop(self) -> None:
        """Ask running jobs to pause (they go back to the queue), wait for them, stop the loop."""
        self.stopping.set()
        self.thread.join(timeout=10)
        for process, _ in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for job_id, (process, _) in list(self.running.items()):
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()

    def _loop(self) -> None:
        while not self.stopping.wait(self.poll_s):
            try:
                self._validate()
                self._reap()
                self._launch()
            except Exception:  # noqa: BLE001 - the queue must keep going; the error goes to the log
                import logging

                logging.getLogger("inhouse.jobs").exception("job runner")

    def _recover(self) -> None:
        """Jobs a dead server left running go back to the queue (they resume from their checkpoint)."""
        for job in self.store.select("select * from jobs where status = 'running'"):
            if not _alive(job["pid"]):
                self.store.transition(job["id"], ("running",), "queued", pid=None)
                self.store.add_event(job["id"], "The server restarted: the job is queued again and resumes from "
                                                "its last checkpoint", level="warn")

    def _validate(self) -> None:
        for job in self.store.select("select * from jobs where status = 'validating_files' order by created_at"):
            problem = spec.file_problem(self.store, job)
            if problem:
                if self.store.transition(job["id"], ("validating_files",), "failed", error=problem, finished_at=now()):
                    self.store.add_event(job["id"], f"Job failed: {problem['message']}", level="error")
            elif self.store.transition(job["id"], ("validating_files",), "queued"):
                self.store.add_event(job["id"], "Files validated; the job is queued")

    def _reap(self) -> None:
        for job_id, (process, _) in list(self.running.items()):
            code = process.poll()
            if code is None:
                self._enforce_cancel(job_id, process)
                continue
            del self.running[job_id]
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            error = {"code": "process_died", "param": None,
                     "message": f"the training process ended unexpectedly ({how}); see {self._log(job_id)}"}
            if self.store.transition(job_id, ("running",), "failed", error=error, finished_at=now(), pid=None):
                self.store.add_event(job_id, f"Job failed: {error['message']}", level="error")

    def _enforce_cancel(self, job_id: str, process: subprocess.Popen) -> None:
        """A cancelled job stops at its next step; one that does not (still loading, stuck) is killed."""
        job = self.store.get("jobs", job_id, "job")
        if job["status"] == "cancelled" and now() - (job["finished_at"] or now()) > CANCEL_GRACE_S:
            process.kill()

    def _launch(self) -> None:
        """Oldest first, each queued job on the slot it can have now; one waiting for its GPU holds back
        no job behind it that can run elsewhere."""
        busy = {slot for _, slots in self.running.values() for slot in slots}
        for job in self.store.select("select * from jobs where status = 'queued' order by created_at"):
            if self.stopping.is_set():
                return
            slots = self._claim(job, busy)
            if slots:
                self._start(job, slots)
                busy.update(slots)

    def _claim(self, job: dict, busy: set[str | None]) -> tuple[str | None, ...]:
        """The slots a job starts on now: the GPUs it asked for once all are free, else the first free slot;
        () while it must wait."""
        if job["devices"] is None:
            return next(((s,) for s in self.slots if s not in busy), ())
        wanted = tuple(str(d) for d in job["devices"])
        if not set(wanted) <= set(self.slots):
            self._fail(job["id"], {"code": "devices_not_found", "param": "devices", "message":
                                   f"GPU {', '.join(wanted)} is not on this machine (it has {self._have()})"})
            return ()
        return wanted if not set(wanted) & busy else ()

    def _have(self) -> str:
        gpus = [s for s in self.slots if s is not None]
        return f"GPUs {', '.join(gpus)}" if gpus else "no GPU"

    def _fail(self, job_id: str, error: dict) -> None:
        if self.store.transition(job_id, ("queued",), "failed", error=error, finished_at=now()):
            self.store.add_event(job_id, f"Job failed: {error['message']}", level="error")

    def _start(self, job: dict, slots: tuple[str | None, ...]) -> None:
        if not self.store.transition(job["id"], ("queued",), "running", started_at=now(), attempts=job["attempts"] + 1):
            return  # cancelled meanwhile
        gpus = ",".join(s for s in slots if s is not None)
        env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": gpus} if gpus else {}))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self._log(job["id"]), "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "inhouse.jobs.run", job["id"]], env=env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.store.update("jobs", job["id"], pid=process.pid)
        self.running[job["id"]] = (process, slots)

    def _log(self, job_id: str) -> Path:
        return self.log_dir / f"{job_id}.log"


def _alive(pid: int | None) -> bool:
    """Whether `pid` is still a job process (a reused pid of another program does not count)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"inhouse.jobs.run" in fh.read()
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return not os.path.isdir("/proc")
