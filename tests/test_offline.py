"""No network: the quickstart, `rag index`, `ask`, `rag eval` and `eval` complete in a network namespace
with no interfaces (`unshare -n`), with no offline switch set (HF_HUB_OFFLINE and the like removed)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import chat, write_jsonl

SRC = Path(__file__).resolve().parents[1] / "src"
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def unshare_command() -> list[str]:
    """`unshare -n` as root; `-rn` (a user namespace first) otherwise."""
    return ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]


def why_no_namespace() -> str | None:
    try:
        done = subprocess.run([*unshare_command(), "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare cannot run here: {exc}"
    return None if done.returncode == 0 else f"unshare is not permitted here: {done.stderr.strip()}"


pytestmark = [pytest.mark.slow, pytest.mark.skipif(why_no_namespace() is not None,
                                                   reason=str(why_no_namespace()))]


def offline(home: Path, *args: str, timeout: int = 1800) -> str:
    """`python ARGS` in a fresh network namespace; fails the test on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_SWITCHES}
    env |= {"PYTHONPATH": str(SRC), "INHOUSE_HOME": str(home)}
    done = subprocess.run([*unshare_command(), sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_namespace_really_has_no_network(home):
    out = offline(home, "-c", "import socket; print(sorted(n for _, n in socket.if_nameindex()))")
    assert out.strip() == "['lo']"
    with pytest.raises(AssertionError, match="exit 1"):
        offline(home, "-c", "import socket; socket.create_connection(('1.1.1.1', 443), timeout=5)")


def test_quickstart_then_rag_and_eval_need_no_network(tmp_path, home):
    out = offline(home, "-m", "inhouse", "quickstart")
    assert "done. adapter:" in out
    adapter = next((home / "adapters").iterdir()).name
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds take five working days.\n", encoding="utf-8")
    (docs / "shipping.txt").write_text("Orders ship from Leeds within two days.", encoding="utf-8")
    offline(home, "-m", "inhouse", "rag", "index", str(docs), "--kb", "shop")
    out = offline(home, "-m", "inhouse", "ask", "How long do refunds take?", "--kb", "shop", "--adapter", adapter,
                  "--max-new-tokens", "16", "--min-similarity", "-1")
    assert out.strip()
    (tmp_path / "q.tsv").write_text("1\thow long do refunds take\n", encoding="utf-8")
    (tmp_path / "q.qrels").write_text("1 0 refunds 1\n", encoding="utf-8")
    offline(home, "-m", "inhouse", "rag", "eval", "--kb", "shop", "--queries", str(tmp_path / "q.tsv"),
            "--qrels", str(tmp_path / "q.qrels"))
    held_out = write_jsonl(tmp_path / "held.jsonl", [chat("Where is my order?", "It ships today."),
                                                      chat("Can I get a refund?", "Yes, within 30 days.")])
    out = offline(home, "-m", "inhouse", "eval", adapter, "--data", str(held_out), "--max-new-tokens", "16",
                  "--out", str(tmp_path / "report"))
    assert (tmp_path / "report").is_dir()
