"""The fine-tuning recipe: every field defined once, here.

YAML files, `inhouse train` flags (see `inhouse.cli_recipe`) and, later, the
HTTP API all read these definitions; a field's description is its help text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inhouse.errors import InhouseError

ConfigT = TypeVar("ConfigT", bound=BaseModel)

# Upper bounds: a value past these is a typo or a unit mistake, and running it would block for days
# or exhaust memory before failing; validation refuses it at once, naming the flag.
MAX_STEPS = 1_000_000  # optimizer steps of a run, however they are asked for (max_steps, or epochs x data)
MAX_EPOCHS = 1000
MAX_BATCH = 1024  # examples per micro-batch, and micro-batches per optimizer step
MAX_LORA_R = 1024
MAX_SEQ_LENGTH = 1_048_576  # 1M tokens: the longest context of any open model today
MAX_WEIGHT = 1000  # a training file's sampling factor
MAX_SEED = 2**32 - 1  # numpy's seed range (transformers' set_seed seeds numpy too)
MAX_DPO_BETA = 100.0  # beyond this the reference pins the model: nothing would be learned
MAX_DEVICES = 64  # processes on one machine (torchrun --nproc_per_node)
# The preference losses of TRL 1.16's DPOTrainer that need no further settings (exo_pair and robust need label
# smoothing, sft is no preference loss).
DPO_LOSSES = ("sigmoid", "ipo", "hinge", "nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired", "apo_zero",
              "apo_down", "discopop", "sigmoid_norm")


class TrainFile(BaseModel):
    """One file of a training mix. In a flag or a YAML string: `path`, `path:2` (weight) or
    `path:weight=0.5:max_examples=500`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: Path = Field(description="Training data file (relative paths: relative to the recipe).")
    weight: float = Field(1.0, gt=0, le=MAX_WEIGHT, description="Sampling factor: the file gives round(weight x n) training examples per epoch, n being its examples after max_examples and the validation hold-out: every example floor(weight) times, plus a seeded sample without repeats for the fraction (2 = each twice, 0.5 = a seeded half).")
    max_examples: int | None = Field(None, ge=1, description="Use at most this many examples of the file (a seeded sample, taken before the validation hold-out).")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return parse_train_file(str(value)) if isinstance(value, (str, Path)) else value


def parse_train_file(text: str) -> dict[str, Any]:
    """`a.jsonl:2:max_examples=500` -> {path: a.jsonl, weight: 2, max_examples: 500}; options are read from the
    right while they look like options, so a path may itself contain ':'."""
    parts, options = text.strip().split(":"), {}
    while len(parts) > 1 and (_is_number(parts[-1]) or "=" in parts[-1]):
        key, _, value = parts.pop().rpartition("=")
        options[key.strip() or "weight"] = value.strip()
    return {"path": ":".join(parts), **options}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class Recipe(BaseModel):
    """One fine-tuning run."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    base_model: str = Field("builtin:tiny", description="Base model: a local Hugging Face folder, a hub id, or builtin:tiny.")
    train_file: Path | None = Field(None, description="Training data: chat JSONL, Alpaca JSON/JSONL or prompt/completion JSONL.")
    train_files: list[TrainFile] | None = Field(None, description="Several training files mixed, instead of train_file: path[:weight][:max_examples=N] each (e.g. a.jsonl:2,b.jsonl:max_examples=500); in YAML also a list of {path, weight, max_examples}. weight = examples per epoch as a multiple of the file's (0.5 = a seeded half); max_examples = a seeded cap.")
    validation_file: Path | None = Field(None, description="Held-out data; when absent, validation_fraction of train_file is held out.")
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of the training data (of each file in train_files) held out for validation loss when no validation_file is given.")
    method: Literal["lora", "qlora", "full", "dpo"] = Field("lora", description="lora: train a small adapter; qlora: the same on a 4-bit NF4 base (CUDA); full: update every weight; dpo: preference tuning (DPO) of a LoRA adapter on chosen/rejected pairs.")
    dpo_beta: float = Field(0.1, gt=0, le=MAX_DPO_BETA, description="method dpo: how far the tuned model may drift from the reference (higher = stays closer); with dpo_loss ipo it is IPO's tau.")
    dpo_loss: Literal[DPO_LOSSES] = Field("sigmoid", description="method dpo: TRL's preference loss; sigmoid is DPO's own, ipo, hinge and the others are its published variants.")
    reference: Literal["base", "adapter"] = Field("base", description="method dpo: the model the preference is measured against; base = the base model (the adapter switched off), adapter = init_adapter's weights kept frozen. Neither holds a second copy of the base weights.")
    init_adapter: str | None = Field(None, description="method dpo: start from this library adapter (e.g. a supervised one; its LoRA settings replace the lora_* fields) instead of a fresh one.")
    dpo_qlora: bool = Field(False, description="method dpo: train on the base quantised to 4-bit NF4, as method qlora does (CUDA, bitsandbytes).")
    lora_r: int = Field(16, ge=1, le=MAX_LORA_R, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, le=4 * MAX_LORA_R, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    lora_target_modules: list[str] = Field(["all-linear"], description="Modules that get LoRA, comma-separated; all-linear = every linear layer but the output head.")
    epochs: float = Field(3.0, gt=0, le=MAX_EPOCHS, description="Passes over the training data.")
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field("cosine", description="Learning-rate schedule after warm-up.")
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0, description="Share of steps spent warming the learning rate up.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    batch_size: int = Field(4, ge=1, le=MAX_BATCH, description="Examples per micro-batch.")
    gradient_accumulation: int = Field(1, ge=1, le=MAX_BATCH, description="Micro-batches per optimizer step.")
    eval_every: int | None = Field(None, ge=1, le=MAX_STEPS, description="Validation loss every N optimizer steps (default: after each epoch, at most 10 times a run); the points feed the eval report's curves. With more than one, a checkpoint is kept at each and the one with the best validation loss is published.")
    save_every: int | None = Field(None, ge=1, le=MAX_STEPS, description="Optimizer steps between resumable checkpoints (default: a tenth of the run). When a best checkpoint is chosen by validation loss, one is kept at each validation point instead.")
    early_stopping_patience: int | None = Field(None, ge=1, le=MAX_STEPS, description="Stop training when the validation loss has not improved for this many evaluations in a row (needs validation data; none = never).")
    max_seq_length: int = Field(2048, ge=8, le=MAX_SEQ_LENGTH, description="Longest example in tokens; longer examples are dropped and reported.")
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "paged_adamw_8bit"] | None = Field(None, description="Optimizer (default: fused AdamW on a GPU, AdamW on CPU; paged_adamw_8bit needs bitsandbytes).")
    bf16: bool | None = Field(None, description="bf16 autocast (default: on where the GPU supports it).")
    gradient_checkpointing: bool | None = Field(None, description="Recompute activations in backward to save memory (default: for lora and qlora on a GPU, as checkpoint_fraction sizes it to the free memory; otherwise on for qlora and models over 2B parameters on a GPU).")
    checkpoint_fraction: float | None = Field(None, gt=0.0, le=1.0, description="Share of the decoder layers that gradient checkpointing recomputes, spread evenly; the others keep their activations on the GPU: faster, more memory. Default: for lora and qlora on a GPU (with Liger, not fsdp), as many as the GPU's free memory needs for the largest micro-batch the data can make, none where everything fits; all otherwise. Not below 1 with strategy fsdp.")
    activation_offload: bool | None = Field(None, description="Keep saved activations in pinned CPU memory, copied on a side stream (with checkpointing: only layer inputs; default: on a GPU when gradient checkpointing recomputes every layer and the memory estimate finds no room for their inputs, or cannot estimate: the copies cost 8-10% of an 8B step where they are not needed).")
    packing: bool | None = Field(None, description="Padding-free packing: a micro-batch is one row, positions restart per example, attention stays within each example (default: on a GPU).")
    attention: Literal["auto", "sdpa", "varlen", "flex", "eager"] = Field("auto", description="Attention kernel; auto = varlen flash attention for packed rows on a GPU, sdpa otherwise.")
    liger: bool | None = Field(None, description="Liger Kernel fused RMSNorm, RoPE, SwiGLU and linear cross-entropy (default: on a GPU when installed and the architecture is supported).")
    dequantized_fraction: float | None = Field(None, ge=0.0, le=1.0, description="QLoRA with fused_lora: share of the 4-bit LoRA layers that keep a bf16 copy of their frozen weight on the GPU, made once, instead of dequantising it in every forward and backward: the same numbers, faster, at the bf16 weight's memory. Default: on a GPU (with Liger, not fsdp), as many as the free memory holds with every layer recomputed (or the layers checkpointing is asked to recompute); then checkpoint_fraction is sized from what is left. 0 otherwise.")
    fused_lora: bool | None = Field(None, description="LoRA layers that add their low-rank update inside the base layer's matmul, forward and backward: the same math in fewer passes over the activations (default: on for LoRA and QLoRA with bf16 on a GPU; on a 4-bit base the update is added to bitsandbytes' output in place).")
    compile: bool = Field(False, description="torch.compile the model (CPU, or GPU without liger/varlen: that combination crashed inductor on an H100).")
    devices: int | None = Field(None, ge=1, le=MAX_DEVICES, description="GPUs to train on, one process each: above 1, inhouse train relaunches itself through torchrun (default: 1, or the process count of torchrun / accelerate launch when started by one).")
    strategy: Literal["auto", "ddp", "fsdp"] = Field("auto", description="How several processes share the work: ddp keeps a full copy of the model on each GPU, fsdp (FSDP2) shards weights, gradients and optimizer state across them; auto = fsdp for method full on GPUs, ddp otherwise (accelerate shards on GPUs only).")
    chat_template: str | None = Field(None, description="Override the model's chat template: chatml, llama3, or a path to a .jinja file.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Seed for the split, initialisation and data order.")
    output_name: str | None = Field(None, description="Name in the adapter library (default: <data file>-<timestamp>).")
    tracking: list[Literal["tensorboard", "mlflow", "wandb"]] = Field([], description="Experiment trackers the Trainer reports to (none = off): tensorboard writes to INHOUSE_HOME/runs/<name>/tensorboard, mlflow to a local store INHOUSE_HOME/mlruns unless MLFLOW_TRACKING_URI is set, wandb follows your own wandb settings.")

    @field_validator("lora_target_modules", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _one_way_to_name_training_data(self) -> Recipe:
        if self.train_file is not None and self.train_files is not None:
            raise ValueError("set train_file or train_files, not both (train_file is the one-file shorthand)")
        return self

    @model_validator(mode="after")
    def _dpo_fields_need_dpo(self) -> Recipe:
        """Settings only DPO reads would be ignored silently by any other method."""
        if self.method != "dpo" and (self.init_adapter or self.dpo_qlora or self.reference != "base"):
            raise ValueError("init_adapter, reference and dpo_qlora are settings of method dpo; set method: dpo "
                             "or remove them")
        if self.reference == "adapter" and not self.init_adapter:
            raise ValueError("reference: adapter needs init_adapter (the library adapter to start from and "
                             "measure against)")
        return self

    def quantized(self) -> bool:
        """Whether the base is loaded in 4-bit NF4: method qlora, or dpo with dpo_qlora."""
        return self.method == "qlora" or (self.method == "dpo" and self.dpo_qlora)

    def sources(self) -> list[TrainFile]:
        """The training files as a mix: train_file is a mix of one."""
        if self.train_files is not None:
            return list(self.train_files)
        return [TrainFile(path=self.train_file)] if self.train_file is not None else []

    @field_validator("tracking", mode="before")
    @classmethod
    def _trackers(cls, value: Any) -> Any:
        """`tensorboard,mlflow` or a list; `none` means no tracker."""
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            return value
        names = [str(v).strip() for v in items]
        return list(dict.fromkeys(n for n in names if n not in ("", "none")))

    @field_validator("output_name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "/\\:") or value.startswith(".")):
            raise ValueError("use letters, digits, '-', '_' or '.', not a path")
        return value


def describe_errors(exc: ValidationError, where: str | None, given: set[str] = frozenset(),
                    model: type[BaseModel] | None = None) -> str:
    """Pydantic's errors as one line. A value given as a flag (or keyword) is named as its flag,
    `--lora-r`; a value from a YAML file as `recipe.yaml: lora_r`."""
    from_file, from_flags = [], []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        msg = "unknown field (typo?)" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        if where and (not loc or loc[0] not in given):
            from_file.append(f"{'.'.join(loc) or 'recipe'}: {msg}")
        else:
            flag = flag_name(model, loc)
            from_flags.append(msg if msg.startswith(flag) else f"{flag}: {msg}")  # a validator may name it
    parts = ([f"{where}: " + "; ".join(from_file)] if from_file else []) + from_flags
    return "; ".join(parts)


def flag_name(model: type[BaseModel] | None, loc: list[str]) -> str:
    """The command-line flag of a field path (`--lora-r`); a nested config's fields are flags of their own,
    and a place inside a list-valued flag follows it (`--train-files[0].weight`)."""
    info, depth = None, 0
    for depth, part in enumerate(loc, 1):
        if model is None or part not in model.model_fields:
            depth -= 1
            break
        info = model.model_fields[part]
        sub = [a for a in (info.annotation, *getattr(info.annotation, "__args__", ())) if isinstance(a, type)]
        model = next((a for a in sub if issubclass(a, BaseModel)), None)
    if info is None:
        return "options" if not loc else "--" + loc[-1].replace("_", "-")
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    flag = "--" + str(extra.get("flag") or loc[depth - 1]).replace("_", "-")
    rest = loc[depth:]
    return flag + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest)


def load_yaml(path: str | Path, model: type[BaseModel] = Recipe) -> dict[str, Any]:
    """Read a recipe file into a dict, with file:line for syntax errors."""
    path = Path(path)
    data = _parse_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InhouseError(f"{path}: a recipe is a mapping of field: value, got {type(data).__name__}")
    if odd := [key for key in data if not isinstance(key, str)]:
        raise InhouseError(f"{path}: {odd[0]!r} is not a field name; a recipe's keys are names such as max_steps")
    return _resolve_paths(data, path.parent, model)


def _parse_yaml(path: Path) -> Any:
    """The file's YAML value; every way a file can fail to be one is an InhouseError naming it, in one line."""
    try:
        if not path.is_file():
            raise InhouseError(f"{path}: no such recipe file")
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InhouseError(f"{path}: not UTF-8 text; save the recipe as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())  # a reader error spans lines
        raise InhouseError(f"{path}{line}: invalid YAML: {what}") from None
    except RecursionError:
        raise InhouseError(f"{path}: nested too deeply to be a recipe") from None
    except OSError as exc:
        raise InhouseError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None


def _resolve_paths(data: dict[str, Any], base: Path, model: type[BaseModel]) -> dict[str, Any]:
    """Paths in a recipe are relative to the recipe file, not the shell; so is a model folder
    (`base_model: ./models/x`) when it exists there (a hub id such as org/name stays as it is)."""
    for key, info in model.model_fields.items():
        is_path = info.annotation is Path or Path in getattr(info.annotation, "__args__", ())
        if is_path and isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])
    for key, info in model.model_fields.items():
        if _is_file_list(info.annotation) and isinstance(data.get(key), list):
            data[key] = [_relative_to(item, base) for item in data[key]]
    model_ref = data.get("base_model")
    if isinstance(model_ref, str) and not Path(model_ref).is_absolute() and (base / model_ref).is_dir():
        data["base_model"] = str(base / model_ref)
    return data


def _is_file_list(annotation: Any) -> bool:
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return any(getattr(a, "__args__", None) == (TrainFile,) for a in args)


def _relative_to(item: Any, base: Path) -> Any:
    """One entry of a file list (`{path: ...}` or `path:weight`) with its path made relative to `base`."""
    entry = parse_train_file(item) if isinstance(item, str) else item
    if isinstance(entry, dict) and isinstance(entry.get("path"), str) and not Path(entry["path"]).is_absolute():
        entry = {**entry, "path": str(base / entry["path"])}
    return entry


def build_config(config_cls: type[ConfigT], file: str | Path | None = None, /, **overrides: Any) -> ConfigT:
    """Defaults < YAML file < explicit overrides (flags); None means 'not given'."""
    given = {k: v for k, v in overrides.items() if v is not None}
    values = merge(load_yaml(Path(file), config_cls) if file else {}, given)
    try:
        return config_cls(**values)
    except ValidationError as exc:
        raise InhouseError(describe_errors(exc, str(file) if file else None, set(given), config_cls)) from None


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, nested dicts merged key by key (a flag changes one field of a nested config)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build(file: str | Path | None = None, **overrides: Any) -> Recipe:
    """The fine-tuning recipe from defaults, a YAML file and flags."""
    return build_config(Recipe, file, **overrides)
