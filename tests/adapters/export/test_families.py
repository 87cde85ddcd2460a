"""Every family GGUF export claims, as a tiny random model run in llama.cpp: Llama (with Llama 3.1's
long-context rotary factors), Mistral, Qwen 2 (attention biases, tied embeddings), Gemma, Gemma 2 —
and a LoRA on a family whose query/key rows are not reordered."""

import json

import numpy as np
import pytest
import torch
from export_helpers import gguf_logits, hf_logits, llama_cpp
from peft import LoraConfig, get_peft_model
from transformers import (Gemma2Config, Gemma2ForCausalLM, GemmaConfig, GemmaForCausalLM, LlamaConfig,
                          LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

from inhouse.adapters.export.gguf_lora import write_lora
from inhouse.adapters.export.gguf_model import write_model
from inhouse.adapters.export.stops import find_stops
from inhouse.model import tiny

llama_cpp()
TOKENIZER = tiny.build_tokenizer()
COMMON = dict(vocab_size=len(TOKENIZER), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.1)
LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64, "rope_theta": 500000.0}
MODELS = {
    "llama3.1": lambda: LlamaForCausalLM(LlamaConfig(**COMMON, rope_scaling=LLAMA31_ROPE)),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**COMMON, sliding_window=None)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**COMMON, tie_word_embeddings=True)),
    "gemma": lambda: GemmaForCausalLM(GemmaConfig(**COMMON, head_dim=48)),
    "gemma2": lambda: Gemma2ForCausalLM(Gemma2Config(**COMMON, head_dim=32, query_pre_attn_scalar=32,
                                                     sliding_window=256)),
}
# Gemma's GELU is computed from a float16 table in llama.cpp: a slightly looser bound.
BOUND = {"gemma": 5e-3, "gemma2": 5e-3}
TEXT = "<|im_start|>user\nHello there, how are you today? " + "more words " * 10 + "<|im_end|>\n"


def build(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith("bias"):
                param.normal_(0, 0.1)  # zero biases would not show a misplaced bias
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_family_runs_in_llama_cpp_like_in_transformers(tmp_path, name):
    model = build(name)
    ids = TOKENIZER(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) > 64  # past Llama 3.1's original context in this config: its rotary factors matter
    write_model(model, TOKENIZER, tmp_path / "m.gguf", "f32", find_stops(TOKENIZER, None), name)
    got = gguf_logits(tmp_path / "m.gguf", ids)
    assert np.abs(got - hf_logits(model, ids)).max() < BOUND.get(name, 1e-4)


def test_lora_on_qwen2_applies_without_reordering(tmp_path):
    model = build("qwen2")
    ids = TOKENIZER(TEXT, add_special_tokens=False)["input_ids"]
    write_model(model, TOKENIZER, tmp_path / "base.gguf", "f32", find_stops(TOKENIZER, None), "qwen2")
    torch.manual_seed(1)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                 "down_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    write_lora(tmp_path / "adapter", config, model.config, tmp_path / "lora.gguf", "a")
    got = gguf_logits(tmp_path / "base.gguf", ids, lora_path=str(tmp_path / "lora.gguf"))
    assert np.abs(got - hf_logits(peft.eval(), ids)).max() < 1e-3
