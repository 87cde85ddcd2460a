"""Many LoRA adapters on one base model, chosen per row of a batch, in one pass.

PEFT's mixed-batch inference (`adapter_names`) loops over the adapters in
every LoRA layer and indexes the batch with Python lists, which copies an
index to the GPU and waits for it, per layer and adapter: measured on an H200
with the Llama-3.1-8B shape, a batch of 8 requests over 4 adapters took 320 ms
per token (docs/benchmarks.md). Here every loaded adapter's A and B matrices
are stacked per layer (slot 0 is "no adapter": zeros), each row of the batch
carries a slot number, and a forward hook on the base layer adds
`x @ A[slot]^T @ B[slot]^T`: two gathers and two batched matmuls per layer,
whatever the mix of adapters, with no host round trip.

Adapters are read in PEFT's own format (`PeftConfig`, `load_peft_weights`).
Supported: LoRA on linear layers, any rank and alpha (rank/alpha patterns,
rsLoRA). Anything else (DoRA, LoRA on embeddings, modules_to_save, biases) is
refused with a clear error; such adapters can still be merged and served as a
base model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from inhouse.errors import InvalidInputError

PREFIX = "base_model.model."


class LayerStack:
    """A (slots, rank, in) and B (slots, out, rank) of one linear layer; B carries the scaling."""

    def __init__(self, layer: torch.nn.Linear, slots: int, rank: int):
        self.layer = layer
        kw = {"dtype": layer.weight.dtype, "device": layer.weight.device}
        self.a = torch.zeros(slots, rank, layer.in_features, **kw)
        self.b = torch.zeros(slots, layer.out_features, rank, **kw)

    def grow(self, rank: int) -> None:
        """Pad to a larger rank (zero columns add nothing)."""
        if rank > self.a.shape[1]:
            pad = rank - self.a.shape[1]
            self.a = torch.nn.functional.pad(self.a, (0, 0, 0, pad))
            self.b = torch.nn.functional.pad(self.b, (0, pad))

    def delta(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        a, b = self.a.index_select(0, rows), self.b.index_select(0, rows)
        flat = x.reshape(x.shape[0], -1, x.shape[-1]).to(a.dtype)
        return torch.bmm(torch.bmm(flat, a.transpose(1, 2)), b.transpose(1, 2)).reshape(*x.shape[:-1], -1)


class MultiLora:
    """Attach up to `slots - 1` LoRA adapters to `model`; `use(names)` selects one per batch row."""

    def __init__(self, model: torch.nn.Module, slots: int):
        self.model, self.slots = model, slots
        self.names: dict[str, int] = {}  # adapter name -> slot (1..slots-1)
        self.layers: dict[str, LayerStack] = {}
        self.rows: torch.Tensor | None = None
        self._hooks = []

    def load(self, name: str, path: str | Path) -> None:
        """Read a PEFT LoRA adapter folder into a free slot."""
        weights, scales = read_adapter(Path(path))
        free = next((s for s in range(1, self.slots) if s not in self.names.values()), None)
        if free is None:
            raise InvalidInputError(f"all {self.slots - 1} adapter slots are in use; unload one first")
        modules = dict(self.model.named_modules())
        for module, (a, b) in weights.items():
            if not isinstance(modules.get(module), torch.nn.Linear):
                raise InvalidInputError(f"{path}: LoRA on {module!r}, which is not a linear layer of this model; "
                                        "merge the adapter instead (inhouse merge)")
            stack = self._stack(module, modules[module], a.shape[0])
            stack.a[free].zero_()
            stack.b[free].zero_()
            stack.a[free, : a.shape[0]] = a.to(stack.a)
            stack.b[free, :, : a.shape[0]] = (b * scales[module]).to(stack.b)
        self.names[name] = free

    def unload(self, name: str) -> None:
        slot = self.names.pop(name)
        for stack in self.layers.values():
            stack.a[slot].zero_()
            stack.b[slot].zero_()

    def _stack(self, module: str, layer: torch.nn.Linear, rank: int) -> LayerStack:
        if module not in self.layers:
            self.layers[module] = LayerStack(layer, self.slots, rank)
            self._hooks.append(layer.register_forward_hook(self._hook(self.layers[module])))
        self.layers[module].grow(rank)
        return self.layers[module]

    def _hook(self, stack: LayerStack):
        def add_lora(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            if self.rows is None:
                return output
            return output + stack.delta(args[0], self.rows).to(output.dtype)

        return add_lora

    @contextmanager
    def use(self, names: Sequence[str | None]) -> Iterator[None]:
        """Rows of the next forward passes use these adapters (None: the base alone)."""
        slots = [self.names[n] if n is not None else 0 for n in names]
        device = next(self.model.parameters()).device
        self.rows = torch.tensor(slots, device=device) if any(slots) else None
        try:
            yield
        finally:
            self.rows = None


def read_adapter(path: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, float]]:
    """{module: (A, B)} and {module: scaling} of a PEFT LoRA folder; refuses what this path cannot apply."""
    from peft import PeftConfig
    from peft.utils import load_peft_weights
    from peft.utils.other import get_pattern_key

    config = PeftConfig.from_pretrained(path)
    unsupported = [n for n, bad in (("peft_type", str(config.peft_type) not in ("LORA", "PeftType.LORA")),
                                    ("use_dora", getattr(config, "use_dora", False)),
                                    ("modules_to_save", getattr(config, "modules_to_save", None)),
                                    ("bias", getattr(config, "bias", "none") != "none"),
                                    ("lora_bias", getattr(config, "lora_bias", False)),
                                    ("fan_in_fan_out", getattr(config, "fan_in_fan_out", False))) if bad]
    if unsupported:
        raise InvalidInputError(f"{path}: this adapter uses {', '.join(unsupported)}, which serving does not apply "
                                "per request; merge it into the base (inhouse merge) and serve that")
    state = load_peft_weights(str(path), device="cpu")
    weights: dict[str, list] = {}
    for key, tensor in state.items():
        module, _, kind = key.removeprefix(PREFIX).rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise InvalidInputError(f"{path}: weight {key!r} is not a linear LoRA matrix; merge the adapter instead")
        weights.setdefault(module, [None, None])[kind[0] == "B"] = tensor
    scales = {}
    for module, (a, b) in weights.items():
        if a is None or b is None:
            raise InvalidInputError(f"{path}: module {module!r} has only half of its LoRA weights")
        alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern, module), config.lora_alpha) \
            if config.alpha_pattern else config.lora_alpha
        rank = a.shape[0]
        scales[module] = alpha / (math.sqrt(rank) if getattr(config, "use_rslora", False) else rank)
    return {m: (a, b) for m, (a, b) in weights.items()}, scales
