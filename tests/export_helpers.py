"""What the export tests share: toy tokenizers of every kind llama.cpp reads, and llama.cpp itself.

The tokenizers are trained here, on a fixed corpus, in the layouts real models use (Llama 3 and
Qwen 2 splits, GPT-2's, SentencePiece-style BPE with byte fallback), so exporting them exercises
merges, pre-tokenizer names, scores and byte tokens without downloading a real tokenizer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from inhouse.model import tiny

CORPUS = ["The quick brown fox jumps over the lazy dog. " * 3,
          "Lumen & Loom ships on Tuesdays; returns take 14 days.",
          "def add(a, b):\n    return a + b\n",
          "Ünïcödé — naïve café, 東京 and emoji 🙂 too!",
          "Numbers 1234567 and 3.14159, don't you'll we've."] * 20
TEXTS = ["Hello world", "  leading spaces and\ttabs\n\nnewlines", "don't stop 12345678 9.99", "naïve café 東京 🙂",
         "<|im_start|>user\nhi<|im_end|>\n", "code: x=[1,2,3]; print(x)", "a", "   ", "Lumen & Loom, Tuesday.",
         "Ελληνικά και русский текст", "tab\tand\r\nwindows lines", "{{ not a template }}"]
F32 = 0  # GGML_TYPE_F32: a float32 KV cache, so only the weights' storage type differs from transformers


def byte_level_bpe(split: str | None) -> PreTrainedTokenizerFast:
    """Byte-level BPE with merges, split like Llama 3 / Qwen 2 (`split`) or like GPT-2 (None)."""
    core = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split is None)
    core.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level])
                          if split else byte_level)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=tiny.SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return _fast(core, pad_token="<|pad|>")


def sentencepiece_bpe() -> PreTrainedTokenizerFast:
    """Llama 2 / Mistral / Gemma style: '▁' for spaces, a prefix space, byte fallback tokens."""
    core = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    core.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                      decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>", *[f"<0x{i:02X}>" for i in range(256)], *tiny.SPECIAL_TOKENS[2:]]
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False))
    return _fast(core, unk_token="<unk>", bos_token="<s>")


def _fast(core: Tokenizer, **special: str) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", **special)
    tok.chat_template = tiny.CHATML_TEMPLATE
    return tok


def llama_cpp():
    """llama-cpp-python, or a skip; CI sets INHOUSE_REQUIRE_LLAMA_CPP=1 so a failed build fails the run instead."""
    if os.environ.get("INHOUSE_REQUIRE_LLAMA_CPP") == "1":
        import llama_cpp as module

        return module
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is a test dependency (pip install -e '.[test]')")


def load_gguf(path: Path, **options):
    return llama_cpp().Llama(str(path), n_ctx=512, type_k=F32, type_v=F32, verbose=False, **options)


def gguf_logits(path: Path, ids: list[int], **options) -> np.ndarray:
    llm = load_gguf(path, logits_all=True, **options)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def rounded(model, dtype: torch.dtype):
    """The same model with its matrices rounded to `dtype` (what an f16 / bf16 GGUF stores), computing in f32:
    the reference that isolates llama.cpp's arithmetic from the storage rounding."""
    import copy

    copy_ = copy.deepcopy(model)
    with torch.no_grad():
        for p in copy_.parameters():
            if p.dim() > 1:
                p.copy_(p.to(dtype).float())
    return copy_
