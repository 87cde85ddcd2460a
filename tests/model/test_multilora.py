"""Per-row LoRA selection computes exactly what PEFT computes for each adapter alone (fp32, CPU)."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from inhouse.errors import InvalidInputError
from inhouse.model import tiny
from inhouse.model.multilora import MultiLora


def random_adapter(folder, seed, **kw):
    """A saved PEFT LoRA adapter with non-zero B (so it changes the output)."""
    model, _ = tiny.build(seed=0)
    torch.manual_seed(seed)
    config = LoraConfig(init_lora_weights=False, **{"r": 8, "lora_alpha": 16, "target_modules": "all-linear", **kw})
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": random_adapter(root / "a", 1),
        "b": random_adapter(root / "b", 2, r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"]),
        "c": random_adapter(root / "c", 3, r=16, use_rslora=True, alpha_pattern={"o_proj": 64}),
    }


def peft_logits(folder, ids):
    model, _ = tiny.build(seed=0)
    with torch.no_grad():
        return PeftModel.from_pretrained(model, folder).eval()(ids).logits


def test_each_row_matches_peft_with_that_adapter_alone(adapters):
    torch.manual_seed(0)
    ids = torch.randint(0, 256, (5, 12))
    model, _ = tiny.build(seed=0)
    lora = MultiLora(model.eval(), slots=4)
    for name, folder in adapters.items():
        lora.load(name, folder)
    rows = ["a", None, "b", "c", "a"]
    with torch.no_grad(), lora.use(rows):
        mixed = model(ids).logits
        base_model, _ = tiny.build(seed=0)
        base = base_model(ids).logits
    for i, name in enumerate(rows):
        expected = base[i] if name is None else peft_logits(adapters[name], ids[i:i + 1])[0]
        assert torch.allclose(mixed[i], expected, atol=1e-5, rtol=1e-5), name
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, base, atol=1e-6)  # outside `use`: the base, untouched


def test_unload_frees_the_slot_and_removes_the_effect(adapters):
    ids = torch.randint(0, 256, (1, 8))
    model, _ = tiny.build(seed=0)
    lora = MultiLora(model.eval(), slots=2)
    lora.load("a", adapters["a"])
    with pytest.raises(InvalidInputError, match="slots are in use"):
        lora.load("b", adapters["b"])
    lora.unload("a")
    lora.load("b", adapters["b"])
    with torch.no_grad(), lora.use(["b"]):
        assert torch.allclose(model(ids).logits, peft_logits(adapters["b"], ids), atol=1e-5)


def test_adapters_it_cannot_apply_per_row_are_refused(tmp_path):
    folder = random_adapter(tmp_path / "dora", 4, use_dora=True)
    model, _ = tiny.build(seed=0)
    with pytest.raises(InvalidInputError, match="use_dora"):
        MultiLora(model, slots=2).load("d", folder)
    folder = random_adapter(tmp_path / "emb", 5, target_modules=["embed_tokens", "q_proj"])
    with pytest.raises(InvalidInputError, match="merge"):
        MultiLora(model, slots=2).load("e", folder)
