"""The model pool: one base, adapters attached on first use, the least recently used leaving first."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from inhouse.adapters.pool import ModelPool
from inhouse.errors import InvalidInputError
from inhouse.model import tiny


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    out = {}
    for i, name in enumerate("abc"):
        model, _ = tiny.build(seed=0)
        torch.manual_seed(10 + i)
        get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).save_pretrained(
            root / name)
        out[name] = root / name
    return out


def test_least_recently_used_adapter_leaves_first(folders):
    pool = ModelPool("builtin:tiny", max_adapters=2)
    pool.attach({"a": folders["a"]})
    pool.attach({"b": folders["b"]})
    pool.attach({"a": folders["a"]})  # a is now the most recent
    pool.attach({"c": folders["c"]})
    assert list(pool.loaded) == ["a", "c"]
    with pytest.raises(InvalidInputError, match="max-adapters"):
        pool.attach({n: folders[n] for n in "abc"})
    ids = torch.randint(0, 256, (3, 10))
    with torch.no_grad(), pool.select(["c", None, "a"]):
        mixed = pool.model(ids.to(pool.model.device)).logits
    for row, name in ((0, "c"), (2, "a")):
        base, _ = tiny.build(seed=0)
        with torch.no_grad():
            expected = PeftModel.from_pretrained(base, folders[name]).eval()(ids[row:row + 1]).logits[0]
        assert torch.allclose(mixed[row], expected, atol=1e-5)
    base, _ = tiny.build(seed=0)
    with torch.no_grad():
        assert torch.allclose(mixed[1], base(ids[1:2]).logits[0], atol=1e-5)


def test_a_name_that_now_means_another_folder_is_reloaded(folders):
    pool = ModelPool("builtin:tiny", max_adapters=2)
    pool.attach({"x": folders["a"]})
    pool.attach({"x": folders["b"]})
    ids = torch.randint(0, 256, (1, 6))
    base, _ = tiny.build(seed=0)
    with torch.no_grad(), pool.select(["x"]):
        got = pool.model(ids).logits
        expected = PeftModel.from_pretrained(base, folders["b"]).eval()(ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
