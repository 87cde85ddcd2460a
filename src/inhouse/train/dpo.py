"""Preference tuning (DPO) on TRL's DPOTrainer, through the same steps as supervised fine-tuning.

pairs -> SFT's mask pre-flight on both sides -> base model (LoRA, or QLoRA's 4-bit base; a fresh adapter
or a library one to start from) -> TRL's DPOTrainer on inhouse's encoded pairs -> validation loss and
reward accuracy before and after -> atomic publish into the adapter library (lineage kind "dpo").

The reference model is never a second copy of the base weights: TRL switches the adapter off
(`reference: base`), or keeps a frozen copy of the starting adapter's LoRA weights beside the trained one
(`reference: adapter`). TRL turns dropout off, so policy and reference see the same network
(lora_dropout does not apply). Run directory, checkpoints, events, best checkpoint, early stopping,
resume and publish are SFT's own (`inhouse.train.sft`).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedModel, PrinterCallback, TrainerCallback
from trl import DPOConfig, DPOTrainer

from inhouse.adapters import registry
from inhouse.adapters.load import base_of
from inhouse.data.preference import PreferencePair
from inhouse.errors import InvalidInputError
from inhouse.events import Events
from inhouse.model import load as model_load
from inhouse.recipe import Recipe
from inhouse.train import distributed
from inhouse.train.pair_source import read_pair_file
from inhouse.train.pairs import PairCollator, PairSet, as_rows, encode_pairs, preflight_pairs
from inhouse.train.progress import EventsCallback, FiniteLossGuard
from inhouse.train.rewards import REF_ADAPTER, score_pairs
from inhouse.train.sft import (TrainResult, attach_method, begin_run, check_length, describe_data, finish_run,
                               load_for_training, load_training_data, run_training, stopping_callbacks,
                               rank_events, trainer_settings)
from inhouse.train.speed import SpeedSteps, SpeedPlan, plan, prepare_model
from inhouse.train.tracking import tracking_env

SCORES = ("reward_accuracy", "reward_margin", "chosen_loss")  # kept before and after, beside the DPO loss


class InhouseDPOTrainer(SpeedSteps, DPOTrainer):
    """TRL's DPOTrainer fed pairs encoded by inhouse, with SFT's per-step speed contexts (activation offload,
    bf16 LoRA inputs) and reward scoring."""

    def __init__(self, *args, speed: SpeedPlan, **kwargs):
        super().__init__(*args, **kwargs)
        self.speed = speed

    def _prepare_dataset(self, dataset, *args, **kwargs):
        """The pairs arrive encoded with SFT's mask (`inhouse.train.pairs`). TRL 1.16 would tokenise them
        again with its own prompt/answer split (TRL's RewardTrainer passes tokenised data through; its
        DPOTrainer has no such switch yet), so preparation keeps them as they are."""
        return dataset

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        """TRL's evaluation (the DPO loss), plus reward accuracy, margin and chosen loss on the same batches."""
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        with self.compute_loss_context_manager():
            scores = score_pairs(self.model, dataloader, self.beta)
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.as_metrics().items()})
        return output


def train(recipe: Recipe, *, resume: bool = False, events: Events | None = None,
          callbacks: list[TrainerCallback] | None = None, origin: dict | None = None) -> TrainResult:
    """DPO on the recipe's preference files (train_file or train_files; validation_file, else a held-out share)."""
    mix = load_training_data(recipe, read_pair_file)
    return train_dpo(recipe, mix.train, mix.validation, resume=resume, events=events, callbacks=callbacks,
                     origin=origin, drawn=mix.drawn)


def train_dpo(recipe: Recipe, train_pairs: list[PreferencePair], val_pairs: list[PreferencePair], *,
              resume: bool = False, events: Events | None = None, callbacks: list[TrainerCallback] | None = None,
              origin: dict | None = None, drawn: list | None = None) -> TrainResult:
    """Preference-tune `recipe.base_model` on `train_pairs`; returns the published adapter.

    `val_pairs` give the validation loss and reward accuracy before and after (and pick the best
    checkpoint, as in SFT); `drawn` (the files' counts, from `load_mix`) joins the lineage.
    """
    events = rank_events(recipe, events)
    run = begin_run(with_adapter_template(recipe), resume, events)
    recipe = run.recipe
    start = starting_adapter(recipe)
    check_length(recipe, len(train_pairs))
    model, tokenizer, stop_ids = load_for_training(recipe, events)
    train_set, val_set = encode_for_training(train_pairs, val_pairs, tokenizer, stop_ids, recipe, events)
    speed = dpo_speed(recipe, model)
    events.say(f"speed: {speed.describe()}")
    model = policy_model(prepare_model(model, speed, fused_cross_entropy=False), recipe, start, speed)
    with tracking_env(recipe.tracking, run.run_dir):
        trainer = build_dpo_trainer(recipe, model, tokenizer, speed, train_set, val_set, run.run_dir,
                                    [EventsCallback(events), FiniteLossGuard(), *(callbacks or [])])
        metrics = run_training(trainer, run.resume_from, run.name, events, SCORES)
    drop_reference(trainer.model)  # the library gets the trained adapter alone
    return finish_run(run, trainer, metrics, speed, drawn=drawn, n_train=len(train_set.examples),
                      n_val=len(val_set.examples), origin=origin)


def encode_for_training(train_pairs: list[PreferencePair], val_pairs: list[PreferencePair], tokenizer,
                        stop_ids: set[int], recipe: Recipe, events: Events) -> tuple[PairSet, PairSet]:
    """SFT's mask pre-flight on both sides, then both sets encoded (pairs over max_seq_length dropped)."""
    preflight_pairs(train_pairs + val_pairs, tokenizer, stop_ids)
    events.say("mask: pre-flight passed on both sides (only each answer's assistant tokens and their "
               "end-of-turn token are scored)")
    train_set = encode_pairs(train_pairs, tokenizer, stop_ids, recipe.max_seq_length)
    val_set = encode_pairs(val_pairs, tokenizer, stop_ids, recipe.max_seq_length)
    describe_data(train_set, val_set, events)
    return train_set, val_set


def with_adapter_template(recipe: Recipe) -> Recipe:
    """A run from a library adapter renders chats with the template that adapter was trained on (saved
    beside it), unless the recipe names one."""
    if recipe.init_adapter is None or recipe.chat_template:
        return recipe
    saved = registry.resolve(recipe.init_adapter) / "chat_template.jinja"
    return recipe.model_copy(update={"chat_template": str(saved)}) if saved.is_file() else recipe


def starting_adapter(recipe: Recipe) -> Path | None:
    """The library adapter DPO starts from, checked before the model loads: a LoRA adapter of this base."""
    if recipe.init_adapter is None:
        return None
    path = registry.resolve(recipe.init_adapter)
    if not (path / "adapter_config.json").is_file():
        raise InvalidInputError(f"init_adapter {recipe.init_adapter!r} is a full model, not a LoRA adapter; "
                                "start DPO from a LoRA or QLoRA adapter")
    base = model_load.resolve(base_of(path))
    if base != recipe.base_model:
        raise InvalidInputError(f"init_adapter {recipe.init_adapter!r} was trained on {base}, not on base_model "
                                f"{recipe.base_model}; set base_model: {base}")
    return path


def dpo_speed(recipe: Recipe, model: PreTrainedModel) -> SpeedPlan:
    """SFT's speed plan without packing: TRL's DPOTrainer pads its chosen and rejected rows (its
    padding-free path is switched off in TRL 1.16), and varlen attention needs packed rows."""
    if recipe.packing:
        raise InvalidInputError("packing: method dpo trains on padded rows (TRL's DPOTrainer has no padding-free "
                                "path yet); set packing: false")
    if recipe.attention == "varlen":
        raise InvalidInputError("attention: varlen needs packed rows, which method dpo does not use; "
                                "use attention: auto or sdpa")
    return plan(recipe.model_copy(update={"packing": False}), model)


def policy_model(model: PreTrainedModel, recipe: Recipe, start: Path | None, speed: SpeedPlan):
    """The adapter DPO trains: a fresh LoRA as SFT attaches it, or the starting library adapter, trainable;
    in the speed plan's layers either way."""
    return attach_method(model, recipe, speed.fused_lora, speed.dequantized_fraction, start)


def dpo_config(recipe: Recipe, speed: SpeedPlan, run_dir: Path, n_train: int, has_val: bool,
               model=None) -> DPOConfig:
    """SFT's Trainer arguments plus DPO's. Checkpointing and offload stay the speed plan's (applied to the
    model as in SFT), so TRL's own switches for them are off."""
    return distributed.one_device_per_process(DPOConfig(
        **trainer_settings(recipe, speed, run_dir, n_train, has_val, model), beta=recipe.dpo_beta,
        loss_type=[recipe.dpo_loss], max_length=None, activation_offloading=False, **trainer_checkpointing_off()))


def trainer_checkpointing_off() -> dict:
    """The Trainer's own checkpointing off (TRL turns it on by default), non-reentrant where TRL toggles
    the model's around its reference pass; transformers 5.2x renamed these fields."""
    renamed = "activation_checkpointing" in {f.name for f in fields(DPOConfig)}
    prefix = "activation" if renamed else "gradient"
    return {f"{prefix}_checkpointing": False, f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}}


def build_dpo_trainer(recipe: Recipe, model, tokenizer, speed: SpeedPlan, train_set: PairSet, val_set: PairSet,
                      run_dir: Path, callbacks: list[TrainerCallback]) -> InhouseDPOTrainer:
    has_val = bool(val_set.examples)
    trainer = InhouseDPOTrainer(
        model=model,
        args=dpo_config(recipe, speed, run_dir, len(train_set.examples), has_val, model),
        train_dataset=Dataset.from_list(as_rows(train_set.examples)),
        eval_dataset=Dataset.from_list(as_rows(val_set.examples)) if has_val else None,
        data_collator=PairCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[*callbacks, *stopping_callbacks(recipe, has_val)],
        speed=speed,
    )
    trainer.remove_callback(PrinterCallback)  # our bar shows the same, on one line
    if recipe.reference == "base":
        drop_reference(trainer.model)
    return trainer


def drop_reference(model) -> None:
    """Remove the frozen copy TRL keeps of a starting adapter: without it TRL's reference is the base
    (every adapter off), and a published folder holds the trained adapter alone."""
    if REF_ADAPTER in getattr(model, "peft_config", {}):
        model.delete_adapter(REF_ADAPTER)
