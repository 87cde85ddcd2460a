"""`inhouse eval` prints every number its report holds, as base / tuned / delta."""

import json
import subprocess
import sys

from helpers import chat, write_jsonl

from inhouse import recipe as recipe_mod
from inhouse.eval.summary import format_summary
from inhouse.events import Events
from inhouse.train.sft import train

RECORDS = [("Who is Ada?", {"name": "Ada", "age": 36, "city": {"name": "London"}}),
           ("Who is Alan?", {"name": "Alan", "age": 41, "city": {"name": "Wilmslow"}}),
           ("Who is Grace?", {"name": "Grace", "age": 85, "city": {"name": "Arlington"}})]
SCHEMA = {"type": "object", "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}


def numeric_keys(metrics, prefix=""):
    """Dotted names of every number in a nested metrics dict (what the summary must show)."""
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from numeric_keys(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)):
            yield f"{prefix}{key}"


def row(out, name):
    return next(line.split() for line in out.splitlines() if line.split()[:1] == [name])


def test_cli_summary_shows_every_metric_the_report_computed(tmp_path, tiny_dir, home):
    data = write_jsonl(tmp_path / "people.jsonl", [chat(q, json.dumps(a)) for q, a in RECORDS])
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=4,
                              output_name="people")
    train(recipe, events=Events())
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"question": "2+2?", "choices": ["3", "4"], "answer": 1}])
    proc = subprocess.run([sys.executable, "-m", "inhouse", "eval", "people", "--data", str(data),
                           "--schema", str(schema), "--judge", "builtin:tiny", "--refusal-phrases", "sorry,cannot",
                           "--multiple-choice", str(mc), "--max-new-tokens", "8", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    shown = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    expected = set(numeric_keys(report["base"])) | set(numeric_keys(report["tuned"]))
    assert {"json.parse_rate", "json.schema_rate", "json.field_accuracy.city.name", "bleu", "perplexity",
            "token_accuracy", "mean_length", "refusal_rate"} <= expected
    assert expected <= shown, expected - shown
    assert {"judge.unparsed", "judge.n", "forgetting.ppl", "forgetting.mc", "forgetting.relative_change"} <= shown
    assert row(proc.stdout, "judge.unparsed")[1:3] == [str(report["judge"]["base"]["unparsed"]),
                                                        str(report["judge"]["tuned"]["unparsed"])]
    assert "report:" in proc.stdout


def test_summary_is_an_aligned_base_tuned_delta_table():
    report = {"base": {"f1": 0.25, "n": 3, "json": {"parse_rate": 0.5, "schema_rate": None}},
              "tuned": {"f1": 0.75, "n": 3, "json": {"parse_rate": 1.0, "schema_rate": None}},
              "judge": {"base": {"means": {"relevance": 2.0}, "n": 3, "unparsed": 1, "raw": ["x"]},
                        "tuned": {"means": {"relevance": 4.5}, "n": 3, "unparsed": 0, "raw": ["y"]}},
              "forgetting": {"ppl_before": 10.0, "ppl_after": 12.5, "relative_change": 0.25, "mc_before": None,
                             "mc_after": None, "flagged": True, "reasons": ["perplexity rose 25%"]}}
    out = format_summary(report)
    lines = out.splitlines()
    assert lines[0].split() == ["metric", "base", "tuned", "delta"]
    assert row(out, "f1") == ["f1", "0.2500", "0.7500", "+0.5000"]
    assert row(out, "json.schema_rate") == ["json.schema_rate", "-", "-", "-"]
    assert row(out, "judge.means.relevance") == ["judge.means.relevance", "2.0000", "4.5000", "+2.5000"]
    assert row(out, "judge.unparsed") == ["judge.unparsed", "1", "0", "-1"]
    assert row(out, "forgetting.ppl") == ["forgetting.ppl", "10.0000", "12.5000", "+2.5000"]
    assert row(out, "forgetting.relative_change") == ["forgetting.relative_change", "-", "0.2500", "-"]
    assert "raw" not in out and lines[-1] == "forgetting: FLAGGED - perplexity rose 25%"
    assert len({len(line) for line in lines[:-1]}) == 1  # every column right-aligned to one edge
