"""The Trainer's per-step host work without waits or walks (inhouse.train.host_steps), counting the same."""

import torch
from helpers import chat, write_jsonl
from peft import LoraConfig, get_peft_model

from inhouse import recipe as recipe_mod
from inhouse.events import Events
from inhouse.model import tiny
from inhouse.train.host_steps import HostSteps
from inhouse.train.packing import PackedCollator
from inhouse.train.sft import train
from inhouse.train.speed import lora_input_casts, plan


class Base:
    """Stands in for the Trainer: counts how often its own versions run."""

    def __init__(self, world_size=1):
        self.args = type("Args", (), {"include_num_input_tokens_seen": "non_padding", "world_size": world_size})()
        self.state = type("State", (), {"num_input_tokens_seen": 0})()
        self.calls = {"tokens": 0, "flops": 0}
        self.model = torch.nn.Linear(2, 2)

    def _track_num_input_tokens(self, inputs):
        self.calls["tokens"] += 1

    def floating_point_ops(self, inputs):
        self.calls["flops"] += 1
        return 6 * inputs["input_ids"].numel() * 1000


class Steps(HostSteps, Base):
    pass


def packed(lengths):
    return PackedCollator()([{"input_ids": [3] * n, "labels": [3] * n} for n in lengths])


def test_a_packed_row_is_counted_from_its_shape_and_padded_batches_as_before():
    steps = Steps()
    steps._track_num_input_tokens(packed([3, 5]))
    steps._track_num_input_tokens(packed([4]))
    assert steps.state.num_input_tokens_seen == 12 and steps.calls["tokens"] == 0
    steps._track_num_input_tokens({"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3)})
    assert steps.calls["tokens"] == 1
    several = Steps(world_size=2)  # counts are gathered across processes: the Trainer's way
    several._track_num_input_tokens(packed([3]))
    assert several.calls["tokens"] == 1 and several.state.num_input_tokens_seen == 0


def test_the_parameters_for_total_flos_are_counted_once():
    steps = Steps()
    assert [steps.floating_point_ops(packed(n)) for n in ([3], [4, 5], [2])] == [6 * 3000, 6 * 9000, 6 * 2000]
    assert steps.calls["flops"] == 1


def test_lora_layers_are_found_once_per_model_and_their_casts_restored():
    steps = Steps()
    steps.model = get_peft_model(tiny.build()[0], LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    layers = steps.tuner_layers()
    assert len(layers) == 2 * steps.model.config.num_hidden_layers and steps.tuner_layers() is layers
    speed = plan(recipe_mod.build(bf16=True), steps.model)
    with lora_input_casts(speed, layers):
        assert not any(layer.cast_input_dtype_enabled for layer in layers)
    assert all(layer.cast_input_dtype_enabled for layer in layers)
    steps.model = get_peft_model(tiny.build()[0], LoraConfig(r=2, target_modules=["q_proj"]))
    assert len(steps.tuner_layers()) == steps.model.config.num_hidden_layers


def test_packed_and_padded_training_count_the_same_tokens(tmp_path, tiny_dir, home):
    rows = [chat(f"Where is order {100 + 7 * i}?" * (1 + i % 3), f"Order {100 + 7 * i} left.") for i in range(12)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    counted = {}
    for packing in (True, False):
        recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, batch_size=4,
                                  max_steps=3, packing=packing, output_name=f"count-{packing}")
        counted[packing] = train(recipe, events=Events()).metrics["trained_tokens"]
    assert counted[True] == counted[False] > 0, counted
