"""Each GGUF proven by running it in llama.cpp (llama-cpp-python): the same logits as transformers on
the same tokens, the same tokens for the same text, the same prompt from the embedded chat template,
greedy generation that stops at the end of the turn, and the GGUF LoRA equal to the PEFT adapter."""

import json

import numpy as np
import pytest
import torch
from export_helpers import TEXTS, byte_level_bpe, gguf_logits, hf_logits, llama_cpp, load_gguf, rounded, \
    sentencepiece_bpe
from helpers import chat, write_jsonl
from peft import LoraConfig, get_peft_model

from inhouse import recipe as recipe_mod
from inhouse.adapters.export import gguf_lora
from inhouse.adapters.export.gguf_model import write_model
from inhouse.adapters.export.stops import find_stops
from inhouse.adapters.export.vocab import LLAMA3_SPLIT, QWEN2_SPLIT
from inhouse.events import Events
from inhouse.model import tiny
from inhouse.model.load import load_model
from inhouse.train.sft import train

llama_cpp()
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Best day?"},
                {"role": "assistant", "content": "Tuesday."}, {"role": "user", "content": "And the colour — ünïcode?"}]
# Stated bounds: llama.cpp against transformers, max |logit difference| over every position.
F32_BOUND, F16_BOUND, Q8_BOUND = 1e-4, 1e-2, 0.3


@pytest.fixture(scope="module")
def tiny_model():
    model, tok = tiny.build(seed=5)
    return model.eval(), tok


def prompt_ids(tok, messages=CONVERSATION):
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text, tok(text, add_special_tokens=False)["input_ids"]


def export(model, tok, path, quant="f32"):
    write_model(model, tok, path, quant, find_stops(tok, model.generation_config.eos_token_id), "test")
    return path


@pytest.mark.parametrize("quant,bound", [("f32", F32_BOUND), ("f16", F16_BOUND), ("bf16", 0.1), ("q8_0", Q8_BOUND)])
def test_logits_match_transformers(tmp_path, tiny_model, quant, bound):
    model, tok = tiny_model
    _, ids = prompt_ids(tok)
    got = gguf_logits(export(model, tok, tmp_path / "m.gguf", quant), ids)
    reference = model if quant in ("f32", "q8_0") else rounded(model, torch.float16 if quant == "f16" else torch.bfloat16)
    want = hf_logits(reference, ids)
    assert np.abs(got - want).max() < bound
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


def test_q4_k_m_is_made_by_llama_cpps_quantiser_and_runs(tmp_path, tiny_model):
    from inhouse.adapters.export.quantize import quantize

    model, tok = tiny_model
    _, ids = prompt_ids(tok)
    quantize(export(model, tok, tmp_path / "f16.gguf", "f16"), tmp_path / "q4.gguf", "q4_k_m")
    import gguf

    assert gguf.GGUFReader(tmp_path / "q4.gguf").fields["general.file_type"].contents() == \
        gguf.LlamaFileType.MOSTLY_Q4_K_M
    got, want = gguf_logits(tmp_path / "q4.gguf", ids), hf_logits(model, ids)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.95  # 4-bit: close in shape, not in value


@pytest.mark.parametrize("make", [lambda: tiny.build_tokenizer(), lambda: byte_level_bpe(LLAMA3_SPLIT),
                                  lambda: byte_level_bpe(QWEN2_SPLIT), lambda: byte_level_bpe(None),
                                  sentencepiece_bpe], ids=["tiny-bytes", "llama3", "qwen2", "gpt2", "sentencepiece"])
def test_tokenisation_equals_the_hf_tokenizer(tmp_path, make):
    tok = make()
    model = tiny.LlamaForCausalLM(tiny.build_config(len(tok)))
    llm = load_gguf(export(model, tok, tmp_path / "m.gguf"), vocab_only=True)
    for text in TEXTS + [prompt_ids(tok)[0]]:
        want = tok(text, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == want, text
        text_back = llm.detokenize(want, special=True).decode()
        if make is sentencepiece_bpe:  # llama-cpp-python's piecewise detokenizer keeps the prefix space
            text_back = text_back.removeprefix(" ")
        assert text_back == tok.decode(want), text


@pytest.mark.parametrize("template", [tiny.CHATML_TEMPLATE, tiny.LLAMA3_TEMPLATE], ids=["chatml", "llama3"])
def test_embedded_chat_template_renders_the_same_prompt(tmp_path, template):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    tok = tiny.build_tokenizer(template)
    model, _ = tiny.build()
    llm = load_gguf(export(model, tok, tmp_path / "m.gguf"), vocab_only=True)
    embedded = llm.metadata["tokenizer.chat_template"]
    formatter = Jinja2ChatFormatter(embedded, eos_token=tok.eos_token, bos_token=tok.bos_token or "")
    for turns in (CONVERSATION[1:2], CONVERSATION, CONVERSATION + [{"role": "assistant", "content": "Blue."},
                                                                   {"role": "user", "content": "Thanks {{ }}"}]):
        assert formatter(messages=turns).prompt == prompt_ids(tok, turns)[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dir):
    """A LoRA adapter that has learnt to answer and end its turn."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INHOUSE_HOME", str(root / "home"))
        data = write_jsonl(root / "d.jsonl", [chat("Best day?", "Tuesday."), chat("Colour?", "Blue.")])
        recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=30,
                                  learning_rate=1e-2, lora_dropout=0, output_name="m")
        return train(recipe, events=Events()).path


def test_greedy_generation_stops_at_the_end_of_turn(tmp_path, trained):
    from inhouse.adapters.export.targets import load

    model, tok, _ = load(trained)
    llm = load_gguf(export(model, tok, tmp_path / "m.gguf", "f16"))
    out = llm.create_chat_completion([{"role": "user", "content": "Best day?"}], temperature=0, max_tokens=40)
    assert out["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "Tuesday."},
                                 "logprobs": None, "finish_reason": "stop"}
    vocab = llama_cpp().llama_model_get_vocab(llm.model)
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        assert llama_cpp().llama_vocab_is_eog(vocab, tok.convert_tokens_to_ids(token)), token


def test_forced_end_of_turn_token_ends_generation(tmp_path, tiny_model):
    """Even an untrained model stops the moment it emits <|im_end|> (here forced by a logit bias)."""
    model, tok = tiny_model
    llm = load_gguf(export(model, tok, tmp_path / "m.gguf"))
    end = tok.convert_tokens_to_ids("<|im_end|>")
    out = llm.create_completion(prompt_ids(tok)[0], max_tokens=20, temperature=0, logit_bias={end: 100.0})
    assert out["choices"][0]["finish_reason"] == "stop" and out["choices"][0]["text"] == ""


def peft_model(base, **config):
    settings = dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                       "up_proj", "down_proj"], init_lora_weights=False)
    torch.manual_seed(0)
    return get_peft_model(base, LoraConfig(**settings | config)).eval()


@pytest.mark.parametrize("config", [{}, {"use_rslora": True}, {"rank_pattern": {"q_proj": 8}, "alpha_pattern": {"v_proj": 3}}],
                         ids=["plain", "rslora", "patterns"])
def test_gguf_lora_applied_by_llama_cpp_equals_peft(tmp_path, tiny_dir, config):
    tok = tiny.build_tokenizer()
    _, ids = prompt_ids(tok)
    peft = peft_model(load_model(str(tiny_dir), torch.float32), **config)
    peft.save_pretrained(tmp_path / "adapter")
    want = hf_logits(peft, ids)
    base = load_model(str(tiny_dir), torch.float32)
    assert np.abs(hf_logits(base, ids) - want).max() > 0.1  # the adapter changes the model
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    gguf_lora.write_lora(tmp_path / "adapter", adapter_config, base.config, tmp_path / "lora.gguf", "a")
    got = gguf_logits(export(base, tok, tmp_path / "base.gguf"), ids, lora_path=str(tmp_path / "lora.gguf"))
    assert np.abs(got - want).max() < F32_BOUND * 10


def test_what_a_gguf_lora_cannot_carry_is_refused(tmp_path, tiny_dir):
    from inhouse.errors import InhouseError

    base = load_model(str(tiny_dir), torch.float32)
    for config, why in (({"use_dora": True}, "DoRA"), ({"modules_to_save": ["lm_head"]}, "lm_head in full")):
        peft = peft_model(base, **config)
        folder = tmp_path / why.split()[0]
        peft.save_pretrained(folder)
        with pytest.raises(InhouseError, match=why):
            gguf_lora.write_lora(folder, json.loads((folder / "adapter_config.json").read_text()), base.config,
                                 tmp_path / "x.gguf", "x")
        base = peft.unload()
    assert not (tmp_path / "x.gguf").exists()
