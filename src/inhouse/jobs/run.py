"""The process that runs one fine-tuning job: `python -m inhouse.jobs.run JOB_ID`.

Each job gets a fresh process (Liger's kernels patch process-wide, lancedb does
not survive a fork, and a crash takes only this job down). Its events go to the
job store as they happen. It stops at the next training step when the job is
cancelled (published nothing, status cancelled), or when the server asks it to
(SIGTERM) or goes away: then the job goes back to the queue and resumes from
its last checkpoint when a server runs again.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from typing import Any

from inhouse import atomic, paths
from inhouse.adapters import registry
from inhouse.adapters.lineage import Lineage, now as iso_now
from inhouse.errors import InhouseError
from inhouse.events import Events, Stopped
from inhouse.jobs import spec
from inhouse.jobs.store import Store, new_id, now

CANCEL_POLL_S = 1.0
KEEP_CHECKPOINTS = 3


class JobEvents(Events):
    """Writes a job's progress to the store; says stop on cancel, SIGTERM or a vanished server."""

    def __init__(self, store: Store, job: dict[str, Any]):
        self.store, self.job = store, job
        self.interrupted = False
        self.parent = os.getppid()
        self.latest: dict[str, Any] = {}
        self._checked, self._cancelled = 0.0, False
        self.started = time.time()

    def log(self, kind: str, **data: Any) -> None:
        handler = getattr(self, f"_{kind}", None)
        if handler is not None:
            handler(**data)

    def _stage(self, message: str, **_: Any) -> None:
        self.store.add_event(self.job["id"], message)

    def _warning(self, message: str, **_: Any) -> None:
        self.store.add_event(self.job["id"], message, level="warn")

    def _metrics(self, step: int, total_steps: int, loss: float, **data: Any) -> None:
        self.latest |= {"step": step, "train_loss": loss, "train_mean_token_accuracy": data.get("mean_token_accuracy")}
        metrics = {"step": step, "total_steps": total_steps, "train_loss": loss,
                   "train_mean_token_accuracy": data.get("mean_token_accuracy"),
                   "learning_rate": data.get("learning_rate"), "tokens_per_second": data.get("tokens_per_second")}
        self.store.add_event(self.job["id"], f"Step {step}/{total_steps}: training loss={loss:.4f}", kind="metrics",
                             data=metrics)
        elapsed = time.time() - self.started
        if step and total_steps:
            self.store.update("jobs", self.job["id"], estimated_finish=int(self.started + elapsed * total_steps / step))

    def _eval(self, step: int, valid_loss: float, **data: Any) -> None:
        extra = {k: data[k] for k in ("valid_reward_accuracy", "valid_reward_margin") if data.get(k) is not None}
        self.latest |= {"valid_loss": valid_loss, "valid_mean_token_accuracy": data.get("valid_mean_token_accuracy"),
                        **extra}
        shown = "".join(f", {k.removeprefix('valid_').replace('_', ' ')}={v:.4f}" for k, v in extra.items())
        self.store.add_event(self.job["id"], f"Step {step}: validation loss={valid_loss:.4f}{shown}", kind="metrics",
                             data={"step": step, "valid_loss": valid_loss,
                                   "valid_mean_token_accuracy": data.get("valid_mean_token_accuracy"), **extra})

    def _early_stop(self, step: int, best_step: int, best_valid_loss: float, patience: int, **_: Any) -> None:
        self.store.add_event(self.job["id"], f"Early stop at step {step}: validation loss has not improved for "
                                             f"{patience} evaluations (best {best_valid_loss:.4f} at step {best_step})")

    def _checkpoint(self, step: int, path: str, **_: Any) -> None:
        """A LoRA checkpoint becomes a library entry of its own, usable as a model at once."""
        name = f"{self.job['output_name']}-step-{step}"
        if (registry.library() / name).exists():
            return
        if os.path.isfile(os.path.join(path, "adapter_config.json")):
            publish_checkpoint(path, name, self.job, step, dict(self.latest))
        self.store.insert("checkpoints", {"id": new_id("ftckpt"), "job_id": self.job["id"], "step": step,
                                          "created_at": now(), "metrics": {**self.latest, "step": step}, "model": name})
        self.store.add_event(self.job["id"], f"Checkpoint created at step {step}: {name}")
        self._prune()

    def _prune(self) -> None:
        """Keep the last KEEP_CHECKPOINTS checkpoints of a job (as OpenAI does); older ones leave the library."""
        rows = self.store.select("select * from checkpoints where job_id = ? order by step desc", (self.job["id"],))
        for row in rows[KEEP_CHECKPOINTS:]:
            atomic.delete_folder(registry.library() / row["model"])
            with self.store.connect() as db:
                db.execute("delete from checkpoints where id = ?", [row["id"]])

    def should_stop(self) -> bool:
        if self.interrupted or os.getppid() != self.parent:
            return True
        if time.monotonic() - self._checked >= CANCEL_POLL_S:
            self._checked = time.monotonic()
            self._cancelled = bool(self.store.get("jobs", self.job["id"], "job")["cancel_requested"])
        return self._cancelled


def publish_checkpoint(path: str, name: str, job: dict[str, Any], step: int, metrics: dict[str, Any]) -> None:
    lineage = Lineage(name=name, kind="checkpoint", base_model=job["base"], step=step, metrics=metrics,
                      origin={"job": job["id"], "training_file": job["training_file"]}, finished_at=iso_now())

    def write(folder) -> None:
        for item in os.listdir(path):
            if item.startswith(("adapter_", "tokenizer", "special_tokens", "chat_template")):
                shutil.copy(os.path.join(path, item), folder / item)

    registry.publish(name, write, lineage)


def run(job_id: str, store: Store | None = None) -> None:
    from inhouse.train.checkpoints import last_complete
    from inhouse.train.sft import train

    store = store or Store()
    job = store.get("jobs", job_id, "fine-tuning job")
    events = JobEvents(store, job)
    signal.signal(signal.SIGTERM, lambda *_: setattr(events, "interrupted", True))
    run_dir = paths.runs() / job["output_name"]
    resume = last_complete(run_dir) is not None  # as `inhouse train --resume`: an interrupted save does not count
    store.add_event(job_id, "Resuming from the last checkpoint" if resume else "Fine-tuning job started")
    try:
        result = train(spec.recipe_for(job, store), resume=resume, events=events,
                       origin={"job": job_id, "training_file": job["training_file"],
                               "validation_file": job["validation_file"]})
    except Stopped:
        return stopped(store, job, events)
    except InhouseError as e:
        return failed(store, job, "training_failed", str(e))
    except Exception as e:  # noqa: BLE001 - recorded on the job; the traceback goes to the log
        import traceback

        traceback.print_exc()
        return failed(store, job, "internal_error", f"{type(e).__name__}: {e}")
    succeeded(store, job, result)


def succeeded(store: Store, job: dict[str, Any], result: Any) -> None:
    if not store.transition(job["id"], ("running",), "succeeded", fine_tuned_model=result.name, finished_at=now(),
                            trained_tokens=int(result.metrics.get("trained_tokens") or 0), pid=None):
        shutil.rmtree(result.path, ignore_errors=True)  # cancelled meanwhile: a cancelled job makes no model
        return
    store.add_event(job["id"], f"New fine-tuned model created: {result.name}")
    store.add_event(job["id"], "The job has successfully completed")


def stopped(store: Store, job: dict[str, Any], events: JobEvents) -> None:
    run_dir = paths.runs() / job["output_name"]
    if store.get("jobs", job["id"], "job")["cancel_requested"]:
        shutil.rmtree(run_dir, ignore_errors=True)
        store.transition(job["id"], ("running",), "cancelled", finished_at=now(), pid=None)
        store.add_event(job["id"], "Job cancelled; nothing was published")
        return
    store.transition(job["id"], ("running",), "queued", pid=None)
    store.add_event(job["id"], "Training paused (the server is stopping); it resumes from the last checkpoint "
                               "when a server runs again", level="warn")


def failed(store: Store, job: dict[str, Any], code: str, message: str) -> None:
    store.transition(job["id"], ("running",), "failed", finished_at=now(), pid=None,
                     error={"code": code, "message": message, "param": None})
    store.add_event(job["id"], f"Job failed: {message}", level="error")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.argv[1:]:
        sys.exit("usage: python -m inhouse.jobs.run JOB_ID")
    run(sys.argv[1])
