"""A progress bar with loss and tokens/s, as a Trainer callback."""

from __future__ import annotations

import math
import time

from tqdm.auto import tqdm
from transformers import TrainerCallback


class ProgressBar(TrainerCallback):
    """Shows step, loss, validation loss and non-padding tokens/s."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_tokens = time.perf_counter(), state.num_input_tokens_seen
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training",
                        unit="step", disable=not self.enabled, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.postfix["tok/s"] = f"{(state.num_input_tokens_seen - self.start_tokens) / elapsed:,.0f}"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.postfix["loss"] = f"{logs['loss']:.4f}"
        if "eval_loss" in logs:
            self.postfix["val_loss"] = f"{logs['eval_loss']:.4f}"

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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
