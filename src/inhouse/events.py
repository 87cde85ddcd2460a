"""How long tasks report progress, and how they are asked to stop.

A workflow (train, rag index, eval, data prepare) never prints: it calls
`events.log(kind, **data)` and asks `events.should_stop()` between units of
work. The console listener prints what a person at a terminal wants to see;
the job store's listener records every event for the HTTP API; several can
listen at once (`Fanout`).

Kinds used today:
    stage       message: what the task is doing now
    warning     message: something the user should know (the task goes on)
    train_begin step, total_steps
    step        step, total_steps (after every optimizer step)
    metrics     step, loss, learning_rate, grad_norm, mean_token_accuracy, tokens_per_second, epoch
    eval        step, valid_loss, valid_mean_token_accuracy; DPO adds valid_reward_accuracy, valid_reward_margin
    checkpoint  step, path
    early_stop  step, best_step, best_valid_loss, patience (validation loss stopped improving)
    train_end   step
    progress    done, total, unit (documents indexed, examples answered)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inhouse.errors import InhouseError


class Stopped(InhouseError):
    """The task stopped because `should_stop()` said so; it published nothing."""


class Events:
    """Reports nowhere and never stops: the silent default for library use and tests."""

    def log(self, kind: str, **data: Any) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def say(self, message: str) -> None:
        """Shorthand for a `stage` event."""
        self.log("stage", message=message)


class ConsoleEvents(Events):
    """Today's terminal output: stage lines, and a progress bar with loss, validation loss and tokens/s."""

    def __init__(self, say: Callable[[str], None] = print, progress: bool = True):
        self.print, self.progress = say, progress
        self.bar: Any = None
        self.postfix: dict[str, str] = {}

    def log(self, kind: str, **data: Any) -> None:
        handler = getattr(self, f"_{kind}", None)
        if handler is not None:
            handler(**data)

    def _stage(self, message: str, **_: Any) -> None:
        self.print(message)

    def _warning(self, message: str, **_: Any) -> None:
        self.print(f"warning: {message}")

    def _train_begin(self, step: int, total_steps: int, **_: Any) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=step, desc="training", unit="step", disable=not self.progress,
                        dynamic_ncols=True)

    def _step(self, step: int, **_: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.update(step - self.bar.n)

    def _metrics(self, loss: float | None = None, tokens_per_second: float | None = None, **_: Any) -> None:
        if loss is not None:
            self.postfix["loss"] = f"{loss:.4f}"
        if tokens_per_second is not None:
            self.postfix["tok/s"] = f"{tokens_per_second:,.0f}"

    def _eval(self, valid_loss: float | None = None, valid_reward_accuracy: float | None = None, **_: Any) -> None:
        if valid_loss is not None:
            self.postfix["val_loss"] = f"{valid_loss:.4f}"
        if valid_reward_accuracy is not None:
            self.postfix["reward_acc"] = f"{valid_reward_accuracy:.2f}"

    def _early_stop(self, step: int, best_step: int, best_valid_loss: float, patience: int, **_: Any) -> None:
        self.print(f"early stop at step {step}: validation loss has not improved for {patience} evaluations "
                   f"(best {best_valid_loss:.4f} at step {best_step})")

    def _train_end(self, **_: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Fanout(Events):
    """Several listeners; stops when any of them says so."""

    def __init__(self, *listeners: Events):
        self.listeners = listeners

    def log(self, kind: str, **data: Any) -> None:
        for listener in self.listeners:
            listener.log(kind, **data)

    def should_stop(self) -> bool:
        return any(listener.should_stop() for listener in self.listeners)
