"""LoRA projections whose low-rank update rides on the base matmul's output, forward and backward.

PEFT computes `base(x) + B(A(dropout(x))) * scaling` as five kernels: the update's product is written
out, scaled, then added, and in the backward the two input gradients are summed by yet another pass.
On the recipe's default (LoRA on all seven projections of every layer) those elementwise passes over
full-width activations were about a tenth of an 8B step's GPU time (profile in docs/benchmarks.md).
Here the update is accumulated into the base output by the GEMM itself (`addmm_`, cuBLAS's beta=1),
and the input gradient of the update into that of the base the same way: the same products, in fp32
accumulators, with no full-width temporaries.

On a 4-bit base (QLoRA) bitsandbytes owns the base matmul, so the update is accumulated into its output
in place (`LoraUpdate`), which also spares PEFT's defensive copy of that output. Or, where the GPU has the
room (`keep_dequantized`), a layer keeps the bf16 weight that bitsandbytes would dequantise in every forward
and backward: the frozen weight never changes, so the copy is made once and the layer runs as `LoraMatmul`
on the same numbers. On an H200 one dequantisation of the 8B's projections took 32-35 ms, and bitsandbytes'
4-bit matmuls added more host time than GPU time to the step (profile in docs/benchmarks.md).

The layers are PEFT's own LoRA `Linear` and `Linear4bit` (same parameters, names, saving, merging), given
to PEFT through its custom-module dispatch (`LoraConfig._register_custom_module`); anything but the plain
case (mixed adapter batches, several active adapters, DoRA and other variants, merged or disabled
adapters, a trainable base weight, mismatched dtypes) takes PEFT's forward unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig
from peft.tuners.lora.layer import Linear as LoraLinear
from torch import nn

from inhouse.train import memory


class LoraMatmul(torch.autograd.Function):
    """y = x W^T + b + s (xd A^T) B^T, with xd = x when `xd` is None (no dropout). Saves xd, xA^T and
    the (frozen) weights; W gets no gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, xd: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None,
                lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        flat_d = flat if xd is None else xd.reshape(-1, xd.shape[-1])
        xa = flat_d @ lora_a.t()
        y = F.linear(flat, weight, bias)
        y.addmm_(xa, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(flat_d, xa, weight, lora_a, lora_b)
        ctx.scaling, ctx.separate, ctx.shape = scaling, xd is not None, x.shape
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        flat_d, xa, weight, lora_a, lora_b = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        need_x, need_xd, _, need_bias, need_a, need_b, _ = ctx.needs_input_grad
        g_xa = (g @ lora_b).mul_(ctx.scaling)  # gradient of xA^T: [tokens, r], small
        d_b = (g.t() @ xa).mul_(ctx.scaling) if need_b else None
        d_a = g_xa.t() @ flat_d if need_a else None
        d_x = d_xd = None
        if need_x:
            d_x = g @ weight
            if not ctx.separate:
                d_x.addmm_(g_xa, lora_a)  # both paths' input gradients in one GEMM
            d_x = d_x.view(ctx.shape)
        if ctx.separate and need_xd:
            d_xd = (g_xa @ lora_a).view(ctx.shape)
        d_bias = g.sum(0) if need_bias else None
        return d_x, d_xd, None, d_bias, d_a, d_b, None


class LoraUpdate(torch.autograd.Function):
    """y += s (xd A^T) B^T in place, for a base output computed elsewhere (bitsandbytes' 4-bit matmul)."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, xd: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                scaling: float) -> torch.Tensor:
        flat_d = xd.reshape(-1, xd.shape[-1])
        xa = flat_d @ lora_a.t()
        y.view(-1, y.shape[-1]).addmm_(xa, lora_b.t(), alpha=scaling)
        ctx.mark_dirty(y)
        ctx.save_for_backward(flat_d, xa, lora_a, lora_b)
        ctx.scaling, ctx.shape = scaling, xd.shape
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        flat_d, xa, lora_a, lora_b = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        _, need_xd, need_a, need_b, _ = ctx.needs_input_grad
        g_xa = (g @ lora_b).mul_(ctx.scaling)
        d_b = (g.t() @ xa).mul_(ctx.scaling) if need_b else None
        d_a = g_xa.t() @ flat_d if need_a else None
        d_xd = (g_xa @ lora_a).view(ctx.shape) if need_xd else None
        return grad, d_xd, d_a, d_b, None


def _adapter_operands(layer: Any, x: torch.Tensor) -> tuple | None:
    """(A, B, dropout, scaling, dtype) of the one plain active adapter, A and B in the dtype the matmuls
    run in; None where PEFT's forward must run."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in layer.lora_variant:
        return None
    device = x.device.type
    autocast = torch.is_autocast_enabled(device)
    dtype = torch.get_autocast_dtype(device) if autocast else x.dtype
    lora_a, lora_b = layer.lora_A[name].weight, layer.lora_B[name].weight
    if x.dtype != dtype or (lora_a.dtype != dtype and not autocast):
        return None  # outside autocast PEFT runs the update in the adapter's dtype: keep its numbers
    return lora_a.to(dtype), lora_b.to(dtype), layer.lora_dropout[name], layer.scaling[name], dtype


def _dropped(layer: nn.Module, dropout: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    return None if isinstance(dropout, nn.Identity) or not layer.training else dropout(x)


class FusedLoraLinear(LoraLinear):
    """PEFT's LoRA Linear; its plain case runs as one `LoraMatmul`."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, **kwargs: Any) -> None:
        kwargs.pop("parameter_name", None)  # only PEFT's own dispatch wraps parameters
        super().__init__(base_layer, adapter_name, **kwargs)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = None if args or kwargs else _adapter_operands(self, x)
        base = self.get_base_layer()
        if adapter is None or type(base) is not nn.Linear or base.weight.dtype != adapter[-1] \
                or base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
            return super().forward(x, *args, **kwargs)
        lora_a, lora_b, dropout, scaling, dtype = adapter
        bias = None if base.bias is None else base.bias.to(dtype)
        return LoraMatmul.apply(x, _dropped(self, dropout, x), base.weight, bias, lora_a, lora_b, scaling)


@functools.cache
def fused_4bit_class() -> type:
    """PEFT's bitsandbytes 4-bit LoRA layer with the update added in place (needs bitsandbytes)."""
    from peft.tuners.lora.bnb import Linear4bit

    class FusedLora4bit(Linear4bit):
        keep_dequantized = False  # set per layer by `keep_dequantized`
        _kept: tuple | None = None  # (the 4-bit weight it was made from, its bf16 copy)

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            adapter = None if args or kwargs else _adapter_operands(self, x)
            if adapter is None:
                return super().forward(x, *args, **kwargs)
            lora_a, lora_b, dropout, scaling, dtype = adapter
            xd = _dropped(self, dropout, x)
            weight = self.dequantized(dtype) if self.keep_dequantized else None
            if weight is not None:
                bias = self.base_layer.bias
                return LoraMatmul.apply(x, xd, weight, None if bias is None else bias.to(dtype), lora_a, lora_b,
                                        scaling)
            y = self.base_layer(x)  # in x's dtype (bitsandbytes casts its output back)
            if y._is_view():  # an output modified in place must own its memory
                y = y.clone()
            return LoraUpdate.apply(y, x if xd is None else xd, lora_a, lora_b, scaling)

        def dequantized(self, dtype: torch.dtype) -> torch.Tensor | None:
            """The base weight as bitsandbytes dequantises it, made once and kept (not a buffer: never
            saved); made again if the 4-bit weight was replaced (a merge). None unless in `dtype`."""
            packed = self.base_layer.weight
            if self._kept is None or self._kept[0] is not packed:
                import bitsandbytes.functional as bnb_functional

                with torch.no_grad():
                    self._kept = packed, bnb_functional.dequantize_4bit(packed.data, packed.quant_state)
            kept = self._kept[1]
            return kept if kept.dtype == dtype else None

    return FusedLora4bit


def keep_dequantized(model: nn.Module, share: float) -> int:
    """Have `share` of the fused 4-bit LoRA layers, spread evenly, keep their dequantised weight; the
    number that do."""
    layers = [m for m in model.modules() if isinstance(m, fused_4bit_class())]
    flags = memory.spread_evenly(share, len(layers))
    for layer, flag in zip(layers, flags):
        layer.keep_dequantized = flag
        if not flag:
            layer._kept = None
    return sum(flags)


def register(config: LoraConfig, quantized: bool = False) -> LoraConfig:
    """Have PEFT build the fused layers: for bitsandbytes' 4-bit layers on a quantised base, else for
    plain nn.Linear. PEFT tries custom modules first and matches subclasses, and the 4-bit layers are
    nn.Linear subclasses: hence one mapping or the other, never both."""
    if quantized:
        import bitsandbytes as bnb

        config._register_custom_module({bnb.nn.Linear4bit: fused_4bit_class()})
    else:
        config._register_custom_module({nn.Linear: FusedLoraLinear})
    return config
