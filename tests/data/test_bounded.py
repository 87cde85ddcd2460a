"""Memory follows the largest example, never the file; over-size input is a one-line error naming
file and line, not an allocation that runs until the machine kills it. Peak memory is measured in a
child process (ru_maxrss), so the numbers are the real command's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from inhouse.data import dedup, read
from inhouse.data.conversation import Conversation, Message
from inhouse.data.split import balance
from inhouse.errors import InhouseError
from tests.helpers import chat, write_jsonl
from tests.test_cli import assert_one_line_error, inhouse


def _peak_mb_of(*args, env=None) -> tuple[subprocess.CompletedProcess, float]:
    """Run `inhouse ARGS` in a child that reports its own high-water mark (VmHWM): ru_maxrss of a
    child forked from pytest starts at pytest's size, since Linux keeps it across exec."""
    code = ("import runpy, sys; sys.argv = ['inhouse', *sys.argv[1:]]\n"
            "try: runpy.run_module('inhouse', run_name='__main__')\n"
            "finally: print('PEAK', open('/proc/self/status').read().split('VmHWM:')[1].split()[0], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)
    peak = int(proc.stderr.rsplit("PEAK", 1)[1].split()[0]) / 1024
    return proc, peak


def _csv_with_field(path, mb: int, line: str = "word " * 11 + "\n"):
    """A quoted answer of `mb` MB on many short lines (only the field limit can catch it)."""
    body = line * (mb * 1024 * 1024 // len(line))
    path.write_text('prompt,response\nhello,"' + body + '"\nhi,there\n', encoding="utf-8")
    return path


def test_csv_field_over_the_limit_is_a_one_line_error(tmp_path):
    path = _csv_with_field(tmp_path / "big.csv", 3)
    proc = inhouse("data", "check", path, env={"INHOUSE_MAX_EXAMPLE_MB": "2"}, timeout=120)
    assert_one_line_error(proc, "big.csv:2:", "field is longer than", "INHOUSE_MAX_EXAMPLE_MB")
    one_line = _csv_with_field(tmp_path / "line.csv", 3, "word " * 100)
    proc = inhouse("data", "check", one_line, env={"INHOUSE_MAX_EXAMPLE_MB": "2"}, timeout=120)
    assert_one_line_error(proc, "line.csv:2:", "line is longer than", "INHOUSE_MAX_EXAMPLE_MB")


def test_a_15_mb_field_stays_well_below_a_gigabyte(tmp_path):
    """It took 3 GB; now the default limit lets it load and `data check` stays a small multiple of it."""
    path = _csv_with_field(tmp_path / "big.csv", 15)
    proc, peak = _peak_mb_of("data", "check", path)
    print(f"data check, one 15 MB field: peak {peak:.0f} MB")
    assert proc.returncode == 0, proc.stderr
    assert peak < 400
    # dedup hashed the whole answer at ~60 bytes a character (600 MB); now 2 MB pieces at a time
    proc, peak = _peak_mb_of("data", "prepare", path, "--out", tmp_path / "out", "--pii", "off", "--no-normalize")
    print(f"data prepare, one 15 MB field: peak {peak:.0f} MB")
    assert proc.returncode == 0, proc.stderr
    assert peak < 500


def test_json_array_element_over_the_limit_is_a_problem_on_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(read, "MAX_LINE_BYTES", 200)
    path = tmp_path / "a.json"
    path.write_text(json.dumps([chat("hi", "x" * 300), chat("hi", "ok")], indent=1), encoding="utf-8")
    records = list(read.read_records(path))
    assert records[0].problem.code == "line_too_long" and "INHOUSE_MAX_EXAMPLE_MB" in records[0].problem.message
    assert records[1].ok


def test_bad_limit_setting_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("INHOUSE_MAX_EXAMPLE_MB", "lots")
    with pytest.raises(InhouseError, match="INHOUSE_MAX_EXAMPLE_MB='lots'"):
        list(read.read_records(write_jsonl(tmp_path / "a.jsonl", [chat("hi", "ok")])))


def test_long_texts_hash_in_pieces_to_the_same_signature(monkeypatch):
    """Pieces share k-1 characters, so every shingle is seen: identical signatures and shingle sets."""
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("abcdef "), n)) for n in (0, 3, 5, 6, 40, 3000, 9999)]
    whole = dedup.signatures(texts)
    sets = [dedup._shingle_set(t, 5) for t in texts]
    monkeypatch.setattr(dedup, "_CHARS_PER_BATCH", 7)
    assert (dedup.signatures(texts) == whole).all()
    assert all(np.array_equal(a, dedup._shingle_set(t, 5)) for a, t in zip(sets, texts))


def _convs(n: int) -> list[Conversation]:
    return [Conversation((Message("user", f"q{i}"), Message("assistant", "a")), meta={"category": f"c{i % 3}"})
            for i in range(n)]


def test_absurd_upsample_is_refused_before_anything_is_built():
    with pytest.raises(InhouseError, match=r"upsample_to 1000000000 would make 3000000000 training examples from 30"):
        balance(_convs(30), "category", upsample_to=10**9)
    assert len(balance(_convs(30), "category", upsample_to=1000)[0]) == 3000  # within bounds: built


def test_absurd_upsample_flag_is_a_one_line_error(tmp_path):
    rows = [chat(f"q{i}", f"a{i}") | {"category": "x"} for i in range(20)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    proc = inhouse("data", "prepare", data, "--out", tmp_path / "out", "--upsample-to", "900000", timeout=120)
    assert_one_line_error(proc, "upsample_to 900000 would make")  # within the flag's bound, absurd for this data
    assert not (tmp_path / "out").exists()
    proc = inhouse("data", "prepare", data, "--out", tmp_path / "out", "--upsample-to", "500000000", timeout=120)
    assert_one_line_error(proc, "--upsample-to: Input should be less than or equal to 1000000")


def test_check_streams_a_large_file_in_little_memory(tmp_path):
    """200,000 tiny examples: memory of a few numbers per example, not of every Conversation."""
    path = tmp_path / "many.jsonl"
    line = json.dumps(chat("Where is my order?", "It ships tomorrow.")) + "\n"
    path.write_text(line * 200_000, encoding="utf-8")
    proc, peak = _peak_mb_of("data", "check", path)
    print(f"data check, 200,000 examples: peak {peak:.0f} MB")
    assert proc.returncode == 0 and "200000 valid" in proc.stdout, proc.stdout + proc.stderr
    assert peak < 150
