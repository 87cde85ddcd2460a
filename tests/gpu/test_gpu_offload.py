"""Asynchronous activation offload moves copies only: gradients are bit-identical, memory drops.

    python -m pytest -m gpu tests/gpu -q
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from inhouse.train.offload import AsyncOffload
from inhouse.train.speed import enable_checkpointing

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def model(checkpointing: bool, layers: int = 6, hidden: int = 512):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=8192, use_cache=False)
    m = LlamaForCausalLM(config).cuda().train()
    for name, p in m.named_parameters():  # frozen base, trainable attention: like LoRA, inputs still need grads
        p.requires_grad_("q_proj" in name or "v_proj" in name)
    if checkpointing:
        enable_checkpointing(m)
        m.enable_input_require_grads()
    return m


def step(m, ids, offload):
    m.zero_grad(set_to_none=True)
    torch.cuda.reset_peak_memory_stats()
    with AsyncOffload(m.parameters(), min_bytes=0) if offload else torch.autograd.graph.saved_tensors_hooks(
            lambda t: t, lambda t: t):
        m(input_ids=ids, labels=ids).loss.backward()
    torch.cuda.synchronize()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}, torch.cuda.max_memory_allocated()


@pytest.mark.parametrize("checkpointing", [True, False])
def test_offload_gradients_are_identical(checkpointing):
    m = model(checkpointing)
    for seed in (1, 2):  # fresh inputs each time; a missed stream dependency shows as a moving error
        ids = torch.randint(0, 512, (2, 1024), generator=torch.Generator().manual_seed(seed)).cuda()
        plain, _ = step(m, ids, offload=False)
        offloaded, _ = step(m, ids, offload=True)
        assert plain.keys() == offloaded.keys() and plain
        for name in plain:
            assert torch.equal(plain[name], offloaded[name]), name


def test_offload_lowers_peak_memory_with_checkpointing():
    m = model(True, layers=12)
    ids = torch.randint(0, 512, (1, 8192), generator=torch.Generator().manual_seed(3)).cuda()
    step(m, ids, offload=False)  # warm-up: allocator and kernels
    _, plain = step(m, ids, offload=False)
    _, offloaded = step(m, ids, offload=True)
    layer_input = 8192 * 512 * 4
    assert offloaded < plain - 6 * layer_input, (plain, offloaded)
