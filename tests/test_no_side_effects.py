"""`import inhouse` (every module) and loading models change nothing process-wide."""

import subprocess
import sys

SCRIPT = """
import os, pkgutil, importlib
import torch, transformers, peft, lancedb, sentence_transformers  # their own import-time effects
before = dict(os.environ)
import inhouse
for mod in pkgutil.walk_packages(inhouse.__path__, "inhouse."):
    if mod.name not in ("inhouse.__main__",):
        importlib.import_module(mod.name)
from inhouse.adapters.load import load_chat_model
from inhouse.rag.embed import load_embedder
load_chat_model("builtin:tiny").reply([{"role": "user", "content": "hi"}], max_new_tokens=2)
load_embedder().embed(["hello"])
after = dict(os.environ)
changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
print(sorted(changed))
"""


def test_importing_and_loading_set_no_environment_variables(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "INHOUSE_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


HELP = """
import sys
sys.argv = ["inhouse", *{args!r}]
from inhouse import cli
try:
    cli.main()
except SystemExit:
    pass
heavy = [m for m in ("torch", "transformers", "lancedb", "sentence_transformers", "peft") if m in sys.modules]
print("HEAVY", heavy)
"""


def test_help_imports_no_deep_learning_library(tmp_path):
    """--help must answer at once: it may not wait for torch or transformers to load."""
    for args in (["--help"], ["train", "--help"], ["data", "prepare", "--help"], ["serve", "--help"]):
        proc = subprocess.run([sys.executable, "-c", HELP.format(args=args)], capture_output=True, text=True,
                              cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "120"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().splitlines()[-1] == "HEAVY []", (args, proc.stdout[-300:])
