"""A Hugging Face tokenizer as GGUF metadata llama.cpp tokenises with exactly as transformers does.

Two kinds are supported: byte-level BPE (GPT-2, Llama 3, Qwen 2) written as llama.cpp's "gpt2"
model with merges and the pre-tokenizer named by its regex, and SentencePiece-style BPE with byte
fallback (Llama 2, Mistral, Gemma) written as the "llama" model with scores from merge ranks (llama.cpp
merges the highest score first, transformers the lowest rank: the same order). Anything else is
refused rather than written in a form that would tokenise differently.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import gguf

from inhouse.adapters.export.stops import Stops
from inhouse.errors import InhouseError

# tokenizer.json split regexes -> llama.cpp's name for the same pre-tokenizer.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_BY_SPLIT = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}
# llama.cpp refuses a byte-level vocabulary without merges (and the writer drops an empty list). A
# tokenizer with none gets this one: bytes 0xC0 0xC0 never stand next to each other in UTF-8, and a
# merge whose result is not a token falls back to the bytes anyway, so tokenisation is unchanged.
INERT_MERGE = "\u00c0 \u00c0"
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def load_tokenizer_json(folder: Path) -> dict[str, Any]:
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise InhouseError(f"{folder}: GGUF export needs a fast tokenizer (tokenizer.json); this model has none")
    return json.loads(file.read_text(encoding="utf-8"))


def kind_of(spec: dict[str, Any]) -> str:
    model = spec.get("model") or {}
    decoder = (spec.get("decoder") or {}).get("type")
    if model.get("type") == "BPE" and not model.get("byte_fallback") and decoder == "ByteLevel":
        return "gpt2"
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return "llama"
    raise InhouseError(f"GGUF export supports byte-level BPE and SentencePiece-style BPE tokenizers; this one is "
                       f"{model.get('type', 'unknown')} (decoder {decoder})")


def pre_tokenizer(spec: dict[str, Any]) -> str:
    """llama.cpp's name for this tokenizer's pre-split, or a refusal (a wrong one splits text differently)."""
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    splits = [p for p in parts if p.get("type") == "Split"]
    byte_level = [p for p in parts if p.get("type") == "ByteLevel"]
    if not splits and byte_level and byte_level[0].get("use_regex", True):
        return "gpt-2"
    if len(splits) == 1 and (pattern := (splits[0].get("pattern") or {}).get("Regex")) in PRE_BY_SPLIT:
        return PRE_BY_SPLIT[pattern]
    if not splits and not (spec.get("model") or {}).get("merges"):
        return "default"  # no merges: every byte is its own token however the text is split
    raise InhouseError("GGUF export: this tokenizer's pre-tokenizer is not one llama.cpp is known to reproduce "
                       "(supported: GPT-2, Llama 3 and Qwen 2 splits)")


def token_table(tokenizer: Any, vocab_size: int, kind: str, scores: dict[str, float]) -> tuple[list, list, list]:
    """Tokens, scores and types for every id below the model's vocab size (padding ids included)."""
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {i: a for i, a in tokenizer.added_tokens_decoder.items()}
    tokens, token_scores, types = [], [], []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]"), token_scores.append(-1000.0), types.append(gguf.TokenType.UNUSED)
            continue
        if kind == "llama" and BYTE_TOKEN.fullmatch(text):
            kind_i = gguf.TokenType.BYTE  # byte fallback, even where a tokenizer lists it as an added token
        elif i in added:
            kind_i = gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED
            text = added[i].content
        else:
            kind_i = gguf.TokenType.NORMAL
        tokens.append(text), token_scores.append(scores.get(text, 0.0)), types.append(kind_i)
    return tokens, token_scores, types


def merge_scores(spec: dict[str, Any]) -> dict[str, float]:
    """SentencePiece-style score per merged token: minus the rank of the merge that makes it."""
    scores: dict[str, float] = {}
    for rank, merge in enumerate(spec["model"].get("merges") or []):
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        scores.setdefault(left + right, -float(rank + 1))
    return scores


def adds_space_prefix(spec: dict[str, Any]) -> bool:
    text = json.dumps([spec.get("normalizer"), spec.get("pre_tokenizer")])
    return '"Prepend"' in text or '"prepend_scheme": "first"' in text or '"prepend_scheme": "always"' in text


def write_vocab(writer: gguf.GGUFWriter, tokenizer: Any, folder: Path, vocab_size: int, stops: Stops) -> None:
    """Tokens, merges or scores, special ids, the chat template and every end-of-generation token."""
    spec = load_tokenizer_json(folder)
    kind = kind_of(spec)
    writer.add_tokenizer_model(kind)
    if kind == "gpt2":
        writer.add_tokenizer_pre(pre_tokenizer(spec))
    else:
        writer.add_tokenizer_pre("default")
        writer.add_add_space_prefix(adds_space_prefix(spec))
    tokens, scores, types = token_table(tokenizer, vocab_size, kind, merge_scores(spec) if kind == "llama" else {})
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=kind == "gpt2", n_vocab=vocab_size)
    if kind == "gpt2" and not special.merges:
        special.merges = [INERT_MERGE]
    if stops.eos is not None:
        special.special_token_ids["eos"] = stops.eos
    if stops.end_of_turn is not None and stops.end_of_turn != stops.eos:
        special.special_token_ids["eot"] = stops.end_of_turn
    special.add_special_token.update(adds_special(tokenizer))
    special.add_to_gguf(writer, quiet=True)


def adds_special(tokenizer: Any) -> dict[str, bool]:
    """Whether encoding plain text adds BOS / EOS, as the tokenizer really does it (llama.cpp's defaults
    differ per vocabulary type, so both are always written)."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return {"bos": bos is not None and ids[:1] == [bos], "eos": eos is not None and ids[-1:] == [eos]}
