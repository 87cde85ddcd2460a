"""The README and docs/ are executable truth: every bash and python block runs, as written and in order,
in a copy of the repository's examples on builtin:tiny.

A block's lines are not edited. The harness only decides *how* to run them: python blocks with this
interpreter, an `inhouse serve` line in the background until its /health answers (and stopped at
the end), everything in one bash session so `MODEL=...` carries from block to block. The first
two README blocks are the set-up commands, which CI itself runs (`.ci/run` runs the second verbatim;
the quickstart test runs the first's `inhouse quickstart`). Untagged blocks are output or text and
must not hold commands, so nothing escapes this test by losing its tag.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETUP_BLOCKS = 2  # README's two set-up commands
SERVE = "inhouse serve "
PORT = 8000  # the README's own port


def blocks(doc: Path) -> list[tuple[str, int, str]]:
    """(language, first line number, text) of each fenced block."""
    found, lang, start, lines = [], None, 0, []
    for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, lines = line[3:].strip(), n + 1, []
            else:
                found.append((lang, start, "\n".join(lines)))
                lang = None
        elif lang is not None:
            lines.append(line)
    return found


def runnable() -> list[tuple[Path, str, int, str]]:
    out = []
    for doc in DOCS:
        for i, (lang, start, text) in enumerate(blocks(doc)):
            if doc.name == "README.md" and i < SETUP_BLOCKS:
                continue
            if lang in ("bash", "python"):
                out.append((doc, lang, start, text))
    return out


def script(found: list[tuple[Path, str, int, str]]) -> str:
    """One bash session: each block announced by its place, python blocks fed to this interpreter."""
    # set -m: each background job is its own process group, so stopping a server stops all of it
    parts = ["set -euo pipefail -m", "SERVERS=()",
             "trap 'for p in \"${SERVERS[@]}\"; do kill -TERM -- -$p 2>/dev/null || true; wait $p || true; done' EXIT"]
    for doc, lang, start, text in found:
        parts.append(f"echo '>>> {doc.relative_to(ROOT)}:{start}' >&2")
        if lang == "python":
            parts.append(f"{sys.executable} - <<'__README_PY__'\n{text}\n__README_PY__")
            continue
        for line in _logical_lines(text):
            if SERVE in line.split("#")[0]:
                parts += [f"{{\n{line}\n}} > serve.log 2>&1 &", "SERVERS+=($!)", _wait_for_health()]
            else:
                parts.append(line)
    return "\n".join(parts) + "\n"


def _logical_lines(text: str) -> list[str]:
    """Lines joined across trailing backslashes, so a background `&` lands after a whole command."""
    out, pending = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line + "\n"
        else:
            out.append(pending + line)
            pending = ""
    return out


def _wait_for_health() -> str:
    return (f"for i in $(seq 600); do curl -sf http://127.0.0.1:{PORT}/health >/dev/null && break; "
            "kill -0 ${SERVERS[-1]} 2>/dev/null || { cat serve.log >&2; exit 1; }; sleep 0.5; done")


def test_untagged_blocks_hold_no_commands():
    for doc in DOCS:
        for lang, start, text in blocks(doc):
            if lang not in ("bash", "python"):
                starts = [line for line in text.splitlines() if line.startswith(("inhouse ", "python ", "from inhouse"))]
                assert not starts, f"{doc.name}:{start}: a block with commands needs a bash or python tag: {starts[0]}"


def test_ci_runs_the_second_set_up_command_verbatim():
    setup = [text for _, _, text in blocks(ROOT / "README.md")[:SETUP_BLOCKS]]
    assert setup[0].strip().endswith("inhouse quickstart")
    assert setup[1].strip() in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_every_readme_and_docs_block_runs_as_written(tmp_path):
    if not shutil.which("curl"):
        pytest.fail("curl is needed: the README's curl example runs too")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    env = {**os.environ, "INHOUSE_HOME": str(tmp_path / "home"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MODEL", None)
    (tmp_path / "readme.sh").write_text(script(runnable()))
    proc = subprocess.run(["bash", str(tmp_path / "readme.sh")], cwd=work, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    where = [line for line in proc.stderr.splitlines() if line.startswith(">>> ")]
    assert proc.returncode == 0, f"failed in {where[-1] if where else '?'}:\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
    assert len(where) == len(runnable())
    assert '"object":"chat.completion"' in proc.stdout.replace(" ", "")  # the curl example's answer
    assert "succeeded" in proc.stdout  # the fine-tuning job of the jobs example
