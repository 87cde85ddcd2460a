"""No silent partial work and no silent garbage: odd files are reported and skipped, never fatal or
ignored; unreadable data is scanned all the same; a diverged run and a broken library entry say so."""

import json
import os
import shutil

import pytest
from helpers import chat, run_cli, write_jsonl

from inhouse.rag.index import index
from inhouse.rag.ingest import scan_folder

BAD_NAME = os.fsdecode(b"r\xe9sum\xe9.md")  # Latin-1 bytes: not valid UTF-8


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "good.md").write_text("# Refunds\n\nRefunds take five working days.\n", encoding="utf-8")
    (root / BAD_NAME).write_text("# CV\n\nA document whose name is Latin-1.\n", encoding="utf-8")
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n", encoding="utf-8")
    (root / "passwd.txt").symlink_to(outside)
    (root / "alias.md").symlink_to(root / "good.md")  # a link that stays inside is fine
    os.mkfifo(root / "pipe.txt")
    return root


def test_scan_folder_skips_and_explains_odd_files(docs):
    found, skipped = scan_folder(docs)
    assert [p.name for p in found] == ["alias.md", "good.md"]
    reasons = {p.name: why for p, why in skipped}
    assert "outside the folder" in reasons["passwd.txt"] and "--follow-links" in reasons["passwd.txt"]
    assert "not valid UTF-8" in reasons[BAD_NAME]
    assert "not a regular file" in reasons["pipe.txt"]
    found, _ = scan_folder(docs, follow_links=True)
    assert "passwd.txt" in [p.name for p in found]


def test_rag_index_reports_odd_files_and_indexes_the_rest(docs, tmp_path):
    code, out, err = run_cli("rag", "index", docs, "--kb", tmp_path / "kb")
    assert code == 0, err
    assert "2 added" in out
    assert "skipped passwd.txt: is a link to" in out and "skipped pipe.txt: is not a regular file" in out
    assert "skipped r\\xe9sum\\xe9.md: its name is not valid UTF-8" in out
    code, out, err = run_cli("rag", "search", "root", "--kb", tmp_path / "kb", "--mode", "bm25")
    assert "root:x" not in out
    code, out, err = run_cli("rag", "index", docs, "--kb", tmp_path / "kb2", "--follow-links")
    assert code == 0 and "3 added" in out, out + err


def test_an_indexed_link_that_now_leaves_the_folder_loses_its_chunks(docs, tmp_path):
    from inhouse.rag.store import LanceStore

    index(docs, tmp_path / "kb", progress=False, follow_links=True)
    report = index(docs, tmp_path / "kb", progress=False)
    assert "passwd.txt" in report.removed
    assert "passwd.txt" not in LanceStore(tmp_path / "kb").manifest()


def test_prepare_reads_a_file_whose_name_is_not_utf8(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [chat(f"q{i}", f"a{i}") for i in range(10)])
    odd = tmp_path / os.fsdecode(b"donn\xe9es.jsonl")
    path.rename(odd)
    code, out, err = run_cli("data", "prepare", odd, "--out", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["source"].endswith("donn\\xe9es.jsonl")


def test_scan_reads_lines_it_cannot_parse(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(chat("hi", "hello")) + "\n"
                    + '{"messages": [{"role": "user", "content": "card 4111 1111 1111 1111\n'
                    + json.dumps({"prompt": "mail jane@example.com", "completion": 3}) + "\n"
                    + "ssn 123-45-6789 and nothing else\n", encoding="utf-8")
    code, out, err = run_cli("data", "scan", path)
    assert code == 1, out + err
    assert "no PII found" not in out
    for kind, line in (("CARD", 2), ("EMAIL", 3), ("SSN", 4)):
        assert any(f"{path}:{line}" in row and kind in row for row in out.splitlines()), (kind, out)
    assert "3 records are not a valid example" in out and f"{path}:2: invalid_json" in out


def test_scan_of_a_file_in_no_known_format_scans_every_string(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "reach me at jane@example.com", "a": "ok"}])
    code, out, err = run_cli("data", "scan", path)
    assert code == 1 and "EMAIL" in out and "could not recognise the format" in out, out + err


def test_non_finite_numbers_are_rejected_by_every_config(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [chat("hi", "hello")] * 4)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"train_file: {data}\nlearning_rate: .inf\n", encoding="utf-8")
    code, out, err = run_cli("train", recipe, env={"INHOUSE_HOME": str(tmp_path / "home")})
    assert code == 1 and "learning_rate: Input should be a finite number" in err
    code, out, err = run_cli("data", "prepare", data, "--out", tmp_path / "o", "--near-duplicate-threshold", "nan")
    assert code == 1 and "finite" in err
    code, out, err = run_cli("eval", "x", "--data", data, "--temperature", "inf")
    assert code == 1 and "finite" in err


def overflowing(model_dir, tmp_path):
    """The model with its final norm scaled by 1e20: finite logits whose gradients overflow float32, the way
    a diverged run does (the learning rate that once did this is now refused as absurd)."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "overflowing-model"
    shutil.copytree(model_dir, folder)
    weights = load_file(folder / "model.safetensors")
    weights = {k: v * 1e20 if k == "model.norm.weight" else v for k, v in weights.items()}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_a_diverging_run_stops_at_once_and_publishes_nothing(tmp_path, tiny_dir):
    home = tmp_path / "home"
    data = write_jsonl(tmp_path / "d.jsonl", [chat(f"Question {i}?", f"Answer {i}.") for i in range(16)])
    code, out, err = run_cli("train", "--base-model", overflowing(tiny_dir, tmp_path), "--train-file", data,
                             "--max-steps", "50", "--output-name", "boom", "-q", env={"INHOUSE_HOME": str(home)})
    assert code == 1, out + err
    assert "training diverged at step" in err and "nothing was published" in err
    step = int(err.split("at step ")[1].split()[0])
    assert step < 10  # stopped at the first non-finite loss, not after 50 steps of garbage
    assert not (home / "adapters" / "boom").exists() and not (home / "runs" / "boom").exists()


def test_one_broken_library_entry_does_not_break_the_listing(tmp_path, tiny_dir):
    home = tmp_path / "home"
    data = write_jsonl(tmp_path / "d.jsonl", [chat("hi", "hello")] * 4)
    for name in ("good", "bad"):
        code, out, err = run_cli("train", "--base-model", tiny_dir, "--train-file", data, "--max-steps", "1",
                                 "--output-name", name, "-q", env={"INHOUSE_HOME": str(home)})
        assert code == 0, err
    lineage = home / "adapters" / "bad" / "inhouse.json"
    lineage.write_text(lineage.read_text()[:40], encoding="utf-8")  # truncated
    code, out, err = run_cli("adapters", env={"INHOUSE_HOME": str(home)})
    assert code == 0, err
    assert "good" in out and "val loss" in out
    assert "bad" in out and "BROKEN" in out and str(lineage) in out
    code, out, err = run_cli("generate", "bad", "--prompt", "hi", env={"INHOUSE_HOME": str(home)})
    assert code == 1 and str(lineage) in err and "Traceback" not in err
