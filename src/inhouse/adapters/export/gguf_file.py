"""Write GGUF files tensor by tensor with the `gguf` package's writer.

Tensors are converted and written one at a time (header and tensor table first, then the data),
so exporting a model needs little memory beyond the model itself. 1-D tensors (norms, biases) stay
float32 as llama.cpp expects; a matrix whose rows do not fill whole quantisation blocks falls back to
float16 rather than failing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

QTYPES = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
          "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
              "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}


@dataclass
class Tensor:
    name: str  # GGUF name
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]  # float32 data, already adjusted for llama.cpp
    qtype: gguf.GGMLQuantizationType


def storage_type(shape: tuple[int, ...], quant: str) -> gguf.GGMLQuantizationType:
    qtype = QTYPES[quant]
    if len(shape) < 2:
        return gguf.GGMLQuantizationType.F32
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    return qtype if shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16


def _info(tensor: Tensor) -> tuple[tuple[int, ...], np.dtype, int]:
    if tensor.qtype == gguf.GGMLQuantizationType.F32:
        return tensor.shape, np.dtype(np.float32), int(np.prod(tensor.shape)) * 4
    if tensor.qtype == gguf.GGMLQuantizationType.F16:
        return tensor.shape, np.dtype(np.float16), int(np.prod(tensor.shape)) * 2
    byte_shape = gguf.quant_shape_to_byte_shape(tensor.shape, tensor.qtype)
    return byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape))


def encode(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    out = gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)
    return out.view(np.uint8) if out.dtype not in (np.float32, np.float16) else out


def write(path: Path, arch: str, describe: Callable[[gguf.GGUFWriter], None], tensors: Iterable[Tensor],
          on_tensor: Callable[[int, int], None] | None = None) -> None:
    """`describe` adds the key-value metadata; the tensors follow in order."""
    tensors = list(tensors)
    writer = gguf.GGUFWriter(path, arch)
    try:
        describe(writer)
        for t in tensors:
            shape, dtype, nbytes = _info(t)
            writer.add_tensor_info(t.name, shape, dtype, nbytes, raw_dtype=t.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for n, t in enumerate(tensors, 1):
            writer.write_tensor_data(encode(t.load(), t.qtype))
            if on_tensor:
                on_tensor(n, len(tensors))
    finally:
        writer.close()
