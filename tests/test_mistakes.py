"""Mistakes get fast, exact answers: a wrong name is answered before any deep-learning library loads."""

import os
import subprocess
import sys

from helpers import chat, write_jsonl

HEAVY = ("torch", "transformers")


def run(*args, home, env=None):
    """The command with `-X importtime`, so a test can see what it imported before answering."""
    full = {**os.environ, "INHOUSE_HOME": str(home), **(env or {})}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "inhouse", *map(str, args)],
                          capture_output=True, text=True, env=full)


def error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("import time:")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    assert "--debug" not in lines[0]
    return lines[0]


def imported(proc) -> set[str]:
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def make_adapter_folder(home, name):
    folder = home / "adapters" / name
    folder.mkdir(parents=True)
    (folder / "inhouse.json").write_text('{"name": "%s", "base_model": "builtin:tiny"}' % name)


def test_a_misspelt_adapter_gets_did_you_mean_without_loading_torch(tmp_path):
    make_adapter_folder(tmp_path, "support-bot")
    for command in (["generate", "suport-bot", "--prompt", "hi"], ["chat", "suport-bot"],
                    ["eval", "suport-bot", "--data", "x.jsonl"], ["merge", "suport-bot"],
                    ["ask", "q", "--adapter", "suport-bot", "--kb", "k"]):
        proc = run(*command, home=tmp_path)
        line = error_line(proc)
        assert "'suport-bot'" in line and "did you mean 'support-bot'?" in line, (command, line)
        assert not imported(proc) & set(HEAVY), command


def test_a_misspelt_builtin_model_and_a_bare_word_are_not_sent_to_the_hub(tmp_path):
    line = error_line(run("generate", "builtin:tinny", "-p", "hi", home=tmp_path))
    assert "no adapter or model named 'builtin:tinny'" in line and "did you mean 'builtin:tiny'?" in line
    line = error_line(run("generate", "qwen", "-p", "hi", home=tmp_path))
    assert "no adapter or model named 'qwen'" in line and "huggingface" not in line.lower()


def test_a_hub_id_out_of_reach_fails_on_the_first_attempt(tmp_path):
    """No retries: an unreachable endpoint is one connection attempt (a closed local port here)."""
    proc = run("generate", "someorg/some-model", "-p", "hi", home=tmp_path,
               env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")})
    line = error_line(proc)
    assert "cannot be reached" in line and "HF_HUB_OFFLINE" not in line and "Retry" not in proc.stderr
    proc = run("generate", "someorg/some-model", "-p", "hi", home=tmp_path,
               env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert "HF_HUB_OFFLINE is set" in error_line(proc)


def test_train_with_a_wrong_base_model_answers_before_loading_torch(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [chat("hi", "hello")] * 3)
    proc = run("train", "--train-file", data, "--base-model", "buitin:tiny", home=tmp_path)
    assert "did you mean 'builtin:tiny'?" in error_line(proc)
    assert not imported(proc) & set(HEAVY)


def test_stratify_on_a_missing_field_names_the_fields_that_exist(tmp_path):
    rows = [chat("q%d" % i, "a%d" % i) | {"topic": "t%d" % (i % 2), "id": i} for i in range(20)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    line = error_line(run("data", "prepare", data, "--out", tmp_path / "out", "--stratify", "category", home=tmp_path))
    assert "--stratify category" in line and "id, topic" in line
    assert not (tmp_path / "out").exists()
    ok = run("data", "prepare", data, "--out", tmp_path / "out", "--stratify", "topic", home=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_config_errors_name_flags_not_fields(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [chat("hi", "hello")] * 3)
    line = error_line(run("data", "prepare", data, "--out", tmp_path / "o", "--validation", "2", home=tmp_path))
    assert line.startswith("error: --validation:") and "recipe" not in line
    line = error_line(run("train", "--train-file", data, "--output-name", "a/b", home=tmp_path))
    assert "--output-name" in line and "output_name" not in line
    line = error_line(run("eval", "x", "--data", data, "--max-new-tokens", "0", home=tmp_path))
    assert "--max-new-tokens" in line and "recipe" not in line


def test_a_misspelt_knowledge_base_gets_did_you_mean(tmp_path):
    (tmp_path / "kb" / "handbook").mkdir(parents=True)
    line = error_line(run("rag", "search", "refunds", "--kb", "handbok", home=tmp_path))
    assert "did you mean 'handbook'?" in line and "inhouse rag index" in line
