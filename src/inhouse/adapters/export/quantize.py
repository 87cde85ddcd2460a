"""K-quants through llama.cpp's own quantiser (the `gguf` package writes only the simple block types).

llama-cpp-python carries llama.cpp's library, so q4_k_m is made exactly as `llama-quantize` makes it,
from the f16 file this package wrote, without downloading or building anything at export time.
"""

from __future__ import annotations

import os
from pathlib import Path

from inhouse.errors import InhouseError

K_QUANTS = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def llama_cpp_module():
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp


def require_quantiser(quant: str) -> None:
    if quant in K_QUANTS and llama_cpp_module() is None:
        raise InhouseError(f"--quant {quant} uses llama.cpp's quantiser, which comes with llama-cpp-python: "
                           "pip install llama-cpp-python, inhouse's gguf extra (or choose --quant q8_0, f16 or bf16)")


def quantize(source: Path, target: Path, quant: str) -> None:
    llama_cpp = llama_cpp_module()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, K_QUANTS[quant])
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0:
        raise InhouseError(f"llama.cpp's quantiser failed on {source.name} (status {status})")
