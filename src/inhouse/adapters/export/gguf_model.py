"""A transformers causal LM as a GGUF model file llama.cpp loads: metadata, tokenizer, weights."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from inhouse.adapters.export import gguf_file, hparams, vocab
from inhouse.adapters.export.families import Family, adjust, family_of
from inhouse.adapters.export.stops import Stops
from inhouse.errors import InhouseError

SKIPPED = ("rotary_emb.inv_freq",)


def gguf_name(tmap: gguf.TensorNameMap, hf_name: str) -> str | None:
    return tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))


def model_tensors(model: Any, family: Family, quant: str) -> Iterator[gguf_file.Tensor]:
    config = model.config
    tmap = gguf.get_tensor_name_map(family.arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, param in model.state_dict().items():
        if hf_name.endswith(SKIPPED) or (tied and hf_name == "lm_head.weight"):
            continue
        name = gguf_name(tmap, hf_name)
        if name is None:
            if hf_name == "lm_head.weight" and family.arch in (gguf.MODEL_ARCH.GEMMA, gguf.MODEL_ARCH.GEMMA2):
                continue  # Gemma's graph always reads the output head from the embeddings
            raise InhouseError(f"GGUF export: no llama.cpp tensor for {hf_name!r} ({family.name}); "
                               "this model has weights its llama.cpp graph does not know")
        yield gguf_file.Tensor(name, tuple(param.shape), _loader(family, config, hf_name, param),
                               gguf_file.storage_type(tuple(param.shape), quant))
    if (factors := hparams.rope_factors(config)) is not None:
        yield gguf_file.Tensor("rope_freqs.weight", factors.shape, lambda: factors, gguf.GGMLQuantizationType.F32)


def _loader(family: Family, config: Any, hf_name: str, param: torch.Tensor) -> Callable[[], np.ndarray]:
    return lambda: adjust(family, config, hf_name, param.detach().to("cpu", torch.float32).numpy())


def write_model(model: Any, tokenizer: Any, path: Path, quant: str, stops: Stops, name: str,
                on_tensor: Callable[[int, int], None] | None = None) -> None:
    """`quant` is f32, f16, bf16 or q8_0 (q4_k_m is made from an f16 file by llama.cpp's quantiser)."""
    family = family_of(model.config)
    with tempfile.TemporaryDirectory(prefix="inhouse-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)

        def describe(writer: gguf.GGUFWriter) -> None:
            writer.add_type(gguf.GGUFType.MODEL)
            writer.add_name(name)
            writer.add_file_type(gguf_file.FILE_TYPES[quant])
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            hparams.write_hparams(writer, family, model.config)
            vocab.write_vocab(writer, tokenizer, Path(tmp), model.config.vocab_size, stops)

        gguf_file.write(path, family.name, describe, model_tensors(model, family, quant), on_tensor)
