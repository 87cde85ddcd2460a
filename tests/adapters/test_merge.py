"""Merged == unmerged: the exported model computes what the adapter did."""

import torch
from helpers import chat, write_jsonl
from peft import PeftModel

from inhouse.events import Events
from inhouse import recipe as recipe_mod
from inhouse.adapters import registry
from inhouse.adapters.merge import merge, merged_model
from inhouse.adapters.load import load_chat_model
from inhouse.model.load import load_model
from inhouse.train.sft import train


def trained_adapter(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "d.jsonl", [chat("Best day?", "Tuesday."), chat("Colour?", "Blue.")])
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=30,
                              learning_rate=1e-2, lora_dropout=0, output_name="m")
    return train(recipe, events=Events()).path


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_merged_and_unmerged_outputs_agree(tmp_path, tiny_dir, home):
    path = trained_adapter(tmp_path, tiny_dir)
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    base = load_model(str(tiny_dir), torch.float32)
    with torch.no_grad():
        base_logits = base(ids).logits.clone()
        unmerged = PeftModel.from_pretrained(base, path).eval()
        reference = unmerged(ids).logits
        assert relative_error(base_logits, reference) > 1e-2  # the adapter really changes the model
        exact, _, _ = merged_model("m", torch.float32)
        assert torch.allclose(exact(ids).logits, reference, atol=1e-4, rtol=1e-4)
        half, _, _ = merged_model("m", torch.bfloat16)
        assert half.dtype == torch.bfloat16
        assert relative_error(half(ids).logits, reference) < 2e-2  # bf16 rounding only


def test_merge_publishes_a_model_that_answers_like_the_adapter(tmp_path, tiny_dir, home):
    trained_adapter(tmp_path, tiny_dir)
    out = merge("m", dtype=torch.float32)
    assert out == registry.library() / "m-merged"
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert registry.lineage(out).merged_from == "m"
    question = [{"role": "user", "content": "Best day?"}]
    assert load_chat_model("m-merged").reply(question, max_new_tokens=16) == \
        load_chat_model("m").reply(question, max_new_tokens=16) == "Tuesday."
