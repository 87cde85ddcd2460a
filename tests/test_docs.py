"""The docs match the tool: every `inhouse ...` command shown in README.md and docs/ (code blocks and
quoted in prose) names a real command, and every flag it uses is one that command accepts."""

import re
import shlex
from pathlib import Path

import pytest
from helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shown_commands():
    """(file:line, argv) of each `inhouse` command line inside a fenced code block."""
    found = []
    for doc in DOCS:
        fenced = False
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip().startswith("```"):
                fenced = not fenced
                continue
            if fenced:
                match = re.search(r"(?:^|&& |\.venv/bin/|=\S+ )inhouse ([^#`]*)", line)
                spans = [match.group(1).split("&&")[0].strip().rstrip("\\").strip()] if match else []
            else:  # `inhouse ...` quoted in prose
                spans = [m.group(1) for m in re.finditer(r"`inhouse ([a-z][^`]*)`", line)]
            for command in spans:
                words = shlex.split(command.replace("|", " "))
                if words and not words[0].startswith(("-", "<")) and words[0].islower():
                    found.append((f"{doc.relative_to(ROOT)}:{n}", words))
    return found


COMMANDS = shown_commands()
GROUPS = {"data", "rag", "jobs", "adapters"}


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 15  # the parser above finds them (a guard, not a target)


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_each_documented_command_and_flag_exists(where, argv):
    words = argv[:2] if argv[0] in GROUPS else argv[:1]
    code, out, err = run_cli(*words, "--help", env={"COLUMNS": "300"})
    assert code == 0, f"{where}: 'inhouse {' '.join(words)}' is not a command: {err}"
    for flag in (a.split("=")[0] for a in argv if a.startswith("-") and a != "-"):
        assert re.search(rf"(^|[\s,/]){re.escape(flag)}([\s,/=]|$)", out, re.M), \
            f"{where}: 'inhouse {' '.join(words)}' has no flag {flag}"
