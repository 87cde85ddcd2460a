"""The Trainer's per-step host work, kept off the GPU's critical path.

The GPU idles whenever the host has not queued the next kernel yet. It does so between steps: after each
wait for the GPU (a `.item()`), everything the host does until it queues the next forward runs with the GPU
idle. The Trainer waits to count each batch's tokens right after queueing the backward, and walks every
module each step to count parameters for `total_flos`; PEFT's cast switch walks them twice more. On an 8B
with LoRA on every projection (2,665 modules) that left the GPU idle for tens of ms a step (profile:
docs/benchmarks.md). What stays is the loss log's one wait a step, which stopping a diverged run needs.
"""

from __future__ import annotations

from torch import nn


class HostSteps:
    """Trainer mixin: the token count without a wait, the parameter count and the LoRA layers found once."""

    def _track_num_input_tokens(self, inputs) -> None:
        """A packed row has no padding, so its length is its token count: read from the shape, where the
        Trainer would count on the GPU and wait for the step's backward to finish before queueing the
        optimizer step. Padded batches, and several processes (whose counts are gathered), count as before."""
        if (self.args.include_num_input_tokens_seen == "non_padding" and "cu_seq_lens_q" in inputs
                and self.args.world_size == 1):
            self.state.num_input_tokens_seen += inputs["input_ids"].numel()
            return
        super()._track_num_input_tokens(inputs)

    def floating_point_ops(self, inputs) -> int:
        """The Trainer's 6 x tokens x parameters, with the parameters counted once rather than every step."""
        tokens = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
        if tokens is None or tokens.numel() == 0:
            return super().floating_point_ops(inputs)
        if "_flop_params" not in self.__dict__:
            self._flop_params = super().floating_point_ops(inputs) // (6 * tokens.numel())
        return 6 * tokens.numel() * self._flop_params

    def tuner_layers(self) -> list[nn.Module]:
        """PEFT's adapter layers of the model being trained, found once per model."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        found = self.__dict__.get("_tuner_layers")
        if found is None or found[0] is not self.model:
            layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
            found = self._tuner_layers = (self.model, layers)
        return found[1]
