"""`inhouse adapters` list, show, tag, diff and rm, as a user meets them."""

import io
import json
import os
import shutil
import subprocess
import sys
from unittest import mock

import pytest
from helpers import chat, run_cli, write_jsonl

from inhouse import atomic
from inhouse.adapters import registry, servers
from inhouse.adapters.diff import diff
from inhouse.adapters.lineage import Lineage, sha256_file
from inhouse.adapters.listing import size_on_disk
from inhouse.jobs.store import Store, now


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dir):
    """Adapters `a` (lora_r 16) and `b` (lora_r 8) trained once; each test gets its own copy."""
    home = tmp_path_factory.mktemp("library-home")
    data = write_jsonl(tmp_path_factory.mktemp("data") / "support.jsonl", [chat(f"Q{i}?", f"A{i}.") for i in range(5)])
    for name, rank in (("a", 16), ("b", 8)):
        code, out, err = run_cli("train", "--base-model", tiny_dir, "--train-file", data, "--max-steps", "2",
                                 "--lora-r", rank, "--output-name", name, "-q", env={"INHOUSE_HOME": str(home)})
        assert code == 0, out + err
    return home / "adapters", data


@pytest.fixture
def library(trained, home):
    shutil.copytree(trained[0], home / "adapters")
    return home / "adapters"


def cli(*args, answer=None):
    """run_cli with `answer` typed at the prompt (None: no input at all)."""
    with mock.patch.object(sys, "stdin", io.StringIO(answer or "")):
        return run_cli(*args)


def one_line_error(result, *needles):
    code, out, err = result
    assert code == 1 and "Traceback" not in err, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), err


def test_list_shows_each_entry_with_its_columns(library, trained):
    code, out, err = cli("adapters")
    assert code == 0, err
    assert cli("adapters", "list")[1] == out  # bare `adapters` is `list`
    lines = out.splitlines()
    assert lines[0] == f"2 adapter(s) in {library}"
    assert lines[1].split() == ["name", "base", "method", "data", "val", "loss", "size", "created", "(UTC)", "tags"]
    a = next(line for line in lines if line.startswith("a "))
    loss = registry.lineage(library / "a").metrics["validation_loss"]
    assert "lora" in a and "support.jsonl" in a and f"{loss:.4f}" in a and " KB " in a
    assert registry.lineage(library / "a").finished_at[:10] in a


def test_list_json_is_a_list_of_summaries(library, tiny_dir):
    code, out, err = cli("adapters", "list", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {"a", "b"}
    a = rows["a"]
    assert a["kind"] == "lora" and a["base_model"] == str(tiny_dir) and a["data"] == ["support.jsonl"]
    assert a["validation_loss"] == registry.lineage(library / "a").metrics["validation_loss"]
    assert a["size_bytes"] == size_on_disk(library / "a") > 0 and a["tags"] == [] and a["broken"] is None


def test_show_gives_the_whole_lineage_and_what_was_made_from_it(library, trained):
    registry.record("a", "evaluations", {"report": "/reports/a-1", "metrics": {"f1": {"base": 0.1, "tuned": 0.4}},
                                         "at": "2025-01-01T00:00:00+00:00"})
    registry.record("a", "exports", {"format": "gguf", "path": "/out/a.gguf", "at": "2025-01-02T00:00:00+00:00"})
    code, out, err = cli("adapters", "show", "a")
    assert code == 0, err
    assert sha256_file(trained[1]) in out and str(trained[1]) in out  # the data, by hash
    for needle in ("recipe", "lora_r: 16", "metrics", "validation_loss", "versions", "torch:", "evaluations",
                   "/reports/a-1", "exports", "/out/a.gguf", "training loss:"):
        assert needle in out, needle
    code, out, err = cli("adapters", "show", "a", "--json")
    shown = json.loads(out)
    assert shown == registry.lineage(library / "a").dump() | {"name": "a", "path": str(library / "a"),
                                                               "size_bytes": size_on_disk(library / "a")}
    one_line_error(cli("adapters", "show", "nope"), "no adapter 'nope'")


def test_show_of_a_job_checkpoint_names_its_job(library):
    registry.publish("ft-step-3", lambda folder: None, Lineage(name="ft-step-3", kind="checkpoint", step=3,
                                                               origin={"job": "ftjob-9", "training_file": "file-1"}))
    out = cli("adapters", "show", "ft-step-3")[1]
    assert "job ftjob-9, training_file file-1" in out and "step         3" in out


def test_tags_show_in_list_and_filter_it(library):
    assert cli("adapters", "tag", "a", "prod")[1].strip() == "a: tags prod"
    rows = json.loads(cli("adapters", "list", "--tag", "prod", "--json")[1])
    assert [r["name"] for r in rows] == ["a"] and rows[0]["tags"] == ["prod"]
    assert "prod" in cli("adapters", "show", "a")[1]
    assert cli("adapters", "tag", "a", "prod", "--remove")[1].strip() == "a: no tags"
    assert json.loads(cli("adapters", "list", "--tag", "prod", "--json")[1]) == []
    one_line_error(cli("adapters", "tag", "a", "prod", "--remove"), "no tag 'prod'")
    one_line_error(cli("adapters", "tag", "a", "two words"), "without spaces")
    one_line_error(cli("adapters", "tag", "../a", "x"), "no adapter '../a'")


def test_diff_names_only_what_differs(library):
    code, out, err = cli("adapters", "diff", "a", "b")
    assert code == 0, err
    recipe, metrics = out.split("\n\n")
    assert recipe.startswith("recipe: 2 field(s) differ")
    assert [line.split() for line in recipe.splitlines()[2:]] == [["lora_r", "16", "8"], ["output_name", "a", "b"]]
    assert "metric" in metrics and "delta" in metrics
    found = json.loads(cli("adapters", "diff", "a", "b", "--json")[1])
    assert found["recipe"][0] == {"field": "lora_r", "a": 16, "b": 8, "delta": -8}
    la, lb = (registry.lineage(library / n).metrics for n in ("a", "b"))
    changed = {c["field"]: c for c in found["metrics"]}
    assert set(changed) == {k for k in la if la[k] != lb[k]}
    numbers = [c for c in changed.values() if all(type(c[k]) in (int, float) for k in "ab")]
    assert numbers and all(c["delta"] == pytest.approx(c["b"] - c["a"]) for c in numbers)


def test_diff_compares_a_merged_model_by_its_adapters_training():
    adapter = Lineage(name="x", recipe={"lora_r": 4, "seed": 1}, metrics={"validation_loss": 2.0, "note": "a"})
    merged = Lineage(name="x-merged", kind="merged", parent=adapter)
    other = Lineage(name="y", recipe={"lora_r": 8, "seed": 1}, metrics={"validation_loss": 1.5, "note": "b"})
    d = diff(merged, other)
    assert [(c.field, c.a, c.b, c.delta) for c in d.recipe] == [("lora_r", 4, 8, 4)] and d.same_recipe == 1
    assert [(c.field, c.delta) for c in d.metrics] == [("validation_loss", -0.5), ("note", None)]


def test_rm_asks_first(library):
    code, out, err = cli("adapters", "rm", "a", answer="n\n")
    assert code == 1 and "remove 'a'" in out and "nothing removed" in err and (library / "a").is_dir()
    code, out, err = cli("adapters", "rm", "a")  # no answer at all (closed input) is a no
    assert code == 1 and (library / "a").is_dir()
    code, out, err = cli("adapters", "rm", "a", answer="y\n")
    assert code == 0 and "removed 'a'" in out and not (library / "a").exists()
    code, out, err = cli("adapters", "rm", "b", "--yes")
    assert code == 0 and "remove 'b'" not in out and not (library / "b").exists()
    assert list(library.iterdir()) == []  # no trash left behind
    one_line_error(cli("adapters", "rm", "b", "--yes"), "no adapter 'b'")


def job(store: Store, job_id: str, status: str, output_name: str, base: str = "builtin:tiny") -> None:
    store.insert("jobs", {"id": job_id, "created_at": now(), "status": status, "model": "tiny", "base": base,
                          "training_file": "file-1", "seed": 0, "hyperparameters": {}, "method": {}, "recipe": {},
                          "output_name": output_name})


def test_rm_is_refused_while_a_job_uses_the_adapter(library):
    store = Store()
    job(store, "ftjob-running", "running", "a")
    job(store, "ftjob-queued", "queued", "other", base=str(library / "b"))
    job(store, "ftjob-done", "succeeded", "b")
    registry.publish("a-step-10", lambda folder: None, Lineage(name="a-step-10", kind="checkpoint"))
    one_line_error(cli("adapters", "rm", "a", "--yes"), "adapter 'a' is in use", "ftjob-running (running) publishes it")
    one_line_error(cli("adapters", "rm", "a-step-10", "--yes"), "ftjob-running")
    one_line_error(cli("adapters", "rm", "b", "--yes"), "ftjob-queued (queued) trains on it")
    assert (library / "a").is_dir() and (library / "b").is_dir() and (library / "a-step-10").is_dir()
    store.update("jobs", "ftjob-running", status="cancelled")
    store.update("jobs", "ftjob-queued", status="failed")
    for name in ("a", "a-step-10", "b"):
        assert cli("adapters", "rm", name, "--yes")[0] == 0


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_rm_is_refused_while_a_live_server_has_it_loaded(library, home):
    registration = servers.register(["a"], base="builtin:tiny", port=8000)  # this process, alive
    try:
        one_line_error(cli("adapters", "rm", "a", "--yes"), f"inhouse serve (pid {os.getpid()}) has it loaded")
        registration.update(["b"])  # `a` was evicted, `b` loaded
        one_line_error(cli("adapters", "rm", "b", "--yes"), "has it loaded")
        assert cli("adapters", "rm", "a", "--yes")[0] == 0
    finally:
        registration.close()
    assert cli("adapters", "rm", "b", "--yes")[0] == 0


def test_registrations_of_dead_or_other_processes_are_ignored(library, home):
    folder = home / "servers"
    folder.mkdir()
    pid = dead_pid()
    atomic.write_json(folder / f"{pid}.json", {"pid": pid, "started": None, "adapters": ["a"]})
    if servers.started(os.getpid()) is not None:  # Linux: /proc tells when a process started
        # this pid, but recorded by a process that started at another time: the pid was reused
        atomic.write_json(folder / f"{os.getpid()}.json", {"pid": os.getpid(), "started": "1", "adapters": ["b"]})
    (folder / "garbage.json").write_text("{not json", encoding="utf-8")
    assert servers.live() == []
    assert cli("adapters", "rm", "a", "--yes")[0] == 0 and cli("adapters", "rm", "b", "--yes")[0] == 0
    servers.register([], base="x").close()  # a new server clears the stale files
    assert list(folder.iterdir()) == []


def test_a_removal_cut_short_leaves_nothing_under_the_name(library, monkeypatch):
    """The folder leaves its name in one rename; a crash while deleting the files leaves only hidden trash."""
    from inhouse.adapters.remove import remove

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.shutil, "rmtree", crash)
    with pytest.raises(KeyboardInterrupt):
        remove("a")
    assert not (library / "a").exists() and "a" not in registry.names()
    assert [r for r in json.loads(cli("adapters", "list", "--json")[1]) if r["name"] == "a"] == []
    assert [p.name.split("-")[0] for p in library.iterdir() if p.name.startswith(".")] == [".a.trash"]
