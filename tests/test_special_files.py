"""A FIFO, a device or a link to one is refused in one line, never read: reading a FIFO waits for a
writer forever and /dev/zero never ends. Each command runs in a child with a timeout, so a
regression fails here instead of hanging the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.test_cli import assert_one_line_error, inhouse

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
LIMIT_S = 60


@pytest.fixture
def specials(tmp_path):
    os.mkfifo(tmp_path / "pipe.jsonl")
    (tmp_path / "to_pipe.jsonl").symlink_to(tmp_path / "pipe.jsonl")
    (tmp_path / "to_zero.jsonl").symlink_to("/dev/zero")
    return tmp_path


@pytest.mark.parametrize("name", ["pipe.jsonl", "to_pipe.jsonl", "to_zero.jsonl", "/dev/zero", "/dev/urandom"])
@pytest.mark.parametrize("command", [["data", "check"], ["data", "scan"], ["data", "prepare"]])
def test_data_commands_refuse_special_files(specials, command, name):
    path = specials / name
    out = ["--out", specials / "out"] if command[-1] == "prepare" else []
    proc = inhouse(*command, path, *out, timeout=LIMIT_S)
    assert_one_line_error(proc, "is not a regular file")


def _ingest_in_child(root, *extra: str) -> dict:
    code = ("import json, sys; from inhouse.rag.ingest import ingest, scan_folder, load_document, UnreadableDocument\n"
            "root = sys.argv[1]; found, skipped = scan_folder(root, follow_links=True)\n"
            "direct = {}\n"
            "for name in sys.argv[2:]:\n"
            "    try: load_document(name); direct[name] = 'read'\n"
            "    except UnreadableDocument as e: direct[name] = e.reason\n"
            "print(json.dumps({'found': [str(p) for p in found], 'skipped': {str(p): why for p, why in skipped},"
            " 'ingest': dict(ingest(root).skipped), 'direct': direct}))")
    proc = subprocess.run([sys.executable, "-c", code, str(root), *extra], capture_output=True, text=True,
                          timeout=LIMIT_S, env=os.environ)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_rag_ingest_skips_fifos_devices_and_links_to_them(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Hello\n\nText.\n", encoding="utf-8")
    os.mkfifo(docs / "pipe.txt")
    (docs / "to_pipe.txt").symlink_to(docs / "pipe.txt")
    (docs / "to_zero.txt").symlink_to("/dev/zero")
    (docs / "to_urandom.md").symlink_to("/dev/urandom")
    seen = _ingest_in_child(docs, str(docs / "pipe.txt"), "/dev/zero", str(docs / "to_urandom.md"))
    assert seen["found"] == [str(docs / "good.md")]
    assert set(seen["skipped"]) == {str(docs / n) for n in ("pipe.txt", "to_pipe.txt", "to_zero.txt", "to_urandom.md")}
    assert all("not a regular file" in why for why in seen["skipped"].values())
    assert len(seen["ingest"]) == 4  # without --follow-links the device links are reported as links
    assert all("not a regular file" in why or "unsupported" in why for why in seen["direct"].values())


def test_an_oversize_document_is_skipped_with_its_reason(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "small.txt").write_text("fine\n", encoding="utf-8")
    (docs / "big.txt").write_text("word " * 300_000, encoding="utf-8")  # 1.5 MB
    code = ("import sys; from inhouse.rag.ingest import ingest; r = ingest(sys.argv[1]);"
            "print([d.title for d in r.documents]); print(r.skipped)")
    proc = subprocess.run([sys.executable, "-c", code, str(docs)], capture_output=True, text=True, timeout=LIMIT_S,
                          env={**os.environ, "INHOUSE_MAX_DOCUMENT_MB": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "['small']" in proc.stdout
    assert "big.txt" in proc.stdout and "over the 1 MiB limit" in proc.stdout and "INHOUSE_MAX_DOCUMENT_MB" in proc.stdout
