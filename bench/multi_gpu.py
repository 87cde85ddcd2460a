"""Training on two GPUs vs one, side by side in one call (nvidia-h200-x2), through `inhouse.train.sft.train`.

    python bench/multi_gpu.py --out $OUT --scratch /tmp          # the 8B runs below
    python bench/multi_gpu.py --smoke                             # tiny shape, checks the plumbing

Runs, each its own process group on the same random Llama-3.1-8B-shaped checkpoint and the same chat
file, 16 examples per optimizer step in every run (the same global batch):

- lora-1gpu: LoRA r16 on all linear layers, micro-batch 4 x accumulation 4, one process;
- lora-2gpu-ddp: the same under torchrun on two GPUs, micro-batch 4 x accumulation 2 per rank (DDP);
- full-2gpu-fsdp: full fine-tuning (fp32 master weights, bf16 autocast, AdamW) under FSDP2 on two
  GPUs, micro-batch 2 x accumulation 4 per rank, fewer steps: does it fit and run (its resumable
  checkpoint, ~96 GB, is skipped; the weights are gathered and published).

Reported: global non-padding tokens/s over the steps after `--warmup` (rank 0's clock, the Trainer's
token count summed over ranks), peak memory per GPU (max allocated, each rank), the loss of each
step, and the scaling of the DDP run over one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 1024**3
WORDS = ("order parcel refund lamp linen towel delivery tuesday invoice colour size wool cotton basket "
         "candle return exchange warranty courier tracking receipt discount voucher blanket cushion").split()
RUNS = {
    "lora-1gpu": dict(procs=1, method="lora", batch_size=4, gradient_accumulation=4),
    "lora-2gpu-ddp": dict(procs=2, method="lora", batch_size=4, gradient_accumulation=2),
    "full-2gpu-fsdp": dict(procs=2, method="full", batch_size=2, gradient_accumulation=4, learning_rate=1e-5),
    # Diagnostics of lora-1gpu's divergence on the H200 (NaN at step 2, twice), run with --only:
    "lora-1gpu-no-offload": dict(procs=1, method="lora", batch_size=4, gradient_accumulation=4,
                                 activation_offload=False),
    "lora-1gpu-accum2": dict(procs=1, method="lora", batch_size=8, gradient_accumulation=2),
    "lora-1gpu-no-liger": dict(procs=1, method="lora", batch_size=4, gradient_accumulation=4, liger=False),
}
DEFAULT_RUNS = ("lora-1gpu", "lora-2gpu-ddp", "full-2gpu-fsdp")


def chats(n: int, seed: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        question = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(20, 80)))
        answer = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(100, 300)))
        out.append({"messages": [{"role": "user", "content": f"Question {i}: {question}?"},
                                 {"role": "assistant", "content": f"{answer}."}]})
    return out


def save_checkpoint(size: str, folder: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from dpo_speed import save_checkpoint as save  # the same random 8B shape and padded byte tokenizer

    save(size, folder)


class Timer:
    """(seconds, global tokens seen) at each optimizer step's end, and each step's loss. With `no_checkpoint`,
    the Trainer's resumable checkpoint at the end is skipped (a full 8B one is ~96 GB with AdamW's state);
    the run still publishes its weights."""

    def __init__(self, no_checkpoint: bool = False):
        from transformers import TrainerCallback

        self.marks, self.losses, self.saved = [], [], False
        timer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                import torch

                torch.cuda.synchronize()
                timer.marks.append((time.perf_counter(), state.num_input_tokens_seen))
                if no_checkpoint:
                    control.should_save = False

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    timer.losses.append(logs["loss"])

            def on_save(self, args, state, control, **kwargs):
                timer.saved = True

        self.callback = Callback()


def child(name: str, folder: Path, data: Path, steps: int, warmup: int, out: Path) -> None:
    import torch

    from inhouse import recipe as recipe_mod
    from inhouse import world
    from inhouse.events import Events
    from inhouse.train.sft import train

    spec = {k: v for k, v in RUNS[name].items() if k != "procs"}
    recipe = recipe_mod.build(base_model=str(folder), train_file=data, validation_fraction=0, lora_r=16, lora_alpha=32,
                              lora_dropout=0.0, max_steps=steps, max_seq_length=4096, output_name=name, seed=0,
                              save_every=steps, warmup_ratio=0, **{"learning_rate": 1e-4, **spec})
    timer = Timer(no_checkpoint=spec["method"] == "full")
    train(recipe, events=Events(), callbacks=[timer.callback])
    here = world.current()
    (t0, n0), (t1, n1) = timer.marks[warmup - 1], timer.marks[-1]
    result = {"rank": here.rank, "peak_gib": torch.cuda.max_memory_allocated() / GIB}
    if here.is_main:
        result |= {"tokens_per_s": (n1 - n0) / (t1 - t0), "seconds_per_step": (t1 - t0) / (len(timer.marks) - warmup),
                   "losses": timer.losses, "timed_steps": len(timer.marks) - warmup}
    (out / f"{name}-rank{here.rank}.json").write_text(json.dumps(result))


def orchestrate(args) -> None:
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = "tiny" if args.smoke else "8b"
    report = {"device": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
              "size": size, "steps": args.steps, "warmup": args.warmup, "examples_per_step": 16, "results": []}
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        folder, data = Path(scratch) / "model", Path(scratch) / "chats.jsonl"
        clock = time.perf_counter()
        save_checkpoint(size, folder)
        print(f"saved random {size} checkpoint in {time.perf_counter() - clock:.0f} s", flush=True)
        data.write_text("".join(json.dumps(c) + "\n" for c in chats(16 * args.steps)))
        for name in args.only or DEFAULT_RUNS:
            procs, steps = RUNS[name]["procs"], (args.steps if RUNS[name]["method"] == "lora" else args.full_steps)
            launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                            f"--nproc_per_node={procs}"]
            clock = time.perf_counter()
            proc = subprocess.run([*launcher, __file__, "--child", name, "--folder", str(folder), "--data", str(data),
                                   "--steps", str(steps), "--warmup", str(args.warmup), "--result-dir", scratch],
                                  capture_output=True, text=True, env={**os.environ, "INHOUSE_HOME": f"{scratch}/home"})
            parts = sorted(Path(scratch).glob(f"{name}-rank*.json"))
            if proc.returncode != 0 or len(parts) != procs:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
                print(f"[{name}] FAILED:\n" + "\n".join(tail), flush=True)
                report["results"].append({"name": name, "error": tail[-1] if tail else "no output"})
                continue
            ranks = [json.loads(p.read_text()) for p in parts]
            main = next(r for r in ranks if r["rank"] == 0)
            report["results"].append({"name": name, "procs": procs, "steps": steps, **{k: v for k, v in main.items()
                                      if k not in ("rank", "peak_gib")}, "peak_gib_per_gpu": [r["peak_gib"] for r in ranks]})
            print(f"[{name}] done in {time.perf_counter() - clock:.0f} s", flush=True)
            (out / "multi_gpu.json").write_text(json.dumps(report, indent=2))
    print("\n" + table(report["results"]))
    (out / "multi_gpu.json").write_text(json.dumps(report, indent=2))


def table(results: list[dict]) -> str:
    rows = ["| run | processes | tokens/s | s/step | peak GiB per GPU | losses |", "|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['name']} | failed: {r['error'][:80]} | | | | |")
            continue
        rows.append(f"| {r['name']} | {r['procs']} | {r['tokens_per_s']:,.0f} | {r['seconds_per_step']:.2f} | "
                    f"{', '.join(f'{g:.1f}' for g in r['peak_gib_per_gpu'])} | "
                    f"{' '.join(f'{x:.4f}' for x in r['losses'])} |")
    one = next((r for r in results if r["name"] == "lora-1gpu" and "error" not in r), None)
    two = next((r for r in results if r["name"] == "lora-2gpu-ddp" and "error" not in r), None)
    if one and two:
        gap = max(abs(a - b) for a, b in zip(one["losses"], two["losses"]))
        rows.append(f"\nDDP on 2 GPUs / 1 GPU: {two['tokens_per_s'] / one['tokens_per_s']:.2f}x tokens/s; largest "
                    f"loss difference over {len(one['losses'])} steps: {gap:.4f}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps of the LoRA runs")
    parser.add_argument("--full-steps", type=int, default=4, help="optimizer steps of the FSDP full fine-tune")
    parser.add_argument("--warmup", type=int, default=2, help="steps excluded from timing")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", nargs="*", help=f"run only these ({', '.join(RUNS)})")
    parser.add_argument("--scratch", default=None, help="folder for the random checkpoint (~16 GB for 8B)")
    parser.add_argument("--child")
    parser.add_argument("--folder")
    parser.add_argument("--data")
    parser.add_argument("--result-dir", dest="result_dir")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.folder), Path(args.data), args.steps, args.warmup, Path(args.result_dir))
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
