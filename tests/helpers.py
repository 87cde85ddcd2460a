"""Small helpers for writing test data."""

import hashlib
import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(user, assistant, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    return {"messages": msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def run_cli(*args, env=None):
    """Run `inhouse ARGS` in this process (fast: no second torch import); returns (code, stdout, stderr)."""
    import contextlib
    import io
    import os
    import sys
    from unittest import mock

    from inhouse import cli

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", ["inhouse", *map(str, args)]), mock.patch.dict(os.environ, env or {}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every regular file under root, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def llama_8b_config():
    """Llama-3.1-8B's shape (what the memory estimates were measured on), without weights."""
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256)
