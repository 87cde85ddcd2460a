"""Check a freshly written GGUF in llama.cpp itself, before the export is published.

When llama-cpp-python is installed, the file's vocabulary is loaded by llama.cpp and must tokenise a
probe text (specials, several scripts, digits, code, whitespace and a rendered conversation) exactly
as the Hugging Face tokenizer does; a difference fails the export, so nothing is left under --out.
Without llama-cpp-python the export says it was not checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inhouse.adapters.export.quantize import llama_cpp_module
from inhouse.errors import InhouseError

PROBE = ["Hello, world! It's 12345 o'clock.", "  two  spaces\tand a tab\nnew line\r\n",
         "naïve café — 東京 🙂 Ελληνικά русский", "def f(x):\n    return {'a': [1, 2.5]}\n"]
NOT_CHECKED = "not checked in llama.cpp (install llama-cpp-python, inhouse's gguf extra, to have every GGUF export checked)"


def probe_texts(tokenizer: Any) -> list[str]:
    conversation = [{"role": "user", "content": PROBE[0]}, {"role": "assistant", "content": PROBE[2]}]
    try:
        rendered = [tokenizer.apply_chat_template(conversation, tokenize=False)]
    except Exception:  # a template that needs other turns: the plain probes still run
        rendered = []
    return PROBE + rendered


def check_tokenisation(path: Path, tokenizer: Any) -> str:
    """A note for the export's manifest; raises InhouseError when llama.cpp tokenises differently."""
    llama_cpp = llama_cpp_module()
    if llama_cpp is None:
        return NOT_CHECKED
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        for text in probe_texts(tokenizer):
            want = tokenizer(text, add_special_tokens=False)["input_ids"]
            got = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            if got != want:
                raise InhouseError(f"{path.name}: llama.cpp tokenises {text[:40]!r} differently from the model's "
                                   "tokenizer; the export was not written (please report this tokenizer)")
    finally:
        llm.close()
    return f"{path.name}: llama.cpp tokenises like the model's tokenizer (checked on {len(probe_texts(tokenizer))} probes)"
