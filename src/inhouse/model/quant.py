"""4-bit NF4 loading through bitsandbytes (QLoRA's base model)."""

from __future__ import annotations

import tempfile

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

from inhouse import world
from inhouse.errors import InhouseError
from inhouse.model import load as model_load
from inhouse.model import tiny


def nf4_config() -> BitsAndBytesConfig:
    """QLoRA's recipe: NF4 weights, double-quantised constants, bf16 compute."""
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)


def load_4bit(name: str) -> PreTrainedModel:
    """The real bitsandbytes path from a model folder (builtin:tiny is saved to one first)."""
    if not world.gpu():
        raise InhouseError("method qlora needs a CUDA GPU (bitsandbytes 4-bit); use method: lora on this machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise InhouseError("method qlora needs bitsandbytes: pip install bitsandbytes") from None
    ref = model_load.resolve(name)
    if ref == tiny.NAME:
        with tempfile.TemporaryDirectory() as folder:
            tiny.build()[0].save_pretrained(folder)
            return _from_folder(folder)
    return _from_folder(ref)


def _from_folder(ref: str) -> PreTrainedModel:
    try:
        return AutoModelForCausalLM.from_pretrained(ref, quantization_config=nf4_config(), dtype=torch.bfloat16,
                                                    device_map={"": world.device()})  # this rank's GPU
    except OSError as exc:
        raise InhouseError(f"{ref}: cannot load the model in 4-bit: {exc}") from None
