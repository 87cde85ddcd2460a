"""Supervised fine-tuning: the one recipe behind `inhouse train`.

Reads like the journey: data -> model -> pre-flight mask check -> Trainer ->
validation loss before and after -> atomic publish into the adapter library.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from transformers import (EarlyStoppingCallback, PreTrainedModel, PrinterCallback, Trainer, TrainerCallback,
                          TrainingArguments)

from inhouse import paths, world
from inhouse.adapters import registry
from inhouse.adapters.lineage import Lineage, build_lineage
from inhouse.data.conversation import Conversation
from inhouse.data.formats import load_conversations
from inhouse.events import ConsoleEvents, Events, Stopped
from inhouse.errors import ConflictError, InhouseError, InvalidInputError, NotFoundError
from inhouse.model import load as model_load
from inhouse.model import quant
from inhouse.model.template import IGNORE, apply_template_choice, preflight, stop_token_ids
from inhouse.recipe import MAX_STEPS, Recipe
from inhouse.train import checkpoints, distributed, fused_lora
from inhouse.train.dataset import EncodedSet, PadCollator, TorchDataset, encode_all
from inhouse.train.mix import Mix, Reader, load_mix
from inhouse.train.packing import PackedCollator
from inhouse.train.progress import EventsCallback, FiniteLossGuard, NonFiniteLoss
from inhouse.train.speed import SpeedSteps, SpeedPlan, plan, prepare_model
from inhouse.train.tracking import TRACKING_DIR, check_installed, tracking_env

if TYPE_CHECKING:
    from inhouse.train.pairs import PairSet


@dataclass
class TrainResult:
    name: str
    path: Path
    metrics: dict[str, float | None]


def load_splits(recipe: Recipe) -> tuple[list[Conversation], list[Conversation]]:
    mix = load_training_data(recipe)
    return mix.train, mix.validation


def load_training_data(recipe: Recipe, read: Reader = load_conversations) -> Mix:
    if not recipe.sources():
        raise InvalidInputError("no training data: set train_file (or train_files) in the recipe, "
                                "or pass --train-file")
    return load_mix(recipe, read)


def attach_method(model: PreTrainedModel, recipe: Recipe, fused: bool = False,
                  keep_dequantized: float = 0.0, start: Path | None = None) -> PreTrainedModel:
    """Wrap the base model for the chosen method (LoRA adapter or all weights): a fresh adapter, or the saved
    one at `start`, trainable. `fused`: LoRA layers that add their update inside the base matmul
    (`inhouse.train.fused_lora`, the speed plan's), of which `keep_dequantized` (a share) keep a 4-bit base's
    weight dequantised; a saved adapter loads into them through the same registration."""
    if recipe.method == "full":
        return model
    config = lora_config(recipe) if start is None else PeftConfig.from_pretrained(str(start))
    if fused and isinstance(config, LoraConfig):
        fused_lora.register(config, recipe.quantized())
    if start is not None:
        model = PeftModel.from_pretrained(model, start, config=config, is_trainable=True)
    else:
        try:
            model = get_peft_model(model, config)
        except ValueError as exc:
            raise InvalidInputError(f"lora_target_modules {recipe.lora_target_modules}: {exc}") from None
    if fused and recipe.quantized():
        fused_lora.keep_dequantized(model, keep_dequantized)
    return model


def lora_config(recipe: Recipe) -> LoraConfig:
    targets = recipe.lora_target_modules
    return LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                      target_modules="all-linear" if targets == ["all-linear"] else targets, task_type="CAUSAL_LM")


MAX_DEFAULT_EVALS = 10


def step_counts(recipe: Recipe, n_train: int) -> tuple[int, int]:
    """(optimizer steps per epoch, steps in all)."""
    per_epoch = math.ceil(n_train / (recipe.batch_size * recipe.gradient_accumulation))
    return per_epoch, recipe.max_steps or math.ceil(per_epoch * recipe.epochs)


def check_length(recipe: Recipe, n_train: int) -> None:
    """max_steps is bounded by validation, but epochs x data is known only once the data is read: a run of
    more than MAX_STEPS steps would hold the machine for days, so it is refused before the model loads."""
    _, total = step_counts(recipe, n_train)
    if total > MAX_STEPS:
        raise InvalidInputError(f"--epochs: {recipe.epochs:g} epochs of {n_train:,} examples at "
                                f"{recipe.batch_size * recipe.gradient_accumulation} a step is {total:,} optimizer "
                                f"steps, over the limit of {MAX_STEPS:,}; lower epochs or set max_steps")


def picks_best(recipe: Recipe, n_train: int, has_val: bool) -> bool:
    """Whether the published weights are chosen by validation loss: only when there is a choice (validation
    data evaluated more than once) or early stopping asks for one; otherwise the last step is the result."""
    if not has_val:
        return False
    _, total = step_counts(recipe, n_train)
    return recipe.early_stopping_patience is not None or math.ceil(total / eval_interval(recipe, n_train)) > 1


def eval_interval(recipe: Recipe, n_train: int) -> int:
    """Steps between validation points: eval_every, else each epoch but at most 10 times a run (a run of
    500 short epochs must not evaluate and save a checkpoint 500 times)."""
    per_epoch, total = step_counts(recipe, n_train)
    return recipe.eval_every or max(per_epoch, math.ceil(total / MAX_DEFAULT_EVALS))


def checkpoint_args(recipe: Recipe, n_train: int, has_val: bool, best: bool) -> dict:
    """When to evaluate and save. Choosing the best checkpoint needs one saved at each evaluation (the
    Trainer keeps the best and the latest); otherwise one every save_every steps (default: every 10%) keeps
    the run resumable. Each costs seconds (adapter, optimizer state): a short run need not pay it each step."""
    _, total = step_counts(recipe, n_train)
    interval = eval_interval(recipe, n_train)
    evals = {"eval_strategy": "steps" if has_val else "no", "eval_steps": interval}
    if not best:
        return {**evals, "save_strategy": "steps", "save_steps": recipe.save_every or max(1, total // 10)}
    return {**evals, "save_strategy": "steps", "save_steps": interval,
            "load_best_model_at_end": True, "metric_for_best_model": "eval_loss", "greater_is_better": False,
            "restore_callback_states_from_checkpoint": True}  # the early-stopping count survives --resume


def training_args(recipe: Recipe, speed: SpeedPlan, run_dir: Path, n_train: int, has_val: bool,
                  model: PreTrainedModel | None = None) -> TrainingArguments:
    return distributed.one_device_per_process(TrainingArguments(**trainer_settings(recipe, speed, run_dir, n_train,
                                                                                  has_val, model)))


def trainer_settings(recipe: Recipe, speed: SpeedPlan, run_dir: Path, n_train: int, has_val: bool,
                     model: PreTrainedModel | None = None) -> dict:
    """The Trainer's arguments every method shares (a method's own config class adds its fields); with
    several processes, the strategy's (FSDP wraps `model`'s decoder layers)."""
    on_gpu = world.gpu()
    # Packed rows hold batch_size examples each: the same examples per step as padding would.
    return dict(
        output_dir=str(run_dir),
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps or -1,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_steps=recipe.warmup_ratio,  # a float below 1 is a ratio of all steps
        weight_decay=recipe.weight_decay,
        seed=recipe.seed,
        data_seed=recipe.seed,
        logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN loss must stop the run (FiniteLossGuard), not be averaged away
        **checkpoint_args(recipe, n_train, has_val, picks_best(recipe, n_train, has_val)),
        save_total_limit=1,
        bf16=speed.bf16,
        optim=speed.optimizer,
        torch_compile=speed.compile,
        use_cpu=not on_gpu,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        disable_tqdm=True,
        report_to=recipe.tracking or "none",
        run_name=recipe.output_name,
        dataloader_num_workers=0,
        # Batches go to the GPU from pinned memory without the host waiting for the copy (and so for every
        # kernel queued before it): inhouse.train.host_steps says why the host must not wait.
        accelerator_config={"non_blocking": on_gpu},
        **distributed.trainer_settings(recipe, layer_classes(model), speed.gradient_checkpointing),
    )


def layer_classes(model: PreTrainedModel | None) -> list[str]:
    """The blocks FSDP shards one by one: the classes transformers keeps whole when it splits a model."""
    base = getattr(model, "get_base_model", lambda: model)() if model is not None else None
    return list(getattr(base, "_no_split_modules", None) or [])


def run_dir_for(name: str, resume: bool) -> Path:
    """The run's folder, checked: --resume needs a complete checkpoint there, a new run needs none."""
    run_dir = paths.runs() / name
    has_checkpoint = checkpoints.last_complete(run_dir) is not None
    if resume and not has_checkpoint:
        raise NotFoundError(f"nothing to resume: no complete checkpoint of run {name!r} in {paths.runs()}"
                            f"{checkpoints.incomplete_note(run_dir)}")
    if not resume and has_checkpoint:
        raise ConflictError(f"an interrupted run {name!r} exists in {paths.runs()}; "
                           "pass --resume to continue it, or choose another output_name")
    if (registry.library() / name).exists():
        raise ConflictError(f"adapter {name!r} already exists in {registry.library()}; choose another output_name")
    return run_dir


def default_name(recipe: Recipe) -> str:
    stem = recipe.sources()[0].path.stem if recipe.sources() else "run"
    return f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def describe_data(train: EncodedSet | PairSet, val: EncodedSet | PairSet, events: Events) -> None:
    events.say(f"data: {len(train.examples)} training and {len(val.examples)} validation examples, "
               f"{train.tokens:,} training tokens")
    for where, n in (train.too_long + val.too_long)[:5]:
        events.log("warning", message=f"dropped {where}: {n} tokens is over max_seq_length")
    if len(train.too_long + val.too_long) > 5:
        events.log("warning", message=f"... and {len(train.too_long + val.too_long) - 5} more examples over "
                                      "max_seq_length")
    if not train.examples:
        raise InhouseError("no training example fits max_seq_length; raise it or shorten the data")


class InhouseTrainer(SpeedSteps, Trainer):
    """Trainer with the speed plan's per-step contexts (offload, bf16 LoRA inputs) and token accuracy."""

    def __init__(self, *args, speed: SpeedPlan, **kwargs):
        super().__init__(*args, **kwargs)
        self.speed = speed

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The loss, and the share of trained tokens predicted right (when the logits exist: Liger's
        fused loss never materialises them)."""
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        logits = getattr(outputs, "logits", None)
        if logits is not None and "labels" in inputs:
            counts = self.__dict__.setdefault("_accuracy", {"": [0, 0], "eval_": [0, 0]})
            right, total = token_hits(logits, inputs["labels"])
            bucket = counts["" if model.training else "eval_"]
            bucket[0], bucket[1] = bucket[0] + right, bucket[1] + total
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        for prefix, counts in getattr(self, "_accuracy", {}).items():
            if f"{prefix}loss" in logs and counts[1]:
                logs[f"{prefix}mean_token_accuracy"] = counts[0] / counts[1]
                counts[0] = counts[1] = 0
        super().log(logs, *args, **kwargs)


def token_hits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(right, trained) next-token predictions over the positions the loss covers."""
    predicted, target = logits[:, :-1].argmax(-1), labels[:, 1:]
    trained = target != IGNORE
    return int((predicted.eq(target) & trained).sum()), int(trained.sum())


def load_base(recipe: Recipe):
    """Base model in the dtype its method trains best in, and its tokenizer."""
    if recipe.quantized():
        return quant.load_4bit(recipe.base_model), model_load.load_tokenizer(recipe.base_model)
    # Full fine-tuning keeps fp32 master weights (bf16 autocast does the math on a GPU).
    return model_load.load(recipe.base_model, torch.float32 if recipe.method == "full" else None)


def stopping_callbacks(recipe: Recipe, has_val: bool) -> list[TrainerCallback]:
    """Early stopping on validation loss when the recipe asks for it; it needs validation data to watch."""
    if recipe.early_stopping_patience is None:
        return []
    if not has_val:
        raise InvalidInputError("early_stopping_patience needs validation data: set validation_file, or a "
                                "validation_fraction above 0 (with at least 2 training examples)")
    return [EarlyStoppingCallback(early_stopping_patience=recipe.early_stopping_patience)]


def build_trainer(recipe: Recipe, model, tokenizer, speed: SpeedPlan, train_set: EncodedSet, val_set: EncodedSet,
                  run_dir: Path, callbacks: list[TrainerCallback]) -> Trainer:
    trainer = InhouseTrainer(
        model=model,
        args=training_args(recipe, speed, run_dir, len(train_set.examples), bool(val_set.examples), model),
        train_dataset=TorchDataset(train_set.examples),
        eval_dataset=TorchDataset(val_set.examples) if val_set.examples else None,
        data_collator=PackedCollator() if speed.packing else PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[*callbacks, *stopping_callbacks(recipe, bool(val_set.examples))],
        speed=speed,
    )
    trainer.remove_callback(PrinterCallback)  # our bar shows the same, on one line
    return trainer


def run_training(trainer: Trainer, resume: Path | None, name: str, events: Events,
                 scores: tuple[str, ...] = ()) -> dict[str, float | None]:
    """Validation loss, training, validation loss; a Ctrl-C, a stop request or a non-finite loss publishes
    nothing (the first two keep the run's checkpoints for --resume). `scores` names further validation
    metrics the trainer's evaluation reports (DPO's reward accuracy), kept before and after like the loss."""
    try:
        return _train_and_measure(trainer, resume, events, scores)
    except KeyboardInterrupt:
        raise InhouseError(f"interrupted: nothing was published; continue with "
                           f"'inhouse train ... --output-name {name} --resume'") from None
    except NonFiniteLoss as e:
        discard_checkpoints(Path(trainer.args.output_dir))  # a diverged run is not worth resuming
        raise InhouseError(f"training diverged at step {e.step} (a loss or gradient norm became {e.loss}); "
                           "nothing was published. Lower learning_rate (or check the data) and train again") from None


def _train_and_measure(trainer: Trainer, resume: Path | None, events: Events,
                       scores: tuple[str, ...]) -> dict[str, float | None]:
    has_val = trainer.eval_dataset is not None
    before = validation(trainer.evaluate(), "eval", scores, events, "before") if has_val else {}
    clock = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - clock
    stopped = next((c.stopped_at for c in trainer.callback_handler.callbacks if isinstance(c, EventsCallback)), None)
    if stopped is not None:
        raise Stopped(f"training stopped on request at step {stopped}; nothing was published")
    chosen = published_checkpoint(trainer, events)
    after = validation(measure_published(trainer), "published", scores, events, "after") if has_val else {}
    return {
        "train_loss": _last_train_loss(trainer), "train_loss_mean": output.training_loss,
        "validation_loss_before": before.get("validation_loss"), "validation_loss": after.get("validation_loss"),
        **{f"{name}_before": before.get(name) for name in scores}, **{name: after.get(name) for name in scores},
        **chosen, "train_seconds": round(seconds, 2),
        "tokens_per_second": round(trainer.state.num_input_tokens_seen / max(seconds, 1e-9), 1),
        "steps": trainer.state.global_step, "trained_tokens": trainer.state.num_input_tokens_seen,
    }


def validation(evaluation: dict, prefix: str, scores: tuple[str, ...], events: Events, when: str) -> dict:
    """The validation loss and `scores` of one evaluation, said to the user."""
    found = {"validation_loss": evaluation[f"{prefix}_loss"], **{n: evaluation[f"{prefix}_{n}"] for n in scores}}
    events.say(f"{f'validation loss {when} training:':<32} {found['validation_loss']:.4f}"
               + "".join(f", {n.replace('_', ' ')} {found[n]:.4f}" for n in scores))
    return found


def published_checkpoint(trainer: Trainer, events: Events) -> dict:
    """Which step's weights the Trainer left in the model (the best checkpoint when it chose one), the
    best validation loss seen, and whether early stopping ended the run; an early stop is reported."""
    state = trainer.state
    best = state.best_model_checkpoint if trainer.args.load_best_model_at_end else None
    step = int(Path(best).name.rsplit("-", 1)[1]) if best else state.global_step
    stopper = next((c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)), None)
    early = stopper is not None and state.global_step < state.max_steps
    if early:
        events.log("early_stop", step=state.global_step, best_step=step, best_valid_loss=state.best_metric,
                   patience=stopper.early_stopping_patience)
    if best:
        events.say(f"publishing the checkpoint of step {step} (best validation loss {state.best_metric:.4f})")
    return {"published_step": step, "best_validation_loss": state.best_metric if best else None, "stopped_early": early}


def measure_published(trainer: Trainer) -> dict[str, float]:
    """Validation metrics of the weights about to be published. Logged as `published_loss`, not `eval_loss`:
    a second point at the last step would draw the best checkpoint's loss as if the last step had it."""
    trainer.remove_callback(EarlyStoppingCallback)  # training is over; this is no evaluation it should count
    return trainer.evaluate(metric_key_prefix="published")


def publish_result(model, tokenizer, name: str, lineage: Lineage, state: dict | None = None) -> Path:
    def write(folder: Path) -> None:
        model.save_pretrained(folder, **({"state_dict": state} if state is not None else {}))
        tokenizer.save_pretrained(folder)

    return registry.publish(name, write, lineage)


@dataclass
class Run:
    """One run's identity: its recipe (named, base resolved), its folder and where it resumes from."""

    recipe: Recipe
    name: str
    run_dir: Path
    resume_from: Path | None
    started: datetime


def begin_run(recipe: Recipe, resume: bool, events: Events) -> Run:
    """Name the run, claim its folder (clearing debris, or finding the checkpoint to resume) and check
    the trackers, before anything is loaded."""
    started = datetime.now(timezone.utc)
    name = world.broadcast_text(recipe.output_name or default_name(recipe))  # one name for every rank
    # The lineage records where the base really is: a folder as an absolute path, not as typed.
    recipe = recipe.model_copy(update={"output_name": name, "base_model": model_load.resolve(recipe.base_model)})
    if world.current().is_main:  # claims the folder and clears debris; the other ranks read the outcome
        run_dir = run_dir_for(name, resume)
        resume_from = checkpoints.settle(run_dir, events)  # None for a new run, which may only clear debris
    world.barrier()
    if not world.current().is_main:
        run_dir = paths.runs() / name
        resume_from = checkpoints.last_complete(run_dir) if resume else None
    check_installed(recipe.tracking)
    return Run(recipe, name, run_dir, resume_from, started)


def rank_events(recipe: Recipe, events: Events | None) -> Events:
    """Join the other processes of a multi-GPU run (checking it is the run asked for); only rank 0
    reports, the others stay silent."""
    distributed.join()
    distributed.check_world(recipe)
    if not world.current().is_main:
        return Events()
    return ConsoleEvents() if events is None else events


def load_for_training(recipe: Recipe, events: Events) -> tuple[PreTrainedModel, object, set[int]]:
    """The base model, its tokenizer with the recipe's chat template, and the ids that end a turn."""
    events.say(f"model: loading {recipe.base_model}")
    torch.manual_seed(recipe.seed)
    model, tokenizer = load_base(recipe)
    apply_template_choice(tokenizer, recipe.chat_template)
    return model, tokenizer, stop_token_ids(tokenizer, model.generation_config.eos_token_id)


def finish_run(run: Run, trainer: Trainer, metrics: dict, speed: SpeedPlan, *, drawn: list | None,
               n_train: int, n_val: int, origin: dict | None) -> TrainResult:
    """Lineage, atomic publish into the library, checkpoints discarded."""
    # Trainer.train() starts a fresh log, so the pre-training validation point is added back.
    before = [{"step": 0, **{f"eval_{k.removesuffix('_before').removeprefix('validation_')}": v
                             for k, v in metrics.items() if k.endswith("_before")}}] \
        if metrics.get("validation_loss_before") is not None else []
    lineage = build_lineage(run.recipe, run.name, metrics, before + trainer.state.log_history, run.started, drawn,
                            n_train=n_train, n_val=n_val)
    lineage.speed, lineage.origin = asdict(speed), origin or None
    # Under FSDP each rank holds a shard: gathering the full weights takes every rank; rank 0 writes them.
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped) if world.current().distributed else None
    path = registry.library() / run.name
    if world.current().is_main:
        path = publish_result(trainer.model, trainer.processing_class, run.name, lineage, state)
        discard_checkpoints(run.run_dir)
    world.barrier()
    return TrainResult(run.name, path, metrics)


def train(recipe: Recipe, *, resume: bool = False, events: Events | None = None,
          callbacks: list[TrainerCallback] | None = None, origin: dict | None = None) -> TrainResult:
    """Fine-tune `recipe.base_model` on `recipe.train_file`; returns the published adapter.

    Progress goes to `events` (the console by default); `events.should_stop()` ends training at the
    next step and publishes nothing. `origin` (e.g. the job that asked for the run) joins the lineage.
    method dpo runs preference tuning instead (inhouse.train.dpo), through the same steps.
    """
    events = rank_events(recipe, events)
    if recipe.method == "dpo":
        from inhouse.train import dpo

        return dpo.train(recipe, resume=resume, events=events, callbacks=callbacks, origin=origin)
    run = begin_run(recipe, resume, events)
    recipe = run.recipe
    mix = load_training_data(recipe)
    check_length(recipe, len(mix.train))

    model, tokenizer, stop_ids = load_for_training(recipe, events)
    preflight(mix.train + mix.validation, tokenizer, stop_ids)
    events.say("mask: pre-flight passed (only assistant tokens and their end-of-turn token are trained)")

    train_set = encode_all(mix.train, tokenizer, stop_ids, recipe.max_seq_length)
    val_set = encode_all(mix.validation, tokenizer, stop_ids, recipe.max_seq_length)
    describe_data(train_set, val_set, events)

    speed = plan(recipe, model, [len(e.input_ids) for e in train_set.examples])
    events.say(f"speed: {speed.describe()}")
    model = attach_method(prepare_model(model, speed), recipe, speed.fused_lora, speed.dequantized_fraction)
    with tracking_env(recipe.tracking, run.run_dir):
        trainer = build_trainer(recipe, model, tokenizer, speed, train_set, val_set, run.run_dir,
                                [EventsCallback(events), FiniteLossGuard(), *(callbacks or [])])
        metrics = run_training(trainer, run.resume_from, run.name, events)
    return finish_run(run, trainer, metrics, speed, drawn=mix.drawn, n_train=len(train_set.examples),
                      n_val=len(val_set.examples), origin=origin)


def discard_checkpoints(run_dir: Path) -> None:
    """Remove a finished run's checkpoints; its tracking logs (tensorboard/) stay for the user to read."""
    for item in run_dir.iterdir() if run_dir.is_dir() else []:
        if item.is_dir() and item.name != TRACKING_DIR:
            shutil.rmtree(item)
        elif item.is_file():
            item.unlink()
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


def _last_train_loss(trainer: Trainer) -> float | None:
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return losses[-1] if losses else None
