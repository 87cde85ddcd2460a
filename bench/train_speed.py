"""Training speed and memory, side by side in one run: the tutorial baseline vs inhouse.

Run on a CUDA machine (one call, a few minutes):

    python bench/train_speed.py --out results/          # all runs
    python bench/train_speed.py --smoke                  # tiny shapes, checks the plumbing
    python bench/train_speed.py --group default long     # the recipe's default targets, long context

Each run is a separate process (Liger patches transformers' classes, and peak
memory must not leak between runs). Every run sees the same examples in the same
order: 16 per optimizer step, as the baseline's micro-batch 4 x accumulation 4.
Before the first inhouse run of each model size an untimed run over the same steps
fills Triton's on-disk kernel cache (Liger's kernels specialise on the packed row's
length), as the first minutes of any real training run would.

Reported per run: non-padding tokens/s, peak GPU memory (max allocated), MFU, last-step loss.

MFU = model FLOPs of the timed steps / time / (bf16 matmul peak measured in this run), where the model
FLOPs are, per token, 4 x the frozen matmul weights (forward, and backward to the inputs; the output
head included, the embedding lookup not) + 6 x the LoRA weights (forward, input and weight gradients),
plus causal attention: 6 x layers x heads x head_dim x sum over examples of length^2 (QK^T and AV forward,
twice that backward). Recomputation by checkpointing is not counted: it is work, not model FLOPs.

Long-context runs (`seq_len`) train one example of that many tokens per step (batch of one), with
checkpointing and offload on; the runs beyond 32k find the longest sequence that trains on the GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import TrainerCallback

GIB = 1024**3
STEP_EXAMPLES = 16
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ALL = ("all-linear",)  # the recipe's default targets
RANK = 16
# The recipe's default targets at each shape (8B with checkpointing, as the recipe picks over 2B parameters).
LORA_8B_ALL = dict(size="8b", micro_batch=16, accumulation=1, checkpointing=True, targets=ALL)
QLORA_8B_ALL = dict(LORA_8B_ALL, method="qlora")
LORA_1B_ALL = dict(size="1b", micro_batch=16, accumulation=1, targets=ALL)
SIZED = dict(checkpointing=None, checkpoint_fraction=None)  # the recipe's default: sized to the free memory
LONG_32K = dict(micro_batch=1, seq_len=32 * 1024, steps=3, warmup=1)  # one 32k-token sequence a step


@dataclass(frozen=True)
class Spec:
    name: str
    size: str  # "1b" | "8b" | "tiny"
    baseline: bool = False
    method: str = "lora"
    micro_batch: int = 4
    accumulation: int = 4
    checkpointing: bool | None = False  # None: the recipe's default, sized to the GPU's free memory
    checkpoint_fraction: float | None = None  # share of the layers recomputed (None: the recipe's default)
    dequantized_fraction: float | None = None  # QLoRA: share of layers keeping bf16 weights (None: the default)
    liger: bool = True
    packing: bool = True
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    optimizer: str | None = None
    offload: bool | None = None  # None: the recipe's default (on with checkpointing on a GPU)
    compile: bool = False
    peft_casts: bool = False  # PEFT's float32 copies of LoRA inputs, as before bf16_lora_inputs
    peft_layers: bool = False  # PEFT's own LoRA layers, as before fused_lora
    fused: bool = False  # fused LoRA layers whatever the plan says (written when a 4-bit base had them off)
    seq_len: int | None = None  # long context: one example of this length per step
    gpu_gib: float | None = None  # a smaller GPU: all but this much memory is held by a block allocated first
    host_syncs: bool = False  # the Trainer's per-step host work as before inhouse.train.host_steps
    repeat_kv: bool = False  # key/value heads copied to the query heads' count, as before grouped varlen attention
    steps: int | None = None  # this run's own optimizer steps / untimed warm-up steps
    warmup: int | None = None

    def lora_targets(self) -> tuple[str, ...]:
        return PROJECTIONS if self.targets == ("all-linear",) else self.targets


def model_config(size: str):
    """Llama-3.2-1B and Llama-3.1-8B shapes from their published hyper-parameters."""
    from transformers import LlamaConfig

    common = dict(vocab_size=128256, num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5,
                  rope_theta=500000.0, max_position_embeddings=131072, bos_token_id=128000, eos_token_id=128001,
                  rope_scaling={"rope_type": "llama3", "factor": 32.0 if size == "1b" else 8.0,
                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192})
    if size == "1b":
        return LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, head_dim=64,
                           tie_word_embeddings=True, **common)
    if size == "8b":
        return LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, head_dim=128,
                           tie_word_embeddings=False, **common)
    return LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=2, head_dim=64,
                       tie_word_embeddings=False, **common)


def lengths(n: int, seed: int = 0) -> list[int]:
    """Instruction-tuning mix: log-normal, median ~250 tokens, tail clipped at 2,048."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.exp(torch.randn(n, generator=g) * 0.9 + math.log(250))
    return [int(min(2048, max(24, x))) for x in raw]


def examples(n: int, vocab: int, avoid: int, seed: int = 0, seq_len: int | None = None):
    """Random tokens; the first 20-60% of each example is prompt (not trained)."""
    from inhouse.model.template import IGNORE, Encoded

    g = torch.Generator().manual_seed(seed + 1)
    out = []
    for length in ([seq_len] * n if seq_len else lengths(n, seed)):
        ids = torch.randint(0, vocab - 1, (length,), generator=g)
        ids[ids == avoid] = avoid + 1
        prompt = int(length * (0.2 + 0.4 * torch.rand(1, generator=g).item()))
        labels = [IGNORE] * prompt + ids[prompt:].tolist()
        out.append(Encoded(ids.tolist(), labels))
    return out


def flops_per_token(size: str, targets: tuple[str, ...]) -> float:
    """Matmul model FLOPs per trained token (the formula in the module docstring), attention aside."""
    c = model_config(size)
    h, inner, q, kv = c.hidden_size, c.intermediate_size, c.num_attention_heads * c.head_dim, \
        c.num_key_value_heads * c.head_dim
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, inner),
              "up_proj": (h, inner), "down_proj": (inner, h)}
    frozen = c.num_hidden_layers * sum(a * b for a, b in shapes.values()) + h * c.vocab_size
    lora = c.num_hidden_layers * sum(RANK * (a + b) for name, (a, b) in shapes.items() if name in targets)
    return 4 * frozen + 6 * lora


def attention_flops(size: str, lengths_: list[int]) -> float:
    """Causal attention, forward and backward, over examples of these lengths."""
    c = model_config(size)
    return 6 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * sum(n * n for n in lengths_)


def timed_lengths(spec: Spec, steps: int, warmup: int, last: int) -> list[int]:
    """The lengths of the examples timed steps warmup+1..last draw from, as `examples` made them for a run
    of `steps` (a draw of another size gives other numbers)."""
    if spec.seq_len:
        return [spec.seq_len] * (last - warmup)
    return lengths(STEP_EXAMPLES * steps)[STEP_EXAMPLES * warmup:STEP_EXAMPLES * last]


def timed_flops(spec: Spec, tokens: int, lengths_: list[int]) -> float:
    """Model FLOPs of the timed steps: `tokens` is the Trainer's count; `lengths_` are the examples the timed
    steps draw from (the Trainer shuffles, so their attention is scaled to the tokens counted)."""
    attention = attention_flops(spec.size, lengths_) * tokens / sum(lengths_)
    return flops_per_token(spec.size, spec.lora_targets()) * tokens + attention


def matmul_peak() -> float:
    """bf16 dense matmul TFLOP/s on this GPU, measured now (8192^3, random data)."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * 8192**3 / sorted(times)[len(times) // 2] / 1e12


class StepTimer(TrainerCallback):
    """Times optimizer steps warmup+1..last with the GPU synchronised; profiles steps after that."""

    def __init__(self, warmup: int, last: int, profiler=None):
        self.warmup, self.last, self.profiler = warmup, last, profiler
        self.t0, self.tok0, self.marks, self.peak = None, 0, [], 0.0

    def on_step_end(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        now = time.perf_counter()
        if state.global_step == self.warmup:
            self.t0, self.tok0 = now, state.num_input_tokens_seen
            torch.cuda.reset_peak_memory_stats()
        if state.global_step <= self.last:
            self.marks.append((state.global_step, now, state.num_input_tokens_seen))
            self.peak = torch.cuda.max_memory_allocated()
        if state.global_step == self.last and self.profiler is not None:
            self.profiler.start()


def build_model(spec: Spec, folder: str | None):
    from transformers import AutoModelForCausalLM

    if spec.method == "qlora":
        from inhouse.model.quant import load_4bit

        return load_4bit(folder)
    torch.manual_seed(0)
    with torch.device("cuda"):
        return AutoModelForCausalLM.from_config(model_config(spec.size), dtype=torch.bfloat16)


def baseline_trainer(spec: Spec, model, data, steps: int, run_dir: str, timer):
    """What the usual tutorial does: Trainer + PEFT, dynamic padding, bf16."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from inhouse.train.dataset import PadCollator, TorchDataset

    model.config.use_cache = False
    if spec.checkpointing:
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=32, lora_dropout=0.0,
                                             target_modules=list(spec.lora_targets()), task_type="CAUSAL_LM"))
    args = TrainingArguments(output_dir=run_dir, per_device_train_batch_size=spec.micro_batch,
                             gradient_accumulation_steps=spec.accumulation, max_steps=steps, learning_rate=1e-4,
                             bf16=True, gradient_checkpointing=spec.checkpointing, logging_steps=1,
                             save_strategy="no", report_to="none", seed=0, data_seed=0,
                             include_num_input_tokens_seen="non_padding", remove_unused_columns=False,
                             disable_tqdm=True, warmup_steps=0, lr_scheduler_type="constant")
    return Trainer(model=model, args=args, train_dataset=TorchDataset(data), data_collator=PadCollator(0),
                   callbacks=[timer])


def inhouse_trainer(spec: Spec, model, data, steps: int, run_dir: str, timer):
    """inhouse's own path: the recipe's switches, prepare_model, attach_method, build_trainer."""
    from transformers.trainer_utils import SaveStrategy

    from inhouse import recipe as recipe_mod
    from inhouse.model import tiny
    from inhouse.train.dataset import EncodedSet
    from inhouse.train.sft import attach_method, build_trainer
    from inhouse.train.speed import plan, prepare_model

    recipe = recipe_mod.build(
        method=spec.method, lora_target_modules=list(spec.targets), lora_r=RANK, lora_alpha=32, lora_dropout=0.0,
        batch_size=spec.micro_batch, gradient_accumulation=spec.accumulation, max_steps=steps, learning_rate=1e-4,
        lr_scheduler="constant", warmup_ratio=0.0, seed=0, packing=spec.packing, liger=spec.liger,
        gradient_checkpointing=spec.checkpointing, checkpoint_fraction=spec.checkpoint_fraction,
        dequantized_fraction=spec.dequantized_fraction, activation_offload=spec.offload, optimizer=spec.optimizer,
        compile=spec.compile,
        max_seq_length=max(4096, spec.seq_len or 0))
    speed = plan(recipe, model, [len(e.input_ids) for e in data])
    if spec.peft_casts:
        speed = replace(speed, bf16_lora_inputs=False)
    if spec.peft_layers or spec.fused:
        speed = replace(speed, fused_lora=spec.fused)
    model = attach_method(prepare_model(model, speed), recipe, speed.fused_lora, speed.dequantized_fraction)
    trainer = build_trainer(recipe, model, tiny.build_tokenizer(), speed, EncodedSet(data, []), EncodedSet([], []),
                            Path(run_dir), [timer])
    trainer.args.save_strategy = SaveStrategy.NO
    if spec.host_syncs:
        host_work_as_before(trainer)
    print(f"[{spec.name}] speed plan: {speed.describe()}; fused LoRA layers: {fused_layers(model)}", flush=True)
    return trainer


def host_work_as_before(trainer) -> None:
    """The 'before' arm of the host pairs: the Trainer's own token count (a wait for the GPU) and parameter
    count, blocking batch copies, and the LoRA layers found by a walk over every module each step (PEFT's
    helper walked them twice)."""
    from types import MethodType

    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import Trainer

    trainer._track_num_input_tokens = MethodType(Trainer._track_num_input_tokens, trainer)
    trainer.floating_point_ops = MethodType(Trainer.floating_point_ops, trainer)
    trainer.accelerator.dataloader_config.non_blocking = False
    trainer.tuner_layers = lambda: [m for m in trainer.model.modules() if isinstance(m, BaseTunerLayer)]


def repeated_kv_heads() -> None:
    """The 'before' arm of the attention pairs: PyTorch's varlen_attn wrapped, in this child process only, so
    that it gets the key/value heads copied to the query heads' count (repeat_interleave), as inhouse passed
    them before (the signature check stays cached in both arms)."""
    import functools

    from torch.nn.attention import varlen

    native = varlen.varlen_attn

    @functools.wraps(native)
    def repeated(q, k, v, *args, enable_gqa=False, **kwargs):
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
        return native(q, k, v, *args, **kwargs)

    varlen.varlen_attn = repeated


def run(spec: Spec, steps: int, warmup: int, folder: str | None, profile: str | None = None) -> dict:
    from inhouse.model import tiny

    held = hold_memory(spec.gpu_gib)
    if spec.repeat_kv:
        repeated_kv_heads()
    model = build_model(spec, folder)
    params = sum(p.numel() for p in model.parameters())
    if spec.method == "qlora":  # 4-bit tensors count two weights per byte
        params = _unquantised_params(spec.size)
    per_step = 1 if spec.seq_len else STEP_EXAMPLES
    steps, warmup = spec.steps or steps, spec.warmup if spec.warmup is not None else warmup
    data = examples(per_step * steps, model.config.vocab_size, tiny.build_tokenizer().pad_token_id,
                    seq_len=spec.seq_len)
    profiler = _profiler(profile) if profile else None
    timer = StepTimer(warmup, steps, profiler)
    make = baseline_trainer if spec.baseline else inhouse_trainer
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = make(spec, model, data, steps + (2 if profile else 0), run_dir, timer)
        trainer.train()
    if profiler is not None:
        profiler.stop()
    last_step, t_end, tok_end = timer.marks[-1]
    tokens_per_s = (tok_end - timer.tok0) / (t_end - timer.t0)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e][:steps]
    flops = timed_flops(spec, tok_end - timer.tok0, timed_lengths(spec, steps, warmup, last_step))
    result = {"spec": asdict(spec), "params": params, "tokens_per_s": tokens_per_s,
              "fused_lora_layers": fused_layers(trainer.model), "checkpointed_layers": checkpointed(trainer.model),
              "dequantized_layers": dequantized_layers(trainer.model),
              "model_tflops_per_s": flops / (t_end - timer.t0) / 1e12,
              "peak_gib": (timer.peak - held.numel()) / GIB, "losses": losses, "last_loss": losses[-1],
              "timed_steps": last_step - warmup, "timed_tokens": tok_end - timer.tok0}
    if profiler is not None:
        result["profile"] = profiler.key_averages().table(sort_by="cuda_time_total", row_limit=25)
        result["gaps"] = idle_gaps(profiler, spec.name) | {"profiled": profile}
        print(result["profile"] + "\n" + json.dumps(result["gaps"], indent=2), flush=True)
    return result


def idle_gaps(profiler, name: str) -> dict:
    """Where the GPU idled in the 2 profiled steps (bench/gpu_gaps.py); the trace is kept, gzipped, in
    $TRACE_DIR (default: the temp folder)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import gpu_gaps

    trace = Path(os.environ.get("TRACE_DIR", tempfile.gettempdir())) / f"{name}.trace.json.gz"
    profiler.export_chrome_trace(str(trace))
    return gpu_gaps.summarise(gpu_gaps.load(str(trace)), steps=2)


def hold_memory(gib: float | None) -> torch.Tensor:
    """Hold all but `gib` GiB of the GPU, so that the plan sizes itself as on a smaller GPU (the block is not
    counted in the reported peak)."""
    total = torch.cuda.mem_get_info()[1]
    return torch.empty(0 if gib is None else max(0, total - int(gib * GIB)), dtype=torch.uint8, device="cuda")


def fused_layers(model) -> int:
    """How many LoRA layers run fused (inhouse.train.fused_lora's classes, the 4-bit one included): the
    proof that the switch reached the layers."""
    return sum(type(m).__name__.startswith("FusedLora") for m in model.modules())


def dequantized_layers(model) -> int:
    """How many 4-bit LoRA layers trained on their kept bf16 weight (made on the first forward)."""
    return sum(getattr(m, "_kept", None) is not None for m in model.modules())


def checkpointed(model) -> list[int]:
    """[decoder layers that recompute, decoder layers]: what the checkpointing plan reached."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    return [sum(bool(m.gradient_checkpointing) for m in layers), len(layers)]


def _profiler(kind: str):
    """"full": host ops and kernels; "gpu": kernels and their launches only, which barely slows the host,
    so its idle gaps are those of an unprofiled step."""
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if kind == "full" else []))


def _unquantised_params(size: str) -> int:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(model_config(size)).parameters())


def save_random_checkpoint(size: str, folder: str) -> None:
    """QLoRA must load through bitsandbytes from a folder: write the random bf16 model once."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(model_config(size), dtype=torch.bfloat16)
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()


def specs(smoke: bool) -> list[Spec]:
    if smoke:
        return [Spec("baseline-tiny", "tiny", baseline=True), Spec("inhouse-lora-tiny", "tiny", micro_batch=16,
                accumulation=1), Spec("inhouse-qlora-tiny", "tiny", method="qlora", micro_batch=16, accumulation=1,
                checkpointing=True), Spec("inhouse-lora-tiny-long", "tiny", micro_batch=1, accumulation=1,
                checkpointing=True, seq_len=8192, steps=3, warmup=1)]
    # The 8B pair runs twice, interleaved: "-again" against the first baseline shows the run-to-run spread.
    lora_8b = dict(size="8b", micro_batch=16, accumulation=1, checkpointing=True)
    short = [
        Spec("baseline-1b", "1b", baseline=True),
        Spec("inhouse-lora-1b", "1b", micro_batch=16, accumulation=1),
        Spec("inhouse-lora-1b-ckpt", "1b", micro_batch=16, accumulation=1, checkpointing=True),
        Spec("baseline-8b", "8b", baseline=True, checkpointing=True),
        Spec("inhouse-lora-8b", **lora_8b),
        Spec("inhouse-lora-8b-no-offload", **lora_8b, offload=False),
        Spec("baseline-8b-again", "8b", baseline=True, checkpointing=True),
        Spec("inhouse-lora-8b-again", **lora_8b),
        Spec("inhouse-qlora-8b", "8b", method="qlora", micro_batch=16, accumulation=1, checkpointing=True),
        Spec("inhouse-qlora-8b-paged8bit", "8b", method="qlora", micro_batch=16, accumulation=1,
             checkpointing=True, optimizer="paged_adamw_8bit"),
    ]
    return short + default_targets() + long_context()


def default_targets() -> list[Spec]:
    """The recipe's default: LoRA r16 on every linear layer ("-all"); "-peft-casts" puts back PEFT's float32
    copies of the LoRA inputs, as inhouse ran before bf16_lora_inputs."""
    return [
        Spec("baseline-1b-all", "1b", baseline=True, targets=ALL),
        Spec("inhouse-lora-1b-all", **LORA_1B_ALL),
        Spec("inhouse-lora-1b-all-peft-casts", **LORA_1B_ALL, peft_casts=True),
        Spec("inhouse-qlora-1b-all", **dict(LORA_1B_ALL, method="qlora", checkpointing=True)),
        Spec("baseline-8b-all", "8b", baseline=True, checkpointing=True, targets=ALL),
        Spec("inhouse-lora-8b-all", **LORA_8B_ALL),
        Spec("inhouse-lora-8b-all-peft-casts", **LORA_8B_ALL, peft_casts=True),
        Spec("baseline-8b-all-again", "8b", baseline=True, checkpointing=True, targets=ALL),
        Spec("inhouse-lora-8b-all-again", **LORA_8B_ALL),
        Spec("inhouse-qlora-8b-all", **QLORA_8B_ALL),
        Spec("inhouse-qlora-8b-all-peft-casts", **QLORA_8B_ALL, peft_casts=True),
    ]


def fused_pairs() -> list[Spec]:
    """Fused LoRA layers against PEFT's ("-peft-layers"), interleaved and repeated for the spread, on the
    recipe's default targets; then 8B LoRA at 32k tokens."""
    return [
        Spec("baseline-8b-all", "8b", baseline=True, checkpointing=True, targets=ALL),
        Spec("inhouse-lora-8b-all", **LORA_8B_ALL),
        Spec("inhouse-lora-8b-all-peft-layers", **LORA_8B_ALL, peft_layers=True),
        Spec("inhouse-lora-8b-all-again", **LORA_8B_ALL),
        Spec("inhouse-lora-8b-all-peft-layers-again", **LORA_8B_ALL, peft_layers=True),
        Spec("inhouse-qlora-8b-all-fused", **QLORA_8B_ALL, fused=True),
        Spec("inhouse-qlora-8b-all", **QLORA_8B_ALL),  # the plan's default: PEFT's 4-bit layers then, fused now
        Spec("inhouse-lora-1b-all", **LORA_1B_ALL),
        Spec("inhouse-lora-1b-all-peft-layers", **LORA_1B_ALL, peft_layers=True),
        *[s for s in long_context() if s.name == "inhouse-lora-8b-all-32k"],
    ]


def fused_ab() -> list[Spec]:
    """Fused against PEFT's layers only, alternating, three times at 8B and twice at 1B and 8B QLoRA: the
    pairs of `fused_pairs` differ by less than the spread of one run."""
    out = []
    for shape, repeats in ((LORA_8B_ALL, 3), (LORA_1B_ALL, 2), (QLORA_8B_ALL, 2)):
        for i in range(repeats):
            name = f"inhouse-{shape.get('method', 'lora')}-{shape['size']}-all-ab{i + 1}"
            out += [Spec(name, **shape, fused=True), Spec(f"{name}-peft-layers", **shape, peft_layers=True)]
    return out


def recompute() -> list[Spec]:
    """How much of the step is recompute: 8B LoRA and QLoRA on the default targets with every layer
    checkpointed (the default), half, a quarter, and none; the default and none again for the spread."""
    out = []
    for shape in (LORA_8B_ALL, QLORA_8B_ALL):
        name = f"inhouse-{shape.get('method', 'lora')}-8b-all"
        out += [Spec(name, **shape), Spec(f"{name}-ckpt50", **shape, checkpoint_fraction=0.5),
                Spec(f"{name}-ckpt25", **shape, checkpoint_fraction=0.25),
                Spec(f"{name}-no-ckpt", **dict(shape, checkpointing=False))]
    return out + [Spec("inhouse-lora-8b-all-again", **LORA_8B_ALL),
                  Spec("inhouse-lora-8b-all-no-ckpt-again", **dict(LORA_8B_ALL, checkpointing=False))]


def auto_checkpointing() -> list[Spec]:
    """The recipe's checkpointing default sized to the free memory (None) against every layer recomputed, at
    the 8B shapes above and at 32k tokens, where the estimate must leave enough layers recomputing."""
    auto, long = SIZED, LONG_32K
    return [Spec("inhouse-lora-8b-all-auto", **dict(LORA_8B_ALL, **auto)),
            Spec("inhouse-lora-8b-all", **LORA_8B_ALL),
            Spec("inhouse-qlora-8b-all-auto", **dict(QLORA_8B_ALL, **auto)),
            Spec("inhouse-qlora-8b-all", **QLORA_8B_ALL),
            Spec("inhouse-lora-8b-all-32k-auto", **dict(LORA_8B_ALL, **auto, **long)),
            Spec("inhouse-qlora-8b-all-32k-auto", **dict(QLORA_8B_ALL, **auto, **long))]


def dequantized() -> list[Spec]:
    """QLoRA keeping its dequantised weights (the default, sized to the free memory) against dequantising in
    every pass (dequantized_fraction 0, as before), with bf16 LoRA's default beside them, alternating twice;
    the three defaults at 32k tokens; the QLoRA pair again as on GPUs of 48 and 24 GiB."""
    lora, qlora, long = dict(LORA_8B_ALL, **SIZED), dict(QLORA_8B_ALL, **SIZED), LONG_32K
    out = []
    for i in (1, 2):
        out += [Spec(f"inhouse-lora-8b-all-auto-{i}", **lora), Spec(f"inhouse-qlora-8b-all-kept-{i}", **qlora),
                Spec(f"inhouse-qlora-8b-all-dequantizing-{i}", **qlora, dequantized_fraction=0.0)]
    out += [Spec("inhouse-lora-8b-all-32k-auto", **dict(lora, **long)),
            Spec("inhouse-qlora-8b-all-32k-kept", **dict(qlora, **long)),
            Spec("inhouse-qlora-8b-all-32k-dequantizing", **dict(qlora, **long), dequantized_fraction=0.0)]
    for gib, repeats in ((48, 2), (24, 1)):  # smaller GPUs, where the copies take room from activations
        for i in range(1, repeats + 1):
            out += [Spec(f"inhouse-qlora-8b-all-kept-{gib}g-{i}", **qlora, gpu_gib=gib),
                    Spec(f"inhouse-qlora-8b-all-dequantizing-{gib}g-{i}", **qlora, gpu_gib=gib,
                         dequantized_fraction=0.0)]
    return out


def offload() -> list[Spec]:
    """8B LoRA with every layer recomputed, the inputs offloaded or left on the GPU, alternating twice; then
    QLoRA as on a 24 GiB GPU, keeping weights with the inputs left on the GPU, against dequantizing."""
    qlora = dict(QLORA_8B_ALL, **SIZED, gpu_gib=24)
    out = []
    for i in (1, 2):
        out += [Spec(f"inhouse-lora-8b-all-offload-{i}", **LORA_8B_ALL, offload=True),
                Spec(f"inhouse-lora-8b-all-no-offload-{i}", **LORA_8B_ALL, offload=False)]
    return out + [Spec("inhouse-qlora-8b-all-kept-24g-no-offload", **qlora, offload=False),
                  Spec("inhouse-qlora-8b-all-dequantizing-24g-2", **qlora, dequantized_fraction=0.0)]


def host() -> list[Spec]:
    """The recipe's defaults with the per-step host work of inhouse.train.host_steps, against the Trainer's
    own (host_syncs), alternating: 8B LoRA twice, 1B LoRA twice, 8B QLoRA once."""
    out = []
    for name, shape, repeats in (("lora-8b", LORA_8B_ALL, 2), ("lora-1b", LORA_1B_ALL, 2),
                                 ("qlora-8b", QLORA_8B_ALL, 1)):
        for i in range(1, repeats + 1):
            out += [Spec(f"inhouse-{name}-all-host-{i}", **dict(shape, **SIZED)),
                    Spec(f"inhouse-{name}-all-syncs-{i}", **dict(shape, **SIZED), host_syncs=True)]
    return out


def gqa() -> list[Spec]:
    """8B LoRA's defaults with grouped varlen attention against key/value heads repeated (repeat_kv),
    alternating twice; then without checkpointing (the memory each layer keeps) and at 32k tokens."""
    lora, long = dict(LORA_8B_ALL, **SIZED), LONG_32K
    out = []
    for i in (1, 2):
        out += [Spec(f"inhouse-lora-8b-all-gqa-{i}", **lora), Spec(f"inhouse-lora-8b-all-repeat-kv-{i}", **lora,
                                                                   repeat_kv=True)]
    none = dict(LORA_8B_ALL, checkpointing=False)
    return out + [Spec("inhouse-lora-8b-all-no-ckpt-gqa", **none),
                  Spec("inhouse-lora-8b-all-no-ckpt-repeat-kv", **none, repeat_kv=True),
                  Spec("inhouse-lora-8b-all-32k-gqa", **dict(lora, **long)),
                  Spec("inhouse-lora-8b-all-32k-repeat-kv", **dict(lora, **long), repeat_kv=True)]


def defaults() -> list[Spec]:
    """The recipe's defaults as they stand, 8B LoRA and QLoRA alternating twice: QLoRA's ratio to LoRA."""
    return [Spec(f"inhouse-{method}-8b-all-default-{i}", **dict(shape, **SIZED))
            for i in (1, 2) for method, shape in (("lora", LORA_8B_ALL), ("qlora", QLORA_8B_ALL))]


def long_context() -> list[Spec]:
    """8B, one sequence per step, checkpointing and offload on; 64k and 128k (the model's context) probe
    the longest that trains, so they run two steps (one timed). Ordered so that a call cut short at its
    time limit has measured the common lengths first."""
    out = []
    for k in (8, 16, 32, 128, 64):
        for method in ("lora", "qlora"):
            out.append(Spec(f"inhouse-{method}-8b-all-{k}k", "8b", method=method, micro_batch=1, accumulation=1,
                            checkpointing=True, targets=ALL, seq_len=k * 1024, steps=3 if k <= 32 else 2,
                            warmup=1))
    return out


def table(results: list[dict], peak: float) -> str:
    base: dict[tuple, dict] = {}
    for r in results:  # the first baseline of each size and targets is the reference
        if r["spec"]["baseline"] and "error" not in r:
            base.setdefault(_group(r["spec"]), r)
    rows = ["| run | tokens/s | x baseline | peak GiB | x baseline | MFU | last loss | max abs loss diff vs baseline |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['spec']['name']} | failed: {r['error'][:80]} | | | | | | |")
            continue
        b = base.get(_group(r["spec"])) if not r["spec"].get("seq_len") else None
        mfu = r["model_tflops_per_s"] / peak
        speed = f"{r['tokens_per_s'] / b['tokens_per_s']:.2f}" if b else "-"
        mem = f"{r['peak_gib'] / b['peak_gib']:.2f}" if b else "-"
        diff = f"{max(abs(a - c) for a, c in zip(r['losses'], b['losses'])):.4f}" if b else "-"
        rows.append(f"| {r['spec']['name']} | {r['tokens_per_s']:,.0f} | {speed} | {r['peak_gib']:.1f} | {mem} | "
                    f"{mfu:.1%} | {r['last_loss']:.4f} | {diff} |")
    return "\n".join(rows)


def _group(spec: dict) -> tuple:
    return spec["size"], tuple(spec["targets"])


def orchestrate(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peak = matmul_peak()
    print(f"bf16 matmul peak: {peak:.0f} TFLOP/s ({torch.cuda.get_device_name()})", flush=True)
    results: list[dict] = []
    warmed: set[str] = set()
    report = {"device": torch.cuda.get_device_name(), "matmul_peak_tflops": peak, "torch": torch.__version__,
              "steps": args.steps, "warmup": args.warmup, "examples_per_step": STEP_EXAMPLES, "results": results}
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        folders: dict[str, str] = {}  # the saved random checkpoint QLoRA loads, one per size
        for spec in chosen(args):
            folder = folders.get(spec.size)
            if spec.method == "qlora" and folder is None:
                folder = folders[spec.size] = os.path.join(scratch, f"random-{spec.size}")
                clock = time.perf_counter()
                save_random_checkpoint(spec.size, folder)
                print(f"saved random {spec.size} checkpoint in {time.perf_counter() - clock:.0f} s", flush=True)
            if not spec.baseline and not spec.seq_len and spec.size not in warmed and not args.no_warm:
                warmed.add(spec.size)  # Triton kernels compile once per machine, not once per run
                run_child(replace(spec, name=f"{spec.name}-warmup"), args, folder, Path(scratch))
            results.append(run_child(spec, args, folder, Path(scratch)))
            if "error" not in results[-1]:
                r = results[-1]
                print(f"  {r['tokens_per_s']:,.0f} tokens/s, MFU {r['model_tflops_per_s'] / peak:.1%}, "
                      f"peak {r['peak_gib']:.1f} GiB", flush=True)
            report["results"] = results
            (out / "train_speed.json").write_text(json.dumps(report, indent=2))  # each run kept if a later one hangs
    print("\n" + table(results, peak))


def rescore(report: dict) -> dict:
    """A saved report's MFU recomputed with this file's FLOP count, from each run's timed tokens and
    tokens/s (the examples are regenerated: they depend only on the seed and the run's steps)."""
    for r in report["results"]:
        if "error" in r:
            continue
        spec = Spec(**{**r["spec"], "targets": tuple(r["spec"]["targets"])})
        steps = spec.steps or report["steps"]
        warmup = spec.warmup if spec.warmup is not None else report["warmup"]
        timed = timed_lengths(spec, steps, warmup, warmup + r.get("timed_steps", steps - warmup))
        seconds = r["timed_tokens"] / r["tokens_per_s"]
        r["model_tflops_per_s"] = timed_flops(spec, r["timed_tokens"], timed) / seconds / 1e12
    return report


GROUPS = {"short": lambda smoke: specs(smoke)[:10], "default": lambda smoke: default_targets(),
          "long": lambda smoke: long_context(), "fused": lambda smoke: fused_pairs(),
          "fused-ab": lambda smoke: fused_ab(), "recompute": lambda smoke: recompute(),
          "auto-ckpt": lambda smoke: auto_checkpointing(), "dequantized": lambda smoke: dequantized(),
          "offload": lambda smoke: offload(), "host": lambda smoke: host(), "gqa": lambda smoke: gqa(),
          "defaults": lambda smoke: defaults()}


def chosen(args) -> list[Spec]:
    """The runs this call makes: --group picks lists (in the order given), --only names within them."""
    pool = [spec for group in args.group for spec in GROUPS[group](args.smoke)] if args.group and not args.smoke \
        else specs(args.smoke)
    return [spec for spec in pool if not args.only or spec.name in args.only]


def run_child(spec: Spec, args, folder: str | None, scratch: Path) -> dict:
    """One run in its own process; its log is echoed only when it fails."""
    result_file = scratch / f"{spec.name}.json"
    cmd = [sys.executable, __file__, "--child", json.dumps(asdict(spec)), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--result", str(result_file)] + (["--folder", folder] if folder else []) \
        + (["--profile", *args.profile] if args.profile else []) \
        + (["--gpu-profile", *args.gpu_profile] if args.gpu_profile else [])
    clock = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not result_file.exists():
        lines = (proc.stdout + proc.stderr).strip().splitlines() or ["no output"]
        print(f"[{spec.name}] FAILED:\n" + "\n".join(lines[-25:]), flush=True)
        return {"spec": asdict(spec), "error": lines[-1]}
    print(f"[{spec.name}] done in {time.perf_counter() - clock:.0f} s", flush=True)
    return json.loads(result_file.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run (16 examples each)")
    parser.add_argument("--warmup", type=int, default=4, help="steps excluded from timing")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: check the plumbing quickly")
    parser.add_argument("--group", nargs="*", choices=sorted(GROUPS), help="run these lists only: short (q/v LoRA, "
                        "the first round), default (all-linear targets), long (long context), fused (fused LoRA layers "
                        "against PEFT's), fused-ab (the same, alternating), recompute (share of layers checkpointed), "
                        "auto-ckpt (the share sized to free memory), dequantized (QLoRA keeping its dequantised "
                        "weights), offload (offloaded inputs or not), host (the per-step host work of "
                        "inhouse.train.host_steps, or the Trainer's own), gqa (grouped varlen attention or repeated "
                        "key/value heads), defaults (8B LoRA and QLoRA as the recipe stands)")
    parser.add_argument("--only", nargs="*", help="run only these names")
    parser.add_argument("--profile", nargs="*", help="runs to profile for 2 extra steps after timing")
    parser.add_argument("--gpu-profile", nargs="*", help="runs to profile for 2 extra steps after timing, kernels "
                        "only (the GPU's idle time as unprofiled)")
    parser.add_argument("--no-warm", action="store_true", help="skip the untimed run that fills Triton's kernel "
                        "cache before the first inhouse run of each size")
    parser.add_argument("--scratch", default=None, help="folder for the random 8B checkpoint (needs ~16 GB)")
    parser.add_argument("--report", nargs="*", help="print the tables of saved train_speed JSON files (MFU "
                        "recomputed with this version's FLOP count) and run nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report:
        for name in args.report:
            report = rescore(json.loads(Path(name).read_text()))
            print(f"{name}: {report['device']}, bf16 matmul peak {report['matmul_peak_tflops']:.0f} TFLOP/s")
            print(table(report["results"], report["matmul_peak_tflops"]) + "\n")
    elif args.child:
        spec = Spec(**{**json.loads(args.child), "targets": tuple(json.loads(args.child)["targets"])})
        kind = "full" if spec.name in (args.profile or []) else "gpu" if spec.name in (args.gpu_profile or []) else None
        result = run(spec, args.steps, args.warmup, args.folder, kind)
        Path(args.result).write_text(json.dumps(result))
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
