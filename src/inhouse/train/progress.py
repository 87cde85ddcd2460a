"""Trainer callbacks: training reported as events, a stop request honoured, a diverged run stopped."""

from __future__ import annotations

import math
import time

from transformers import TrainerCallback

from inhouse import world
from inhouse.events import Events

SCORES = ("reward_accuracy", "reward_margin")  # a DPO evaluation's (inhouse.train.rewards)


class EventsCallback(TrainerCallback):
    """Turns the Trainer's logs into events (with non-padding tokens/s, unless `tokens` is False: a trainer
    that does not count them) and stops when asked to."""

    def __init__(self, events: Events, tokens: bool = True):
        self.events, self.tokens = events, tokens
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_tokens = time.perf_counter(), state.num_input_tokens_seen
        self.events.log("train_begin", step=state.global_step, total_steps=state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.events.log("step", step=state.global_step, total_steps=state.max_steps)
        if world.any_rank(self.events.should_stop()):  # every rank stops at the same step
            self.stopped_at = state.global_step
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.events.log("metrics", step=state.global_step, loss=logs["loss"], learning_rate=logs.get("learning_rate"),
                            grad_norm=logs.get("grad_norm"), mean_token_accuracy=logs.get("mean_token_accuracy"),
                            epoch=logs.get("epoch"), total_steps=state.max_steps,
                            tokens_per_second=(state.num_input_tokens_seen - self.start_tokens) / elapsed
                            if self.tokens else None)
        if "eval_loss" in logs:
            self.events.log("eval", step=state.global_step, valid_loss=logs["eval_loss"],
                            valid_mean_token_accuracy=logs.get("eval_mean_token_accuracy"),
                            **{f"valid_{k}": logs[f"eval_{k}"] for k in SCORES if f"eval_{k}" in logs})

    def on_save(self, args, state, control, **kwargs):
        path = f"{args.output_dir}/checkpoint-{state.global_step}"
        self.events.log("checkpoint", step=state.global_step, path=path)

    def on_train_end(self, args, state, control, **kwargs):
        self.events.log("train_end", step=state.global_step)


class NonFiniteLoss(Exception):
    """Raised inside the training loop at the first step whose loss is NaN or infinite."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"step {step}: loss {loss}")
        self.step, self.loss = step, loss


class FiniteLossGuard(TrainerCallback):
    """Stops training at the first non-finite loss: whatever the weights hold after it is garbage,
    and it must never be published (needs `logging_steps=1` and `logging_nan_inf_filter=False`)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise NonFiniteLoss(state.global_step, value)
