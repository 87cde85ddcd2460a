"""The typed lineage: every earlier inhouse.json still reads, one publish writes every entry, and
records append safely."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import chat, write_jsonl

from inhouse import recipe as recipe_mod
from inhouse.adapters import registry
from inhouse.adapters.lineage import Lineage
from inhouse.adapters.listing import details, format_show, summaries
from inhouse.errors import InhouseError, InvalidInputError, NotFoundError
from inhouse.events import Events

# Shapes written by earlier versions (keys and nesting as each wrote them).
OLD = {
    "skeleton": {"name": "skeleton", "kind": "lora", "base_model": "builtin:tiny",
                 "data": [{"path": "/data/d.jsonl", "sha256": "ab" * 32}], "examples": {"train": 3, "validation": 1},
                 "recipe": {"base_model": "builtin:tiny", "lora_r": 16, "a_field_since_removed": True},
                 "metrics": {"train_loss": 2.5, "validation_loss": 2.25}, "history": [{"step": 1, "loss": 2.5}],
                 "versions": {"python": "3.11.7", "torch": "2.4.0"},
                 "started_at": "2024-05-01T10:00:00+00:00", "finished_at": "2024-05-01T10:01:00+00:00"},
    "checkpoint": {"name": "ft-1234-step-20", "kind": "checkpoint", "base_model": "/models/tiny", "step": 20,
                   "metrics": {"step": 20, "train_loss": 1.5, "valid_loss": 1.75},
                   "origin": {"job": "ftjob-1", "training_file": "file-1"}, "finished_at": "2024-06-01T00:00:00+00:00"},
    "merged": {"name": "m-merged", "kind": "merged", "base_model": "/models/tiny", "merged_from": "m",
               "merged_dtype": "bfloat16", "versions": {"python": "3.11.7"}, "finished_at": "2024-07-01T00:00:00+00:00",
               "parent": {"name": "m", "kind": "lora", "path": "/home/u/.inhouse/adapters/m",
                          "data": [{"path": "/data/m.jsonl", "sha256": "cd" * 32}], "metrics": {"validation_loss": 1.0},
                          "recipe": {"lora_r": 8}}},
    "newer": {"name": "newer", "kind": "lora", "best_step": 40, "early_stopped": True,
              "a_key_from_the_future": {"nested": [1, 2]}, "speed": {"packing": True}},
}


def place(name: str, lineage: dict) -> Path:
    folder = registry.library() / name
    folder.mkdir(parents=True)
    (folder / registry.LINEAGE).write_text(json.dumps(lineage), encoding="utf-8")
    return folder


@pytest.mark.parametrize("name", list(OLD))
def test_every_earlier_lineage_reads_lists_shows_and_keeps_its_keys(name, home):
    folder = place(name, OLD[name])
    lineage = registry.lineage(folder)
    assert lineage.name == OLD[name]["name"] and lineage.tags == [] and lineage.evaluations == []
    assert lineage.dump() == OLD[name]  # nothing added, nothing lost
    [row] = summaries()
    assert row.name == name and row.broken is None
    assert name in format_show(details(name))
    registry.record(name, "exports", {"format": "gguf", "path": "/out/m.gguf"})
    written = json.loads((folder / registry.LINEAGE).read_text(encoding="utf-8"))
    assert written == OLD[name] | {"exports": [{"format": "gguf", "path": "/out/m.gguf"}]}


def test_typed_fields_of_old_files(home):
    place("checkpoint", OLD["checkpoint"])
    place("merged", OLD["merged"])
    rows = {r.name: r for r in summaries()}
    assert rows["checkpoint"].validation_loss == 1.75  # a job checkpoint's name for it
    assert rows["merged"].validation_loss == 1.0 and rows["merged"].data == ["m.jsonl"]  # its adapter's training
    merged = registry.lineage(registry.library() / "merged")
    assert merged.trained().name == "m" and merged.parent.model_extra["path"].endswith("/m")


def test_a_lineage_of_the_wrong_shape_is_one_line_naming_the_field(home):
    folder = place("odd", {"name": "odd", "tags": "prod"})
    with pytest.raises(InhouseError, match=r"inhouse.json: cannot be read \(tags: ") as info:
        registry.lineage(folder)
    assert "\n" not in str(info.value)
    [row] = summaries()
    assert row.broken and "tags" in row.broken


# --- publish ------------------------------------------------------------------------------


def test_train_merge_and_jobs_all_publish_through_one_function(tmp_path, tiny_dir, home, monkeypatch):
    import torch

    from inhouse.adapters.merge import merge
    from inhouse.jobs.run import publish_checkpoint
    from inhouse.train.sft import train

    published = []
    real = registry.publish
    monkeypatch.setattr(registry, "publish", lambda name, *a, **kw: published.append(name) or real(name, *a, **kw))
    data = write_jsonl(tmp_path / "d.jsonl", [chat("Best day?", "Tuesday."), chat("Colour?", "Blue.")])
    trained = train(recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=1,
                                     output_name="t"), events=Events()).path
    merged = merge("t", dtype=torch.float32)
    elsewhere = merge("t", dtype=torch.float32, out=tmp_path / "merged-here")
    job = {"id": "ftjob-1", "base": str(tiny_dir), "training_file": "file-1"}
    publish_checkpoint(str(trained), "t-step-1", job, 1, {"train_loss": 1.0})
    assert published == ["t", "t-merged", "t-merged", "t-step-1"]
    for folder, kind in ((trained, "lora"), (merged, "merged"), (elsewhere, "merged"),
                         (registry.library() / "t-step-1", "checkpoint")):
        lineage = registry.lineage(folder)
        assert lineage.kind == kind and lineage.finished_at
        card = (folder / "README.md").read_text(encoding="utf-8")
        assert card.startswith("---\n") and f"# `{lineage.name}`" in card and "made with inhouse" in card
    assert registry.lineage(elsewhere).parent.name == "t" and (elsewhere / ".inhouse-output.json").is_file()
    assert registry.lineage(registry.library() / "t-step-1").origin == {"job": "ftjob-1", "training_file": "file-1"}


# --- record and tag -----------------------------------------------------------------------


def test_record_appends_and_rewrites_the_card(home):
    folder = place("a", OLD["skeleton"])
    registry.record("a", "evaluations", {"report": "/r/1", "metrics": {"f1": {"base": 0.1, "tuned": 0.5}}, "at": "t1"})
    registry.record(folder, "evaluations", {"report": "/r/2", "at": "t2"})
    assert [e["report"] for e in registry.lineage(folder).evaluations] == ["/r/1", "/r/2"]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "## Evaluations" in card and "/r/2" in card
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_record_refuses_other_fields_and_foreign_folders(tmp_path, home):
    place("a", OLD["skeleton"])
    with pytest.raises(InvalidInputError, match="evaluations and exports"):
        registry.record("a", "metrics", {})
    foreign = tmp_path / "peft-folder"
    foreign.mkdir()
    (foreign / "adapter_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(NotFoundError, match="not made by inhouse"):
        registry.record(foreign, "exports", {})
    assert sorted(p.name for p in foreign.iterdir()) == ["adapter_config.json"]


WRITER = """
import sys
from inhouse.adapters import registry
for i in range(int(sys.argv[2])):
    registry.record(sys.argv[1], "exports", {"writer": int(sys.argv[3]), "i": i})
"""


def test_concurrent_records_are_all_kept(home):
    """Four processes appending at once: the lock makes each read-modify-write whole, so none is lost."""
    folder = place("a", OLD["skeleton"])
    env = {**os.environ, "INHOUSE_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), "15", str(w)], env=env) for w in range(4)]
    assert [p.wait() for p in procs] == [0] * 4
    exports = registry.lineage(folder).exports
    assert sorted((e["writer"], e["i"]) for e in exports) == [(w, i) for w in range(4) for i in range(15)]
    for w in range(4):  # each writer's entries in its own order
        assert [e["i"] for e in exports if e["writer"] == w] == list(range(15))


def test_tags_are_added_once_removed_and_checked(home):
    place("a", OLD["skeleton"])
    assert registry.tag("a", "prod").tags == ["prod"]
    assert registry.tag("a", "prod").tags == ["prod"]
    assert registry.tag("a", "v2").tags == ["prod", "v2"]
    assert registry.tag("a", "prod", remove=True).tags == ["v2"]
    with pytest.raises(NotFoundError, match="no tag 'prod'"):
        registry.tag("a", "prod", remove=True)
    for bad in ("", "two words", "a,b", "x" * 65):
        with pytest.raises(InvalidInputError):
            registry.tag("a", bad)
    assert "v2" in (registry.library() / "a" / "README.md").read_text(encoding="utf-8")  # Hub tags too


def test_a_new_lineage_writes_only_what_it_has():
    assert Lineage(name="n", kind="checkpoint", step=3).dump() == {"name": "n", "kind": "checkpoint", "step": 3}
