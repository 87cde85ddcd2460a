"""The output-path rules every writing command shares: inputs are never eaten, foreign folders never replaced."""

import json
import os
import subprocess

import pytest

from inhouse import atomic, outputs
from inhouse.errors import ConflictError, InvalidInputError


@pytest.fixture
def proj(tmp_path):
    """A user's project: a data file in a folder, beside an unrelated folder of theirs."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "data.jsonl").write_text("{}\n", encoding="utf-8")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    return tmp_path


def test_output_equal_to_containing_or_inside_an_input_is_refused(proj):
    data = proj / "proj" / "data.jsonl"
    with pytest.raises(InvalidInputError, match="is the input"):
        outputs.claim(data, "prepared data", [data], overwrite=True)
    with pytest.raises(InvalidInputError, match="contains the input"):
        outputs.claim(proj / "proj", "prepared data", [data], overwrite=True)
    with pytest.raises(InvalidInputError, match="is inside the input"):
        outputs.claim(proj / "proj" / "out", "knowledge base", [proj / "proj"], overwrite=True)
    outputs.claim(proj / "proj" / "out", "prepared data", [data])  # beside a file input is fine


def test_symlinks_are_resolved_on_both_sides(proj):
    (proj / "link").symlink_to(proj / "proj")
    with pytest.raises(InvalidInputError, match="contains the input"):
        outputs.claim(proj / "link", "prepared data", [proj / "proj" / "data.jsonl"], overwrite=True)
    with pytest.raises(InvalidInputError, match="is the input"):
        outputs.claim(proj / "proj" / "data.jsonl", "prepared data", [proj / "link" / "data.jsonl"])


def test_an_unrelated_folder_or_a_file_is_never_replaced(proj):
    for overwrite in (False, True):
        with pytest.raises(ConflictError, match="was not written by inhouse"):
            outputs.claim(proj / "mine", "prepared data", overwrite=overwrite)
        with pytest.raises(InvalidInputError, match="existing file"):
            outputs.claim(proj / "mine" / "notes.txt", "evaluation report", overwrite=overwrite)
    assert (proj / "mine" / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_only_inhouse_output_of_the_same_kind(proj):
    first = outputs.claim(proj / "out", "prepared data").write(lambda d: (d / "a.txt").write_text("1"))
    assert outputs.marker_kind(first) == "prepared data"
    with pytest.raises(ConflictError, match="pass --overwrite"):
        outputs.claim(proj / "out", "prepared data")
    with pytest.raises(ConflictError, match="another kind of output"):
        outputs.claim(proj / "out", "evaluation report", overwrite=True)
    outputs.claim(proj / "out", "prepared data", overwrite=True).write(lambda d: (d / "b.txt").write_text("2"))
    assert sorted(p.name for p in (proj / "out").iterdir()) == [outputs.MARKER, "b.txt"]


def test_an_empty_existing_folder_may_be_used(proj):
    (proj / "empty").mkdir()
    outputs.claim(proj / "empty", "evaluation report").write(lambda d: (d / "r.json").write_text("{}"))
    assert (proj / "empty" / "r.json").is_file()


def test_the_target_is_checked_again_just_before_the_swap(proj):
    claimed = outputs.claim(proj / "late", "prepared data")

    def fill(folder):  # meanwhile, the user puts their own files there
        (proj / "late").mkdir()
        (proj / "late" / "theirs.txt").write_text("x")

    with pytest.raises(ConflictError):
        claimed.write(fill)
    assert (proj / "late" / "theirs.txt").read_text() == "x"
    assert not [p for p in proj.iterdir() if ".staging-" in p.name]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_staging_left_by_a_killed_run_is_cleaned_up_by_the_next(proj):
    stale = proj / f".out.staging-{dead_pid()}-abc"
    legacy = proj / ".out.staging-k3j2h1g0"  # the name format before pids were recorded
    live = proj / f".out.staging-{os.getpid()}-xyz"
    for folder in (stale, legacy, live):
        folder.mkdir()
        (folder / "half.bin").write_bytes(b"\0" * 10)
    outputs.claim(proj / "out", "prepared data").write(lambda d: None)
    assert not stale.exists() and not legacy.exists()
    assert live.exists()  # a run in progress keeps its staging folder


def test_a_swap_killed_between_its_renames_gets_the_old_folder_back(proj):
    old = proj / f".out.old-{dead_pid()}-abc"
    old.mkdir()
    atomic.write_json(old / outputs.MARKER, {"kind": "prepared data"})
    (old / "train.jsonl").write_text("previous")
    atomic.remove_stale(proj / "out")
    assert (proj / "out" / "train.jsonl").read_text() == "previous" and not old.exists()


def test_json_with_a_non_utf8_file_name_is_still_written(tmp_path):
    name = os.fsdecode(b"caf\xe9.jsonl")
    atomic.write_json(tmp_path / "x.json", {"source": name, "text": "café"})
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8"))["source"] == name
