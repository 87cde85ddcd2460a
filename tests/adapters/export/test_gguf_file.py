"""The GGUF file itself, read back with the `gguf` package's reader: exactly the merged weights
(dequantised within the type's rounding), the metadata llama.cpp needs, the tokenizer and template."""

import gguf
import numpy as np
import pytest

from inhouse.adapters.export import families
from inhouse.adapters.export.gguf_model import model_tensors, write_model
from inhouse.adapters.export.stops import find_stops
from inhouse.errors import InhouseError
from inhouse.model import tiny

# Largest error of one stored weight, relative to the tensor's largest magnitude.
ROUNDING = {"f32": 0.0, "f16": 1e-3, "bf16": 8e-3, "q8_0": 1e-2}


@pytest.fixture(scope="module")
def model_and_tokenizer():
    model, tok = tiny.build(seed=3)
    return model.eval(), tok


def read(path):
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    tensors = {t.name: (t.tensor_type, gguf.quants.dequantize(t.data, t.tensor_type).reshape(
        tuple(int(d) for d in reversed(t.shape)))) for t in reader.tensors}
    return fields, tensors


@pytest.mark.parametrize("quant", ["f32", "f16", "bf16", "q8_0"])
def test_tensors_read_back_are_the_models_weights(tmp_path, model_and_tokenizer, quant):
    model, tok = model_and_tokenizer
    write_model(model, tok, tmp_path / "m.gguf", quant, find_stops(tok, None), "tiny")
    _, stored = read(tmp_path / "m.gguf")
    expected = {t.name: t.load() for t in model_tensors(model, families.family_of(model.config), "f32")}
    assert set(stored) == set(expected) and len(stored) == 2 + 9 * model.config.num_hidden_layers + 1
    for name, want in expected.items():
        qtype, got = stored[name]
        assert got.shape == want.shape, name
        if want.ndim == 1:
            assert qtype == gguf.GGMLQuantizationType.F32
        bound = ROUNDING[quant] * np.abs(want).max()
        assert np.abs(got - want).max() <= bound + 1e-7, (name, quant)


def test_query_and_key_rows_are_reordered_for_llama_cpp(tmp_path, model_and_tokenizer):
    """Hugging Face Llama rotates halves of each head, llama.cpp adjacent pairs: q and k rows are permuted
    (and permuting back gives the original), other matrices are stored as they are."""
    model, _ = model_and_tokenizer
    config, family = model.config, families.family_of(model.config)
    q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    moved = families.adjust(family, config, "model.layers.0.self_attn.q_proj.weight", q)
    assert not np.array_equal(moved, q) and sorted(map(tuple, moved)) == sorted(map(tuple, q))
    v = model.model.layers[0].self_attn.v_proj.weight.detach().numpy()
    assert np.array_equal(families.adjust(family, config, "model.layers.0.self_attn.v_proj.weight", v), v)


def test_metadata_carries_template_stop_tokens_and_shape(tmp_path, model_and_tokenizer):
    model, tok = model_and_tokenizer
    stops = find_stops(tok, model.generation_config.eos_token_id)
    write_model(model, tok, tmp_path / "m.gguf", "f16", stops, "tiny")
    fields, _ = read(tmp_path / "m.gguf")
    assert fields["general.architecture"] == "llama" and fields["general.type"] == "model"
    assert fields["tokenizer.chat_template"] == tok.chat_template
    assert fields["tokenizer.ggml.eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert fields["tokenizer.ggml.tokens"] == [tok.convert_ids_to_tokens(i) for i in range(len(tok))]
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["llama.block_count"] == 2 and fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.context_length"] == model.config.max_position_embeddings
    assert set(stops.texts) >= {"<|im_end|>", "<|eot_id|>", "<|endoftext|>"} and stops.end_of_turn == stops.eos


def test_llama3_template_names_eot_apart_from_eos(tmp_path):
    tok = tiny.build_tokenizer(tiny.LLAMA3_TEMPLATE)
    tok.eos_token = "<|endoftext|>"  # a base tokenizer's EOS; the turn ends with <|eot_id|>
    model, _ = tiny.build()
    stops = find_stops(tok, None)
    write_model(model, tok, tmp_path / "m.gguf", "f32", stops, "tiny")
    fields, _ = read(tmp_path / "m.gguf")
    assert fields["tokenizer.ggml.eos_token_id"] == tok.convert_tokens_to_ids("<|endoftext|>")
    assert fields["tokenizer.ggml.eot_token_id"] == tok.convert_tokens_to_ids("<|eot_id|>")


def test_unsupported_architecture_is_refused_naming_the_supported_ones(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300))
    with pytest.raises(InhouseError, match=r"does not support the architecture gpt2.*Llama, Mistral, Qwen2, Gemma"):
        write_model(model, tiny.build_tokenizer(), tmp_path / "m.gguf", "f16", find_stops(tiny.build_tokenizer(), None), "x")
    assert not (tmp_path / "m.gguf").exists()


def test_unknown_pre_tokenizer_is_refused(tmp_path):
    from export_helpers import byte_level_bpe

    tok = byte_level_bpe(r"\p{L}+|\s+|.")
    model, _ = tiny.build()
    model.resize_token_embeddings(len(tok))
    with pytest.raises(InhouseError, match="pre-tokenizer is not one llama.cpp is known to reproduce"):
        write_model(model, tok, tmp_path / "m.gguf", "f32", find_stops(tok, None), "x")


def test_storage_type_falls_back_when_rows_do_not_fill_blocks():
    from inhouse.adapters.export.gguf_file import storage_type

    assert storage_type((64, 128), "q8_0") == gguf.GGMLQuantizationType.Q8_0
    assert storage_type((64, 100), "q8_0") == gguf.GGMLQuantizationType.F16
    assert storage_type((128,), "q8_0") == gguf.GGMLQuantizationType.F32
