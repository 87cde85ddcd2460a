"""`inhouse eval` end to end on a real tiny training run: numbers, report, curves."""

import json
import subprocess
import sys

from helpers import chat, write_jsonl

from inhouse.events import Events
from inhouse import recipe as recipe_mod
from inhouse.eval.config import EvalConfig
from inhouse.eval.report import loss_curves, metric_rows
from inhouse.eval.run import evaluate, split_prompt
from inhouse.data.conversation import Conversation, Message
from inhouse.train.sft import train

FACTS = [("Favourite colour?", "Blue."), ("Meaning of life?", "Forty-two."),
         ("Best day?", "Tuesday."), ("Capital of Portugal?", "Lisbon.")]


def trained(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "facts.jsonl", [chat(q, a) for q, a in FACTS])
    val = write_jsonl(tmp_path / "val.jsonl", [chat(q, a) for q, a in FACTS[:2]])
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_file=val, max_steps=60,
                              learning_rate=1e-2, lora_dropout=0, warmup_ratio=0, lr_scheduler="constant",
                              eval_every=20, output_name="facts")
    train(recipe, events=Events())
    return data


def test_split_prompt_uses_the_last_assistant_turn():
    conv = Conversation((Message("system", "s"), Message("user", "a"), Message("assistant", "b"),
                         Message("user", "c"), Message("assistant", "d")))
    prompt, ref = split_prompt(conv)
    assert [m["content"] for m in prompt] == ["s", "a", "b", "c"] and ref == "d"


def test_eval_compares_base_and_tuned_and_writes_the_report(tmp_path, tiny_dir, home):
    data = trained(tmp_path, tiny_dir)
    result = evaluate("facts", EvalConfig(data=data, generation={"max_new_tokens": 16}, out=tmp_path / "report"))
    report = result.report
    assert report["tuned"]["exact_match"] == 1.0 and report["base"]["exact_match"] == 0.0
    assert report["tuned"]["loss"] < report["base"]["loss"]
    assert report["tuned"]["token_accuracy"] > report["base"]["token_accuracy"]
    deltas = [x["delta_f1"] for x in report["examples"]]
    assert deltas == sorted(deltas)
    files = sorted(p.name for p in result.path.iterdir())
    assert files == [".inhouse-output.json", "answers.jsonl", "report.html", "report.json"]
    assert len((result.path / "answers.jsonl").read_text().splitlines()) == len(FACTS)
    html = (result.path / "report.html").read_text()
    assert "data:image/png;base64," in html and "Forgetting check" in html and "Lineage" in html
    assert json.loads((result.path / "report.json").read_text())["n"] == len(FACTS)
    assert "forgetting" in report and "flagged" in report["forgetting"]
    from inhouse.adapters import registry

    [recorded] = registry.lineage(registry.resolve("facts")).evaluations  # the library adapter lists it
    assert recorded["report"] == str(result.path) and recorded["n"] == len(FACTS) and recorded["at"]
    assert recorded["metrics"]["exact_match"] == {"base": 0.0, "tuned": 1.0, "delta": 1.0}


def test_only_a_library_adapter_records_its_evaluations(tmp_path, home):
    from inhouse.adapters import registry
    from inhouse.adapters.lineage import Lineage
    from inhouse.eval.run import EvalResult, record_evaluation

    report = {"data": "d.jsonl", "n": 1, "base": {"f1": 0.25}, "tuned": {"f1": 0.5}}
    inside = registry.publish("lib", lambda folder: None, Lineage(name="lib"))
    outside = tmp_path / "mine"
    outside.mkdir()
    registry.write_lineage(outside, Lineage(name="mine"), outside)
    before = (outside / "inhouse.json").read_bytes()
    for folder in (inside, outside):
        record_evaluation(folder, EvalResult(tmp_path / "report", report))
    assert registry.lineage(inside).evaluations[0]["metrics"] == {"f1": {"base": 0.25, "tuned": 0.5, "delta": 0.25}}
    assert (outside / "inhouse.json").read_bytes() == before  # a user's folder is an input: never written


def test_eval_every_puts_validation_points_on_the_curves(tmp_path, tiny_dir, home):
    trained(tmp_path, tiny_dir)
    from inhouse.adapters import registry

    history = registry.lineage(registry.resolve("facts")).history
    train_points, val_points = loss_curves(history)
    assert len(train_points) == 60
    assert [s for s, _ in val_points][:4] == [0, 20, 40, 60]


def test_metric_rows_flatten_and_difference():
    rows = metric_rows({"f1": 0.5, "json": {"parse_rate": 0.5}}, {"f1": 0.75, "json": {"parse_rate": 1.0}})
    assert ("f1", 0.5, 0.75, 0.25) in rows and ("json.parse_rate", 0.5, 1.0, 0.5) in rows


def test_eval_cli_with_real_judge_path_counts_unparsed(tmp_path, tiny_dir, home):
    data = trained(tmp_path, tiny_dir)
    proc = subprocess.run([sys.executable, "-m", "inhouse", "eval", "facts", "--data", str(data),
                           "--judge", "builtin:tiny", "--max-new-tokens", "8", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "exact_match" in proc.stdout and "report:" in proc.stdout
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    judge = report["judge"]["tuned"]
    assert judge["n"] == len(FACTS) and judge["unparsed"] == len(FACTS)  # a random model's verdicts are garbage
