"""What a 4-bit base costs per training step: bitsandbytes' NF4 matmul against bf16, projection by projection.

Run on a CUDA machine (seconds):

    python bench/dequant_cost.py --tokens 4800 --out results/

For each projection of the Llama-3.1-8B shape, with `tokens` rows (one packed micro-batch), it times the
forward matmul and the backward to the input (what a frozen base computes in a LoRA step) three ways:
bf16 weights (`F.linear`), bitsandbytes' `matmul_4bit` on the NF4 weight (double-quantised, as inhouse
loads QLoRA), and the NF4 weight dequantised once and kept (`F.linear` on the copy). It also times
`dequantize_4bit` alone. Sums over one decoder layer are scaled to the 32 layers: the milliseconds per step
a 4-bit base adds, and what keeping the dequantised weights would take back. Medians of `--repeats`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = {"q_proj": (4096, 4096), "k_proj": (1024, 4096), "v_proj": (1024, 4096), "o_proj": (4096, 4096),
          "gate_proj": (14336, 4096), "up_proj": (14336, 4096), "down_proj": (4096, 14336)}  # (out, in)
LAYERS = 32


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def forward_backward(linear, x: torch.Tensor, grad: torch.Tensor):
    """One forward and the backward to the input, as a frozen base layer runs in a LoRA step."""
    def step():
        y = linear(x)
        y.backward(grad)
    return step


def projection(name: str, out_f: int, in_f: int, tokens: int, repeats: int) -> dict:
    import bitsandbytes as bnb
    import bitsandbytes.functional as bf

    weight = torch.randn(out_f, in_f, device="cuda", dtype=torch.bfloat16) / in_f**0.5
    packed, state = bf.quantize_4bit(weight, quant_type="nf4", compress_statistics=True,
                                     quant_storage=torch.bfloat16)
    kept = bf.dequantize_4bit(packed, state)
    x = torch.randn(tokens, in_f, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(tokens, out_f, device="cuda", dtype=torch.bfloat16)
    nf4 = forward_backward(lambda a: bnb.matmul_4bit(a, packed.t(), quant_state=state), x, grad)
    same = (bnb.matmul_4bit(x, packed.t(), quant_state=state) - F.linear(x, kept)).abs().max().item()
    return {"projection": name, "shape": [out_f, in_f],
            "bf16_ms": median_ms(forward_backward(lambda a: F.linear(a, weight), x, grad), repeats),
            "nf4_ms": median_ms(nf4, repeats),
            "kept_ms": median_ms(forward_backward(lambda a: F.linear(a, kept), x, grad), repeats),
            "dequantize_ms": median_ms(lambda: bf.dequantize_4bit(packed, state), repeats),
            "max_abs_diff_nf4_vs_kept": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="*", default=[4800])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = parser.parse_args()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "runs": []}
    print("| tokens | bf16 ms/step | NF4 ms/step | NF4 kept ms/step | dequantize ms/step (x2 per step) | NF4 / bf16 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for tokens in args.tokens:
        rows = [projection(n, *s, tokens, args.repeats) for n, s in SHAPES.items()]
        total = {k: LAYERS * sum(r[k] for r in rows) for k in ("bf16_ms", "nf4_ms", "kept_ms", "dequantize_ms")}
        report["runs"].append({"tokens": tokens, "projections": rows, "per_step_ms": total})
        print(f"| {tokens} | {total['bf16_ms']:.1f} | {total['nf4_ms']:.1f} | {total['kept_ms']:.1f} | "
              f"{total['dequantize_ms']:.1f} | {total['nf4_ms'] / total['bf16_ms']:.2f} |", flush=True)
        print("  largest |NF4 - kept| over the projections: "
              f"{max(r['max_abs_diff_nf4_vs_kept'] for r in rows):.2e}", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "dequant_cost.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
