"""DPO speed and memory, side by side in one run: TRL's DPOTrainer as its docs configure it vs inhouse.

Run on a CUDA machine (one call):

    python bench/dpo_speed.py --out results/            # Llama-3.1-8B shape, random weights
    python bench/dpo_speed.py --smoke                    # tiny shape, checks the plumbing

Both runs read the same preference pairs from one file and train LoRA (r 16, alpha 32, every linear
projection) on the same random 8B checkpoint, 16 pairs per optimizer step, bf16, the reference being
the base with the adapter disabled. The tokenizer is byte-level (inhouse's builtin:tiny table) padded
with reserved tokens to Llama 3's 128,256 ids, so the model keeps its real shape without a download.

- "trl": `DPOTrainer(model, args=DPOConfig(...), train_dataset=..., processing_class=tok,
  peft_config=LoraConfig(...))` on the prompt/chosen/rejected text, TRL tokenising (its documented
  quick start plus the batch, step and LoRA settings shared with inhouse).
- "inhouse": `inhouse.train.sft.train(recipe)` with `method: dpo` on the same file in OpenAI's
  preference format: inhouse's template and mask, its speed plan (Liger layer kernels, checkpointing,
  offload on a GPU). Its resumable checkpoint (every 10% of a run by default, seconds each on 8B) is
  taken once, after the timed steps, as TRL's run saves none (`save_strategy="no"`).
- "inhouse-qlora": the same on the base quantised to 4-bit NF4 (`dpo_qlora: true`; needs bitsandbytes).

Each run is its own process (Liger patches transformers' classes; peak memory must not leak between
runs). Reported: non-padding tokens/s of the policy's chosen + rejected rows over the timed steps
(after `--warmup`), peak GPU memory (max allocated), and the last logged DPO loss.
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
PAIRS_PER_STEP = 16
# inhouse runs: the recipe's defaults, and the speed plan without activation offload.
RUNS = {"inhouse": {}, "inhouse-no-offload": {"activation_offload": False}, "inhouse-no-liger": {"liger": False},
        "inhouse-qlora": {"dpo_qlora": True}}
WORDS = ("order parcel refund lamp linen towel delivery tuesday invoice colour size wool cotton basket "
         "candle return exchange warranty courier tracking receipt discount voucher blanket cushion").split()


def pairs(n: int, seed: int = 0) -> list[dict]:
    """Polite vs curt answers of a few hundred characters, in OpenAI's preference format."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        question = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(20, 60))) + "?"
        body = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(60, 120)))
        out.append({"input": {"messages": [{"role": "user", "content": f"Question {i}: {question}"}]},
                    "preferred_output": [{"role": "assistant", "content": f"Thank you for asking! {body}. "
                                                                          "Happy to help further."}],
                    "non_preferred_output": [{"role": "assistant", "content": f"{body}."}]})
    return out


def model_config(size: str):
    from transformers import LlamaConfig

    common = dict(vocab_size=128256, num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5,
                  max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False)
    if size == "8b":
        return LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, head_dim=128, **common)
    return LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=2, head_dim=64, **common)


def tokenizer():
    from inhouse.model import tiny

    tok = tiny.build_tokenizer()
    tok.add_tokens([f"<|reserved_{i}|>" for i in range(128256 - len(tok))], special_tokens=True)
    return tok


def save_checkpoint(size: str, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(model_config(size), dtype=torch.bfloat16)
    tok = tokenizer()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


class Timer:
    """Tokens and time of the steps after warm-up, and the last loss, as a Trainer callback; with `profile`
    (a file), the kernels of the last warm-up step (not timed), as torch.profiler's table."""

    def __init__(self, warmup: int, profile: Path | None = None):
        from transformers import TrainerCallback

        self.warmup, self.marks, self.loss = warmup, [], None
        timer, profiler = self, None

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                nonlocal profiler
                if profile and state.global_step == warmup - 1:  # the last warm-up step: not timed
                    import torch

                    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                                  torch.profiler.ProfilerActivity.CUDA])
                    profiler.__enter__()

            def on_step_end(self, args, state, control, **kwargs):
                import torch

                nonlocal profiler
                if profiler is not None:
                    profiler.__exit__(None, None, None)
                    profile.write_text(profiler.key_averages().table(
                        sort_by="self_device_time_total", row_limit=40, max_name_column_width=70))
                    profiler = None
                torch.cuda.synchronize()
                timer.marks.append(time.perf_counter())

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    timer.loss = logs["loss"]

        self.callback = Callback()

    def seconds(self) -> float:
        return self.marks[-1] - self.marks[self.warmup - 1]


def trl_run(folder: Path, data: Path, steps: int, timer: Timer) -> int:
    """TRL's documented DPO quick start with PEFT, on the text pairs; returns tokens per step."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    text = Dataset.from_list([{"prompt": r["input"]["messages"], "chosen": r["preferred_output"],
                               "rejected": r["non_preferred_output"]} for r in rows])
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to("cuda")
    tok = AutoTokenizer.from_pretrained(folder)
    args = DPOConfig(output_dir=str(data.parent / "trl-run"), per_device_train_batch_size=4,
                     gradient_accumulation_steps=PAIRS_PER_STEP // 4, max_steps=steps, learning_rate=1e-5,
                     bf16=True, logging_steps=1, save_strategy="no", report_to="none", max_length=2048,
                     disable_tqdm=True)
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=text, processing_class=tok, peft_config=peft,
                         callbacks=[timer.callback])
    trainer.train()
    return tokens_per_step(rows, tok)


def inhouse_run(folder: Path, data: Path, steps: int, timer: Timer, name: str, **switches) -> int:
    from transformers import AutoTokenizer

    from inhouse import recipe as recipe_mod
    from inhouse.events import Events
    from inhouse.train.sft import train

    recipe = recipe_mod.build(base_model=str(folder), train_file=data, method="dpo", validation_fraction=0,
                              lora_r=16, lora_alpha=32, lora_dropout=0.0, lora_target_modules=["all-linear"],
                              batch_size=4, gradient_accumulation=PAIRS_PER_STEP // 4, max_steps=steps,
                              learning_rate=1e-5, max_seq_length=2048, output_name=name, seed=0,
                              save_every=steps, **switches)  # the one checkpoint after the last timed step
    train(recipe, events=Events(), callbacks=[timer.callback])
    return tokens_per_step([json.loads(line) for line in data.read_text().splitlines()],
                           AutoTokenizer.from_pretrained(folder))


def tokens_per_step(rows: list[dict], tok) -> int:
    """Mean non-padding tokens of one optimizer step: prompt + answer, both sides, 16 pairs."""
    def length(messages) -> int:
        return len(tok.apply_chat_template(messages, tokenize=True, return_dict=False))

    total = sum(length(r["input"]["messages"] + r["preferred_output"]) +
                length(r["input"]["messages"] + r["non_preferred_output"]) for r in rows)
    return round(total / len(rows) * PAIRS_PER_STEP)


def child(name: str, folder: Path, data: Path, steps: int, warmup: int, result: Path,
          profile: Path | None = None) -> None:
    import torch

    timer = Timer(warmup, profile)
    if name == "trl":
        per_step = trl_run(folder, data, steps, timer)
    else:
        per_step = inhouse_run(folder, data, steps, timer, name, **RUNS[name])
    timed = len(timer.marks) - warmup
    result.write_text(json.dumps({"name": name, "tokens_per_s": per_step * timed / timer.seconds(),
                                  "seconds_per_step": timer.seconds() / timed, "tokens_per_step": per_step,
                                  "peak_gib": torch.cuda.max_memory_allocated() / GIB, "last_loss": timer.loss,
                                  "timed_steps": timed}))


def orchestrate(args) -> None:
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = "tiny" if args.smoke else "8b"
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "size": size,
              "steps": args.steps, "warmup": args.warmup, "pairs_per_step": PAIRS_PER_STEP, "results": []}
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        folder, data = Path(scratch) / "model", Path(scratch) / "pairs.jsonl"
        clock = time.perf_counter()
        save_checkpoint(size, folder)
        print(f"saved random {size} checkpoint in {time.perf_counter() - clock:.0f} s", flush=True)
        data.write_text("".join(json.dumps(p) + "\n" for p in pairs(PAIRS_PER_STEP * args.steps)))
        for name in args.only or ("trl", "inhouse", "inhouse-no-offload"):
            result = Path(scratch) / f"{name}.json"
            clock = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--folder", str(folder), "--data",
                                   str(data), "--steps", str(args.steps), "--warmup", str(args.warmup),
                                   "--result", str(result),
                                   *(["--profile-file", str(out / f"profile-{name}.txt")] if args.profile else [])],
                                  capture_output=True, text=True,
                                  env={**os.environ, "INHOUSE_HOME": str(Path(scratch) / "home")})
            if proc.returncode != 0 or not result.exists():
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
                print(f"[{name}] FAILED:\n" + "\n".join(tail), flush=True)
                report["results"].append({"name": name, "error": tail[-1] if tail else "no output"})
                continue
            report["results"].append(json.loads(result.read_text()))
            print(f"[{name}] done in {time.perf_counter() - clock:.0f} s", flush=True)
            (out / "dpo_speed.json").write_text(json.dumps(report, indent=2))
    print("\n" + table(report["results"]))
    (out / "dpo_speed.json").write_text(json.dumps(report, indent=2))
    if any("error" in r for r in report["results"]):
        sys.exit(1)


def table(results: list[dict]) -> str:
    rows = ["| run | tokens/s | s/step | peak GiB | last loss |", "|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['name']} | failed: {r['error'][:60]} | | | |")
            continue
        rows.append(f"| {r['name']} | {r['tokens_per_s']:,.0f} | {r['seconds_per_step']:.2f} | {r['peak_gib']:.1f} | "
                    f"{r['last_loss'] if r['last_loss'] is None else round(r['last_loss'], 4)} |")
    base = next((r for r in results if r["name"] == "trl" and "error" not in r), None)
    ours = next((r for r in results if r["name"] == "inhouse" and "error" not in r), None)
    if base and ours:
        rows.append(f"\ninhouse / trl: {ours['tokens_per_s'] / base['tokens_per_s']:.2f}x tokens/s, "
                    f"{ours['peak_gib'] / base['peak_gib']:.2f}x peak memory")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run (16 pairs each)")
    parser.add_argument("--warmup", type=int, default=3, help="steps excluded from timing")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", nargs="*", help=f"run only these (trl, {', '.join(RUNS)})")
    parser.add_argument("--profile", action="store_true", help="write each run's CUDA kernel table for one timed "
                        "step to OUT/profile-RUN.txt")
    parser.add_argument("--scratch", default=None, help="folder for the random checkpoint (~16 GB for 8B)")
    parser.add_argument("--child")
    parser.add_argument("--folder")
    parser.add_argument("--data")
    parser.add_argument("--result")
    parser.add_argument("--profile-file", dest="profile_file")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.folder), Path(args.data), args.steps, args.warmup, Path(args.result),
              Path(args.profile_file) if args.profile_file else None)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
