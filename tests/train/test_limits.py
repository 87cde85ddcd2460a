"""Nothing blocks forever: absurd recipe values are refused by validation, kernels the machine cannot run
are refused by the speed plan, both before any training starts."""


import pytest
import torch
from helpers import chat, run_cli, write_jsonl

from inhouse import recipe as recipe_mod
from inhouse.data.prepare_config import PrepareConfig
from inhouse.errors import InhouseError
from inhouse.eval.config import EvalConfig
from inhouse.events import Events
from inhouse.generation import GenerationConfig
from inhouse.model import tiny
from inhouse.train import sft
from inhouse.train.sft import train
from inhouse.train.speed import plan

ABSURD = {"max_steps": 10**23, "gradient_accumulation": 10**9, "batch_size": 10**9, "epochs": 1e12,
          "lora_r": 10**9, "lora_alpha": 10**9, "max_seq_length": 10**12, "eval_every": 10**18,
          "early_stopping_patience": 10**12, "learning_rate": 1e6, "weight_decay": 1e3, "seed": 10**23}


@pytest.mark.parametrize("field", ABSURD)
def test_an_absurd_recipe_value_is_refused_naming_its_flag(field):
    with pytest.raises(InhouseError, match="^--" + field.replace("_", "-") + ": "):
        recipe_mod.build(**{field: ABSURD[field]})


def test_an_absurd_value_in_a_recipe_file_names_the_file_and_field(tmp_path):
    (tmp_path / "r.yaml").write_text("epochs: 1.0e+12\nbatch_size: 1000000000\n")
    with pytest.raises(InhouseError, match=r"r\.yaml: .*epochs: Input should be less than or equal to 1000"):
        recipe_mod.build(tmp_path / "r.yaml")


def test_a_training_file_weight_is_bounded():
    with pytest.raises(InhouseError, match=r"--train-files\[0\]\.weight: .*less than or equal to 1000"):
        recipe_mod.build(train_files=["a.jsonl:1e9"])


def test_the_limits_are_in_the_help_text():
    code, out, _ = run_cli("train", "--help", env={"COLUMNS": "400"})
    assert code == 0 and "At most 1,000,000." in out and "At most 1,024." in out


@pytest.mark.parametrize("config, values", [
    (EvalConfig, {"data": "x.jsonl", "batch_size": 10**9}),
    (GenerationConfig, {"seed": 10**23}),
    (GenerationConfig, {"max_new_tokens": 10**9}),
    (PrepareConfig, {"upsample_to": 10**12}),
    (PrepareConfig, {"max_seq_length": 10**12}),
])
def test_other_configs_bound_their_numbers_too(config, values):
    with pytest.raises(InhouseError, match="less than or equal to"):
        recipe_mod.build_config(config, **values)


def test_epochs_times_data_past_the_step_limit_is_refused_before_the_model_loads(tmp_path, home, monkeypatch):
    monkeypatch.setattr(sft, "load_base", lambda recipe: pytest.fail("the model must not be loaded"))
    data = write_jsonl(tmp_path / "d.jsonl", [chat(f"q{i}?", f"a{i}.") for i in range(2000)])
    recipe = recipe_mod.build(train_file=data, epochs=1000, batch_size=1, validation_fraction=0)
    with pytest.raises(InhouseError, match=r"^--epochs: 1000 epochs of 2,000 examples .* 2,000,000 optimizer steps"):
        train(recipe, events=Events())  # load_base fails the test if reached: refused before loading


cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a CPU-only machine refuses")


@cpu_only
@pytest.mark.parametrize("kind", ["flex", "varlen"])
@pytest.mark.parametrize("packing", [False, True])
def test_a_gpu_only_attention_kernel_is_refused_by_the_plan_on_cpu(kind, packing):
    model, _ = tiny.build(seed=0)
    with pytest.raises(InhouseError, match=f"^attention: {kind} needs a CUDA GPU") as err:
        plan(recipe_mod.build(attention=kind, packing=packing), model)
    assert "\n" not in str(err.value)


@cpu_only
def test_liger_is_refused_by_the_plan_on_cpu():
    model, _ = tiny.build(seed=0)
    with pytest.raises(InhouseError, match="^liger: .*set liger: false"):
        plan(recipe_mod.build(liger=True), model)


@cpu_only
@pytest.mark.parametrize("kind", ["auto", "sdpa", "eager"])
def test_the_kernels_the_plan_accepts_on_cpu_do_train(kind, tmp_path, tiny_dir, home):
    data = write_jsonl(tmp_path / "d.jsonl", [chat(f"q{i}?", f"a{i}.") for i in range(4)])
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=2,
                              attention=kind, packing=True, output_name=f"attn-{kind}")
    result = train(recipe, events=Events())
    assert result.metrics["steps"] == 2 and result.metrics["train_loss"] > 0
