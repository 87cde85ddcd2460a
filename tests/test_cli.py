"""The command line as a user meets it: one-line errors, exit codes, help, the journey."""

import os
import subprocess
import sys

import pytest
from helpers import EXAMPLES, chat, hashes, write_jsonl

from inhouse.recipe import Recipe


def inhouse(*args, env=None, home=None, timeout=None):
    """No time limit by default: a loaded machine must never turn slowness into a failure."""
    full_env = {**os.environ, **(env or {})}
    if home:
        full_env["INHOUSE_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "inhouse", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_help_lists_every_recipe_field_with_its_default():
    proc = inhouse("train", "--help", env={"COLUMNS": "250"})
    assert proc.returncode == 0
    for name, field in Recipe.model_fields.items():
        assert "--" + name.replace("_", "-") in proc.stdout
    assert "(default: 16)" in proc.stdout and "(default: all-linear)" in proc.stdout


def test_data_check_reports_problems_with_lines_and_exit_1(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{not json\n', encoding="utf-8")
    proc = inhouse("data", "check", bad)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{bad}:1" in proc.stdout and "example_missing_assistant_message" in proc.stdout
    assert f"{bad}:2" in proc.stdout and "invalid_json" in proc.stdout


def test_data_check_ok_prints_token_stats(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [chat("hi", "hello"), chat("a", "b" * 50)])
    proc = inhouse("data", "check", good, "--max-seq-length", "40", "--model", "builtin:tiny")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "median" in proc.stdout and "p95" in proc.stdout and f"{good}:2" in proc.stdout


def test_data_check_without_a_model_checks_structure_only(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [chat("hi", "hello"), chat("a", "b" * 50)])
    proc = inhouse("data", "check", good)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 valid" in proc.stdout and "give --model to measure" in proc.stdout and "median" not in proc.stdout
    assert_one_line_error(inhouse("data", "check", good, "--chat-template", "chatml"), "--chat-template needs --model")


@pytest.mark.parametrize("content,needle", [
    (b"", "empty"),
    (b"\x00\x01\x02binary junk\xff", "binary"),
    ('{"prompt": "caf\xe9", "completion": "x"}\n'.encode("latin-1"), "UTF-8"),
])
def test_data_check_file_level_errors(tmp_path, content, needle):
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    assert_one_line_error(inhouse("data", "check", path), str(path), needle)


def test_missing_file_errors(tmp_path):
    assert_one_line_error(inhouse("data", "check", tmp_path / "nope.jsonl"), "nope.jsonl")


def test_recipe_typo_is_one_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lora_rnak: 8\n", encoding="utf-8")
    assert_one_line_error(inhouse("train", recipe, home=tmp_path), "r.yaml", "lora_rnak", "unknown field")


def test_recipe_bad_yaml_names_the_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 2\nlora_r: [1,\n", encoding="utf-8")
    assert_one_line_error(inhouse("train", recipe, home=tmp_path), "r.yaml:")


def test_hub_model_offline_names_hf_hub_offline(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [chat("hi", "hello")] * 3)
    proc = inhouse("train", "--train-file", data, "--base-model", "someorg/some-model-xyz", home=tmp_path,
                   env={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(proc, "HF_HUB_OFFLINE", "local model folder")


def test_missing_local_model_folder(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [chat("hi", "hello")] * 3)
    proc = inhouse("train", "--train-file", data, "--base-model", tmp_path / "no-model", home=tmp_path)
    assert_one_line_error(proc, "no-model", "no such model folder")


def test_train_then_generate_through_the_cli(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "d.jsonl", [chat("Best day?", "Tuesday.")] * 4)
    proc = inhouse("train", "--base-model", tiny_dir, "--train-file", data, "--max-steps", "40",
                   "--learning-rate", "1e-2", "--validation-fraction", "0", "--output-name", "cli", "-q",
                   home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = inhouse("generate", "cli", "--prompt", "Best day?", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Tuesday."
    listing = inhouse("adapters", home=tmp_path)
    assert "cli" in listing.stdout


@pytest.mark.slow
def test_quickstart_runs_offline_end_to_end(tmp_path):
    before = hashes(EXAMPLES)
    proc = inhouse("quickstart", home=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert hashes(EXAMPLES) == before  # the sample data is read, never written
    for stage in ("[1/4] data", "[2/4] training", "[3/4] validation loss", "[4/4] answers", "done."):
        assert stage in proc.stdout
    before, after = proc.stdout.split("[3/4] validation loss: ")[1].split(" (")[0].split(" before -> ")
    assert float(after.split()[0]) < 0.6 * float(before)


def test_a_usage_error_is_clicks_message_not_a_crash(tmp_path):
    """typer 0.2x raises its own copy of click's exceptions: they are still usage errors (exit 2, the
    flag named, a pointer to --help), never 'error: BadParameter ... run with --debug'."""
    from helpers import run_cli

    good = write_jsonl(tmp_path / "good.jsonl", [chat("hi", "hello")])
    for args, needle in ((["data", "check", good, "--max-seq-length", "abc"], "Invalid value for '--max-seq-length'"),
                         (["data", "chek"], "No such command 'chek'"),
                         (["data", "check", good, "--nope"], "No such option: --nope")):
        code, out, err = run_cli(*args)
        assert code == 2 and needle in err and "--help" in err, err
        assert "--debug" not in err and "Traceback" not in err


@pytest.mark.parametrize("text,needle", [
    ("[" * 100_000, "nested too deeply"),
    ("{a: " * 10_000, "nested too deeply"),
    ("null: 3\n", "None is not a field name"),
    ("1: 3\n", "1 is not a field name"),
    ("max_steps: 3\x00\n", "invalid YAML: unacceptable character #x0000"),
])
def test_odd_recipes_are_one_line_naming_the_file(tmp_path, text, needle):
    """Found by the fuzz corpus: a RecursionError, 'keywords must be strings' and a two-line YAML error."""
    from helpers import run_cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text(text, encoding="utf-8")
    code, out, err = run_cli("train", recipe)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "r.yaml" in err and needle in err and "--debug" not in err


def test_jobs_limits_are_bounded_flags(tmp_path):
    """Found by the fuzz corpus: a 23-digit --limit reached SQLite as an OverflowError."""
    from helpers import run_cli

    for args in (["jobs", "list", "--limit", "99999999999999999999999"], ["jobs", "events", "ftjob-x", "--limit", "-1"]):
        code, out, err = run_cli(*args, env={"INHOUSE_HOME": str(tmp_path)})
        assert code == 2 and "Invalid value for '--limit'" in err and "--debug" not in err, err


def test_a_knowledge_base_where_nothing_can_be_written_is_one_line():
    """Found by the fuzz corpus: `--kb /proc/x` was a FileNotFoundError through the catch-all."""
    from inhouse.errors import InhouseError
    from inhouse.rag.store import LanceStore

    with pytest.raises(InhouseError, match=r"^/proc/x: cannot write the knowledge base there .*choose another --kb"):
        with LanceStore("/proc/x").writer("e", 4):
            pass
