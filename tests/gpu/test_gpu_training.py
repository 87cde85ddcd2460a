"""GPU paths: varlen attention, Liger kernels, QLoRA, bf16 merge. Run on the device machine:

    python -m pytest -m gpu tests/gpu -q
"""

import contextlib
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import chat, write_jsonl

from inhouse.events import Events
from inhouse import recipe as recipe_mod
from inhouse.model import tiny
from inhouse.model.template import IGNORE
from inhouse.train.packing import PackedCollator
from inhouse.train.sft import train
from inhouse.train.speed import set_attention

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def items(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        length = 30 + 41 * k
        ids = torch.randint(0, 250, (length,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE] * 10 + ids[10:]})
    return out


def per_example(logits, labels, bounds):
    return torch.stack([F.cross_entropy(logits[0, a:b - 1].float(), labels[0, a + 1:b], ignore_index=IGNORE)
                        for a, b in bounds])


def test_varlen_attention_matches_unpacked_sdpa_per_example():
    model, _ = tiny.build(seed=1)
    model = model.cuda().to(torch.bfloat16).eval()
    batch = items()
    with torch.no_grad():
        set_attention(model, "sdpa")
        alone = torch.stack([per_example(model(input_ids=torch.tensor([b["input_ids"]]).cuda(), use_cache=False).logits,
                                         torch.tensor([b["labels"]]).cuda(), [(0, len(b["input_ids"]))])[0]
                             for b in batch])
        set_attention(model, "varlen")
        packed = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in PackedCollator()(batch).items()}
        labels = packed.pop("labels")
        logits = model(**packed, use_cache=False).logits
    cu = packed["cu_seq_lens_q"].tolist()
    together = per_example(logits, labels, list(zip(cu[:-1], cu[1:])))
    assert torch.allclose(together, alone, rtol=2e-2, atol=2e-2), (together, alone)


def test_varlen_attention_groups_query_heads_like_repeated_key_value_heads():
    """Grouped-query attention hands flash attention the fewer key/value heads; outputs and gradients
    equal those with the heads repeated to the query heads' count."""
    from inhouse.model.attention import varlen_attention

    torch.manual_seed(0)
    lengths, heads, groups, dim = [300, 1200, 57, 700], 8, 4, 64
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(1, h, sum(lengths), dim, device="cuda", dtype=torch.bfloat16)
               for h in (heads, heads // groups, heads // groups))

    def run(repeat):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        kk, vv = (t.repeat_interleave(groups, dim=1) if repeat else t for t in leaves[1:])
        out, _ = varlen_attention(None, leaves[0], kk, vv, None, cu_seq_lens_q=cu, max_length_q=max(lengths))
        out.float().square().sum().backward()
        return [out.detach().float(), *(t.grad.float() for t in leaves)]

    for grouped, repeated in zip(run(False), run(True)):
        assert torch.allclose(grouped, repeated, rtol=1e-2, atol=1e-2), (grouped - repeated).abs().max()


def curve(tmp_path, tiny_dir, name, **switches):
    rows = [chat(f"Where is order {100 + 7 * i}?" * (1 + i % 4), f"Order {100 + 7 * i} left." * (1 + i % 3))
            for i in range(64)]
    data = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=8,
                              batch_size=4, gradient_accumulation=2, lora_dropout=0, learning_rate=3e-3,
                              output_name=name, **switches)
    result = train(recipe, events=Events())
    info = json.loads((result.path / "inhouse.json").read_text())
    return [h["loss"] for h in info["history"] if "loss" in h], info["speed"]


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_fused_lora_keeps_the_loss_curve(method, tmp_path, tiny_dir, home, monkeypatch):
    """The GPU plan's fused LoRA layers (update added inside the base GEMM) train PEFT's own curve, to
    bf16 precision: the fused sum is rounded once instead of three times."""
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    from inhouse.train import fused_lora

    calls = []
    fn = fused_lora.LoraUpdate if method == "qlora" else fused_lora.LoraMatmul
    original = fn.apply
    monkeypatch.setattr(fn, "apply", lambda *a: calls.append(1) or original(*a))
    in_place = {"dequantized_fraction": 0.0} if method == "qlora" else {}  # the kept weights: the test below
    fast, fast_speed = curve(tmp_path, tiny_dir, f"{method}-fused", method=method, fused_lora=True, **in_place)
    assert fast_speed["fused_lora"] and calls and fast[0] != fast[-1]
    plain, plain_speed = curve(tmp_path, tiny_dir, f"{method}-peft-layers", method=method, fused_lora=False)
    assert not plain_speed["fused_lora"]
    assert torch.allclose(torch.tensor(fast), torch.tensor(plain), rtol=1e-2, atol=1e-2), (plain, fast)


def test_qlora_kept_dequantized_weights_keep_the_loss_curve(tmp_path, tiny_dir, home, monkeypatch):
    """By default a 4-bit base's fused LoRA layers keep their dequantised weight where the GPU has room (the
    tiny model: all of them) and run the bf16 fused matmul on it: the same curve as dequantising each pass."""
    pytest.importorskip("bitsandbytes")
    from inhouse.train import fused_lora

    calls = {"kept": 0, "in_place": 0}
    for fn, key in ((fused_lora.LoraMatmul, "kept"), (fused_lora.LoraUpdate, "in_place")):
        monkeypatch.setattr(fn, "apply", lambda *a, _f=fn.apply, _k=key: calls.__setitem__(_k, calls[_k] + 1) or _f(*a))
    kept, kept_speed = curve(tmp_path, tiny_dir, "qlora-kept", method="qlora")
    assert kept_speed["dequantized_fraction"] == 1.0 and calls == {"kept": calls["kept"], "in_place": 0} \
        and calls["kept"] > 0 and kept[0] != kept[-1]
    each, each_speed = curve(tmp_path, tiny_dir, "qlora-dequantizing", method="qlora", dequantized_fraction=0)
    assert each_speed["dequantized_fraction"] == 0 and calls["in_place"] > 0
    assert torch.allclose(torch.tensor(kept), torch.tensor(each), rtol=1e-2, atol=1e-2), (each, kept)


def test_checkpointing_sized_to_free_memory_keeps_the_loss_curve(tmp_path, tiny_dir, home):
    """The default recomputes nothing where the activations fit (a tiny model always does); every share
    of recomputed layers, and every layer with its inputs offloaded, trains the same curve."""
    every, every_speed = curve(tmp_path, tiny_dir, "ckpt-all", gradient_checkpointing=True, activation_offload=True)
    half, half_speed = curve(tmp_path, tiny_dir, "ckpt-half", checkpoint_fraction=0.5)
    auto, auto_speed = curve(tmp_path, tiny_dir, "ckpt-auto")
    assert every_speed["checkpoint_fraction"] == 1 and every_speed["activation_offload"]
    assert half_speed["checkpoint_fraction"] == 0.5 and not half_speed["activation_offload"]
    assert not auto_speed["gradient_checkpointing"] and auto_speed["checkpoint_fraction"] == 0
    for other in (half, auto):
        assert torch.allclose(torch.tensor(other), torch.tensor(every), rtol=1e-2, atol=1e-2), (every, other)


def test_fast_path_loss_curve_matches_plain_path(tmp_path, tiny_dir, home):
    plain, plain_speed = curve(tmp_path, tiny_dir, "plain", packing=False, liger=False, attention="sdpa")
    fast, fast_speed = curve(tmp_path, tiny_dir, "fast")  # GPU defaults: packing, varlen, liger when installed
    assert fast_speed["packing"] and fast_speed["attention"] == "varlen" and not plain_speed["packing"]
    assert torch.allclose(torch.tensor(fast), torch.tensor(plain), rtol=3e-2, atol=3e-2), (plain, fast)


def test_qlora_trains_and_merged_matches_unmerged_in_bf16(tmp_path, tiny_dir, home):
    pytest.importorskip("bitsandbytes")
    from peft import PeftModel

    from inhouse.adapters.merge import merged_model
    from inhouse.model.load import load_model

    data = write_jsonl(tmp_path / "q.jsonl", [chat("Best day?", "Tuesday."), chat("Colour?", "Blue.")] * 4)
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=30,
                              method="qlora", learning_rate=1e-2, lora_dropout=0, output_name="q")
    result = train(recipe, events=Events())
    assert result.metrics["train_loss"] < 2.0
    ids = torch.randint(0, 250, (2, 32), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        unmerged = PeftModel.from_pretrained(load_model(str(tiny_dir), torch.bfloat16), result.path).eval()
        reference = unmerged(ids).logits.float()
        merged, _, _ = merged_model("q", torch.bfloat16)
        got = merged(ids).logits.float()
    assert merged.dtype == torch.bfloat16
    assert ((got - reference).norm() / reference.norm()).item() < 2e-2


def test_liger_kernels_compute_the_same_loss(tiny_dir):
    pytest.importorskip("liger_kernel")
    from transformers import AutoModelForCausalLM

    from inhouse.train.speed import apply_liger

    batch = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in PackedCollator()(items()).items()}
    reference = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).cuda()
    patched = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).cuda()
    for m in (reference, patched):
        m.config.use_cache = False
        m.train()
    expected = reference(**batch).loss
    apply_liger(patched)
    got = patched(**batch).loss
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3), (got, expected)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_bf16_lora_inputs_keep_the_loss_curve(method, tmp_path, tiny_dir, home, monkeypatch):
    """The fast path without PEFT's float32 copies of LoRA inputs trains the same curve as with them."""
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    from inhouse.train import speed as speed_mod

    fast, fast_speed = curve(tmp_path, tiny_dir, f"{method}-bf16-inputs", method=method)
    monkeypatch.setattr(speed_mod, "lora_input_casts", lambda speed, model: contextlib.nullcontext())
    cast, _ = curve(tmp_path, tiny_dir, f"{method}-peft-casts", method=method)
    assert fast_speed["bf16_lora_inputs"] and fast[0] != fast[-1]
    assert torch.allclose(torch.tensor(fast), torch.tensor(cast), rtol=1e-3, atol=1e-3), (cast, fast)
