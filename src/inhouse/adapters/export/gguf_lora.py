"""A PEFT LoRA adapter as a GGUF LoRA that llama.cpp (and Ollama's ADAPTER) applies to the base GGUF.

PEFT's scale (alpha / r, or alpha / sqrt(r) with rsLoRA, per module with rank and alpha patterns)
is folded into B, so what llama.cpp computes, x·Aᵀ·Bᵀ times its own alpha / rank, equals PEFT's
output for every module: alpha is written as the rank when every module shares one, else as 0
(llama.cpp then applies no further scale). Query and key B rows are re-ordered like the base
weights. What a GGUF LoRA cannot express (DoRA, fully trained embeddings or output head, LoRA on
embeddings) is refused with the export that can carry it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import torch
from safetensors.torch import load_file

from inhouse.adapters.export import gguf_file
from inhouse.adapters.export.families import Family, adjust, family_of
from inhouse.adapters.export.gguf_model import gguf_name
from inhouse.errors import InhouseError

KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


def check_exportable(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    if config.get("use_dora"):
        raise InhouseError("a DoRA adapter has no GGUF LoRA form; export --to gguf writes it merged into the model")
    if config.get("modules_to_save"):
        raise InhouseError(f"this adapter also trains {', '.join(config['modules_to_save'])} in full, which a GGUF LoRA "
                           "cannot carry; export --to gguf writes it merged into the model")
    odd = sorted({k for k in weights if not KEY.match(k)})
    if odd:
        raise InhouseError(f"GGUF LoRA export: {odd[0]} is not a LoRA A/B matrix of a linear layer (LoRA on "
                           "embeddings?); export --to gguf writes it merged into the model")


def module_scale(config: dict[str, Any], module: str, rank: int) -> float:
    alpha = _pattern(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8))
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _pattern(patterns: dict[str, Any], module: str, default: Any) -> Any:
    for key, value in patterns.items():
        if re.fullmatch(f"(.*\\.)?{key}", module):
            return value
    return default


def lora_tensors(config: dict[str, Any], weights: dict[str, torch.Tensor], model_config: Any,
                 family: Family) -> Iterator[gguf_file.Tensor]:
    tmap = gguf.get_tensor_name_map(family.arch, model_config.num_hidden_layers)
    for key in sorted(weights):
        match = KEY.match(key)
        module, ab = match["module"], match["ab"]
        name = gguf_name(tmap, f"{module}.weight")
        if name is None:
            raise InhouseError(f"GGUF LoRA export: no llama.cpp tensor for the adapted module {module!r}")
        data = weights[key].to(torch.float32).numpy()
        if ab == "B":
            data = adjust(family, model_config, f"{module}.weight", data * module_scale(config, module, data.shape[1]))
        yield gguf_file.Tensor(f"{name}.lora_{ab.lower()}", tuple(data.shape), (lambda d=data: d),
                               gguf.GGMLQuantizationType.F32)


def write_lora(adapter_dir: Path, config: dict[str, Any], model_config: Any, path: Path, name: str) -> None:
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    check_exportable(config, weights)
    family = family_of(model_config)
    ranks = {w.shape[0] for k, w in weights.items() if k.endswith("lora_A.weight")}

    def describe(writer: gguf.GGUFWriter) -> None:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_name(name)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(ranks.pop()) if len(ranks) == 1 else 0.0)

    gguf_file.write(path, family.name, describe, lora_tensors(config, weights, model_config, family))


