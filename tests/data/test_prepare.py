"""`data prepare` end to end: every removal and change reported with its line; atomic output."""

import hashlib
import json

import pytest
from helpers import chat, write_jsonl

from inhouse.data.prepare import PrepareConfig, prepare, write_prepared
from inhouse.errors import InhouseError

SCHEMA = {"type": "object", "required": ["status"], "properties": {"status": {"enum": ["open", "closed"]}}}


def raw_rows():
    rows = [chat(f"Ticket {i}: what's the status of order LL-{20400 + 37 * i}?", '{"status": "open"}')
            | {"category": ["billing", "shipping"][i % 2]} for i in range(20)]
    rows[3] = chat("Ticket 3 status? mail me at jane.doe@example.com", '```json\n{"status": "closed"}\n```') \
        | {"category": "shipping"}
    rows[5] = chat("Ticket 5 status?", '{"status": "lost"}') | {"category": "shipping"}
    rows[7] = chat("Ticket 7 status?\r\n  ", '{"status": "open"}  ') | {"category": "shipping"}
    rows.append(rows[1])  # exact duplicate of line 2 (line 21)
    rows.append(chat("Ticket 1: what's the status of order LL-20437??", '{"status": "open"}') | {"category": "shipping"})
    rows.append(chat("Ticket 9 status: " + "long " * 400, '{"status": "open"}'))  # line 23: too long
    return rows


def write_raw(tmp_path):
    path = write_jsonl(tmp_path / "raw.jsonl", raw_rows())
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"messages": [{"role": "user", "content": "no answer"}]}\n')  # line 24
    return path


def events_at(prepared, line):
    return [(e.step, e.action, e.reason) for e in prepared.events if e.where.endswith(f":{line}")]


def test_every_step_reports_what_it_did_with_the_line(tmp_path):
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(SCHEMA))
    config = PrepareConfig(schema_file=schema_file, max_seq_length=600, stratify="category", validation=0.2)
    prepared = prepare(write_raw(tmp_path), config)
    assert events_at(prepared, 24)[0][:2] == ("load", "removed")
    assert ("dedup", "removed") in [e[:2] for e in events_at(prepared, 21)]
    assert "exact duplicate of" in events_at(prepared, 21)[0][2] and ":2" in events_at(prepared, 21)[0][2]
    near = events_at(prepared, 22)
    assert near and near[0][:2] == ("dedup", "removed") and "near duplicate" in near[0][2]
    assert ("pii", "changed") in [e[:2] for e in events_at(prepared, 4)]
    assert any("EMAIL" in e[2] and "jane.doe" not in e[2] for e in events_at(prepared, 4))
    schema_events = events_at(prepared, 6)
    assert schema_events[0][:2] == ("schema", "removed") and "$.status" in schema_events[0][2]
    assert ("normalize", "changed") in [e[:2] for e in events_at(prepared, 8)]
    assert events_at(prepared, 23)[-1][:2] == ("length", "removed")
    kept = prepared.train + prepared.validation
    assert len(kept) == 24 - 1 - 2 - 1 - 1
    assert all("jane.doe@example.com" not in m.content for c in kept for m in c.messages)
    assert {c.meta["category"] for c in prepared.validation} == {"billing", "shipping"}


def test_truncate_drops_trailing_turns_instead_of_the_example(tmp_path):
    long_turns = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                               {"role": "user", "content": "more " * 300}, {"role": "assistant", "content": "ok"}]}
    path = write_jsonl(tmp_path / "t.jsonl", [long_turns, chat("a", "b")])
    prepared = prepare(path, PrepareConfig(max_seq_length=200, too_long="truncate", validation=0))
    first = next(c for c in prepared.train if c.line == 1)
    assert [m.content for m in first.messages] == ["Hi", "Hello."]
    assert events_at(prepared, 1)[-1][:2] == ("length", "changed")


def test_outputs_are_written_atomically_and_input_is_untouched(tmp_path, monkeypatch):
    raw = write_raw(tmp_path)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    config = PrepareConfig(validation=0.2, test=0.1)
    out = write_prepared(prepare(raw, config), raw, config, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == [".inhouse-output.json", "report.json", "report.md",
                                                      "test.jsonl", "train.jsonl", "validation.jsonl"]
    assert hashlib.sha256(raw.read_bytes()).hexdigest() == digest
    report = json.loads((out / "report.json").read_text())
    assert {e["where"] for e in report["events"]} <= {f"{raw}:{n}" for n in range(1, 25)}
    md = (out / "report.md").read_text()
    assert all(e["where"] in md for e in report["events"])
    with pytest.raises(InhouseError, match="already holds an earlier prepared data; pass --overwrite"):
        write_prepared(prepare(raw, config), raw, config, tmp_path / "out")

    def broken(report):
        raise RuntimeError("disk full")

    monkeypatch.setattr("inhouse.data.prepare_report.render_markdown", broken)
    with pytest.raises(RuntimeError):
        write_prepared(prepare(raw, config), raw, config, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_written_examples_load_back_with_weights_and_category(tmp_path):
    from inhouse.data.formats import load_dataset

    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "skip", "weight": 0},
                          {"role": "user", "content": "b"}, {"role": "assistant", "content": "keep"}],
             "category": "x"}] * 1 + [chat("q", "r") | {"category": "y"}]
    raw = write_jsonl(tmp_path / "w.jsonl", rows)
    config = PrepareConfig(validation=0)
    out = write_prepared(prepare(raw, config), raw, config, tmp_path / "o")
    back = load_dataset(out / "train.jsonl")
    assert not back.problems and len(back.conversations) == 2
    first = back.conversations[0]
    assert [m.weight for m in first.messages if m.role == "assistant"] == [0, 1] and first.meta["category"] == "x"


def test_adversarial_text_survives_and_pii_split_across_lines_is_caught(tmp_path):
    rows = [chat("مرحبا، أين طلبي؟ 📦👨‍👩‍👧", "Hi there, it ships Monday 🚚"),
            chat("card 4242 4242\n4242 4242 please refund", "Done."),
            chat("```json\n{\"a\": 1}\n```", "```json\n{\"status\": \"open\"}\n```")]
    prepared = prepare(write_jsonl(tmp_path / "adv.jsonl", rows), PrepareConfig(validation=0))
    texts = [m.content for c in prepared.train for m in c.messages]
    assert "مرحبا، أين طلبي؟ 📦👨‍👩‍👧" in texts
    assert any("<CARD>" in t for t in texts) and not any("4242" in t for t in texts)


def test_nothing_left_is_an_error_naming_the_steps(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [chat("my mail is a@example.com", "ok")])
    with pytest.raises(InhouseError, match="pii 1"):
        prepare(path, PrepareConfig(pii="drop"))


def test_prepare_cli_with_recipe_rules_and_scan(tmp_path):
    import subprocess
    import sys

    rows = [chat("Plan a meeting", json.dumps({"attendees": [{"role": "organizer"}, {"role": "guest"}]})),
            chat("Plan another", json.dumps({"attendees": [{"role": "guest"}]})),
            chat("Call me on +44 20 7946 0958", json.dumps({"attendees": [{"role": "organizer"}]}))]
    raw = write_jsonl(tmp_path / "m.jsonl", rows)
    recipe = tmp_path / "prep.yaml"
    recipe.write_text("validation: 0\nrules:\n  - name: one organizer\n    path: attendees[*]\n"
                      "    where: {role: organizer}\n    count: {equals: 1}\n", encoding="utf-8")
    run = lambda *a: subprocess.run([sys.executable, "-m", "inhouse", *map(str, a)], capture_output=True, text=True)
    proc = run("data", "prepare", raw, "--out", tmp_path / "o", "--recipe", recipe)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [(e["step"], e["where"]) for e in report["events"] if e["step"] == "schema"] == [("schema", f"{raw}:2")]
    scan = run("data", "scan", raw)
    assert scan.returncode == 0 and "PHONE" in scan.stdout and "7946 0958" not in scan.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "o", "prep.yaml"]


def test_counts_are_examples_and_every_report_agrees(tmp_path):
    """Two examples with two schema errors each: 2 removed (not 4) in the summary, report.md and report.json."""
    import json as json_mod

    from helpers import run_cli

    schema = tmp_path / "s.json"
    schema.write_text(json_mod.dumps({"type": "object", "required": ["city"]}), encoding="utf-8")

    def turn(q, a):
        return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]

    rows = [{"messages": turn("a", '{"city": "Paris"}')},
            {"messages": turn("b", '{"x": 1}') + turn("c", '{"y": 2}')},
            {"messages": turn("d", "not json") + turn("e", "nor this")},
            {"messages": turn("f", '{"city": "Rome"}')}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    code, out, err = run_cli("data", "prepare", data, "--out", tmp_path / "out", "--schema", schema,
                             "--validation", "0")
    assert code == 0, err
    assert "4 examples read; 2 removed, 0 changed" in out
    report = json_mod.loads((tmp_path / "out" / "report.json").read_text())
    assert report["counts"]["examples_removed"] == 2 and report["counts"]["by_step"]["schema"]["removed"] == 2
    assert sum(e["action"] == "removed" for e in report["events"]) == 4  # every error is still listed
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| schema | 2 | 0 | 0 |" in md and "2 removed, 0 changed" in md


@pytest.mark.parametrize(("mode", "kept"), [("keep", [1, 2, 3, 4, 5]), ("first", [1, 3, 5]), ("drop", [3, 5])])
def test_conflicting_answers_are_reported_with_both_lines(tmp_path, mode, kept):
    rows = [chat("When do you open on Sundays?", "We open at ten."),
            chat("when do you open on sundays?", "Sundays we are closed."),   # same prompt, other answer
            chat("What time do you open on Sundays, please?", "We open at ten."),  # near, same answer: no conflict
            chat("When do you open on Sunday?", "At noon."),                   # near prompt, other answer
            chat("How much is shipping?", "Free over 50 euros.")]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    prepared = prepare(path, PrepareConfig(conflicts=mode, dedup=False, validation=0, near_duplicate_threshold=0.7))
    events = [e for e in prepared.events if e.step == "conflicts"]
    assert any(e.where.endswith(":2") and f"{path}:1" in e.reason and "same prompt" in e.reason for e in events)
    assert any(e.where.endswith(":4") and "near-identical prompt" in e.reason for e in events)
    assert not any(e.where.endswith(":3") for e in events)
    assert sorted(c.line for c in prepared.train) == kept


def allow_rows():
    return [chat(f"How do I reset password {i}?", f"Step {i}: mail helpdesk@acme.com or call +1 800 555 0100.")
            for i in range(3)] + [chat("I'm jane@example.com, reset please", "Done, mail helpdesk@acme.com")]


def test_allowlist_keeps_public_contacts_and_the_reports_count_them(tmp_path):
    from helpers import run_cli

    data = write_jsonl(tmp_path / "d.jsonl", allow_rows())
    code, out, err = run_cli("data", "prepare", data, "--out", tmp_path / "o", "--validation", "0",
                             "--pii-allow", "@acme.com,+1 800 555 0100")
    assert code == 0, err
    assert "1 changed" in out
    train = (tmp_path / "o" / "train.jsonl").read_text()
    assert train.count("helpdesk@acme.com") == 4 and train.count("+1 800 555 0100") == 3
    assert "jane@example.com" not in train and "<EMAIL>" in train
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["pii_allow"] == ["@acme.com", "+1 800 555 0100"]
    assert report["counts"]["pii_allowed"] == {"EMAIL helpdesk@acme.com (allowed by @acme.com)": 4,
                                               "PHONE +1 800 555 0100 (allowed by +1 800 555 0100)": 3}
    assert report["counts"]["by_step"]["pii"] == {"removed": 0, "changed": 1, "flagged": 0}
    md = (tmp_path / "o" / "report.md").read_text()
    assert "## PII allowed (--pii-allow)" in md and "| EMAIL helpdesk@acme.com (allowed by @acme.com) | 4 |" in md
    assert "| pii | 0 | 1 | 0 |" in md
    assert md.count("allowed by") == 2  # counted once, not one row per occurrence in the pii table


def test_without_the_allowlist_the_same_contacts_are_redacted(tmp_path):
    prepared = prepare(write_jsonl(tmp_path / "d.jsonl", allow_rows()), PrepareConfig(validation=0))
    assert prepared.counts["examples_changed"] == 4 and prepared.counts["pii_allowed"] == {}
    assert all("helpdesk@acme.com" not in c.messages[-1].content for c in prepared.train)


def test_recipe_form_takes_pii_allow_and_a_bad_entry_stops_before_any_work(tmp_path):
    from helpers import run_cli

    data = write_jsonl(tmp_path / "d.jsonl", allow_rows())
    recipe = tmp_path / "p.yaml"
    recipe.write_text("validation: 0\npii_allow:\n  - 're:^helpdesk@'\n", encoding="utf-8")
    code, _, err = run_cli("data", "prepare", data, "--out", tmp_path / "o", "--recipe", recipe)
    assert code == 0, err
    train = (tmp_path / "o" / "train.jsonl").read_text()
    assert train.count("helpdesk@acme.com") == 4 and "+1 800 555 0100" not in train
    recipe.write_text("pii_allow: ['@acme']\n", encoding="utf-8")
    code, _, err = run_cli("data", "prepare", data, "--out", tmp_path / "o2", "--recipe", recipe)
    assert code == 1 and err.count("\n") == 1
    assert "pii_allow: --pii-allow '@acme': a domain entry is @example.com or @*.example.com" in err
    assert not (tmp_path / "o2").exists()


def test_data_scan_takes_pii_allow(tmp_path):
    from helpers import run_cli

    data = write_jsonl(tmp_path / "d.jsonl", allow_rows())
    code, out, err = run_cli("data", "scan", data, "--pii-allow", "@acme.com,re:^\\+1 800")
    assert code == 0, err
    assert out.splitlines()[-1] == "1 finding in 1 record: EMAIL 1; 7 allowed by --pii-allow: EMAIL 4, PHONE 3"
    code, _, err = run_cli("data", "scan", data, "--pii-allow", "re:(")
    assert code == 1 and "--pii-allow 're:(': not a regular expression" in err and err.count("\n") == 1
