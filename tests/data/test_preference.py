"""Preference pairs: both shapes read into PreferencePairs, every problem named with file:line and field,
`data check` and `data prepare` on pair files, and supervised training refusing them in one line."""

import json

import pytest
from helpers import EXAMPLES, run_cli, write_jsonl

from inhouse.data.conversation import Message
from inhouse.data.formats import load_conversations
from inhouse.data.preference_check import check_pairs
from inhouse.data.preference_formats import (NotPreferenceData, is_preference_file, load_pairs, named_messages,
                                             read_pairs)
from inhouse.data.prepare import PrepareConfig, prepare, write_prepared
from inhouse.errors import InhouseError

SYSTEM = {"role": "system", "content": "You are Lumen & Loom's support assistant."}
USER = {"role": "user", "content": "Can I return a scarf?"}
POLITE = {"role": "assistant", "content": "Of course: you have 30 days, and the label is free."}
CURT = {"role": "assistant", "content": "Check the website."}
WEATHER = {"type": "function", "function": {"name": "order_status", "parameters": {"type": "object"}}}


def openai_row(prompt=(USER,), chosen=(POLITE,), rejected=(CURT,), **extra):
    return {"input": {"messages": list(prompt)}, "preferred_output": list(chosen),
            "non_preferred_output": list(rejected)} | extra


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def one(tmp_path, row):
    result = read_pairs(write_jsonl(tmp_path / "pairs.jsonl", [row]))
    assert result.problems == [], result.problems
    (pair,) = result.pairs
    return result.format, pair


def texts(messages):
    return [(m.role, m.content) for m in messages]


# --- reading both shapes -------------------------------------------------------------------------------


def test_openai_preference_jsonl(tmp_path):
    call = {"id": "c1", "type": "function", "function": {"name": "order_status", "arguments": '{"id": 7}'}}
    row = openai_row(prompt=[SYSTEM, USER], chosen=[{"role": "assistant", "tool_calls": [call]},
                                                    {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
                                                    assistant("It shipped today.")], category="returns")
    row["input"]["tools"] = [WEATHER]
    fmt, pair = one(tmp_path, row)
    assert fmt == "preference_openai" and pair.line == 1 and pair.meta == {"category": "returns"}
    assert texts(pair.prompt) == [("system", SYSTEM["content"]), ("user", USER["content"])]
    assert [m.role for m in pair.chosen] == ["assistant", "tool", "assistant"]
    assert pair.chosen[0].tool_calls[0].name == "order_status" and pair.tools == (WEATHER,)
    assert texts(pair.rejected) == [("assistant", CURT["content"])]
    assert pair.side("chosen").messages == pair.prompt + pair.chosen


@pytest.mark.parametrize("row", [
    {"prompt": USER["content"], "chosen": POLITE["content"], "rejected": CURT["content"]},
    {"prompt": [USER], "chosen": [POLITE], "rejected": [CURT]},
    {"prompt": USER["content"], "chosen": [POLITE], "rejected": [CURT]},  # TRL's *-trl-style datasets
    {"chosen": [USER, POLITE], "rejected": [USER, CURT]},  # implicit prompt
    {"prompt": USER["content"], "chosen": [USER, POLITE], "rejected": [USER, CURT]},  # UltraFeedback: both
], ids=["strings", "conversational", "string-prompt", "implicit", "prompt-and-conversations"])
def test_trl_shapes_give_the_same_pair(tmp_path, row):
    fmt, pair = one(tmp_path, row)
    assert fmt == "preference_trl"
    assert (texts(pair.prompt), texts(pair.chosen), texts(pair.rejected)) == (
        [("user", USER["content"])], [("assistant", POLITE["content"])], [("assistant", CURT["content"])])


def test_implicit_prompt_splits_where_the_conversations_part(tmp_path):
    shared = [SYSTEM, user("Hi"), assistant("Hello! How can I help?"), USER]
    same_start = assistant("Let me look.")
    _, pair = one(tmp_path, {"chosen": [*shared, same_start, POLITE], "rejected": [*shared, same_start, CURT]})
    assert len(pair.prompt) == 4 and pair.prompt[-1].content == USER["content"]
    # the answers start at the assistant turn after the last shared user turn, even where they open alike
    assert texts(pair.chosen) == [("assistant", "Let me look."), ("assistant", POLITE["content"])]
    assert texts(pair.rejected) == [("assistant", "Let me look."), ("assistant", CURT["content"])]


def test_a_longer_prompt_that_ends_with_the_shared_turns_is_kept(tmp_path):
    _, pair = one(tmp_path, {"prompt": [SYSTEM, USER], "chosen": [USER, POLITE], "rejected": [USER, CURT]})
    assert [m.role for m in pair.prompt] == ["system", "user"]


def test_table_with_prompt_chosen_rejected_columns(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected,notes\nCan I return it?,\"Yes, within 30 days.\",No.,x\n", encoding="utf-8")
    assert is_preference_file(path)
    result = read_pairs(path)
    assert result.problems == [] and texts(result.pairs[0].chosen) == [("assistant", "Yes, within 30 days.")]


def test_is_preference_file(tmp_path):
    assert is_preference_file(write_jsonl(tmp_path / "a.jsonl", [openai_row()]))
    assert is_preference_file(write_jsonl(tmp_path / "b.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}]))
    assert not is_preference_file(write_jsonl(tmp_path / "c.jsonl", [{"messages": [USER, POLITE]}]))
    assert not is_preference_file(write_jsonl(tmp_path / "d.jsonl", [{"question": "q"}]))
    assert not is_preference_file(EXAMPLES / "support.jsonl")
    assert is_preference_file(EXAMPLES / "preferences.jsonl")
    with pytest.raises(InhouseError, match="no such file"):
        is_preference_file(tmp_path / "missing.jsonl")


def test_conversations_are_not_pairs(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [USER, POLITE]}])
    with pytest.raises(NotPreferenceData, match=r"chat.jsonl:1: holds chat conversations, not preference pairs"):
        read_pairs(path)


def test_named_messages():
    from inhouse.data.preference import PreferencePair

    pair = PreferencePair((Message("user", "q"),), (Message("assistant", "a"),), (Message("assistant", "b"),))
    assert [name for name, _ in named_messages(pair)] == ["prompt[0]", "chosen[0]", "rejected[0]"]


# --- every problem, with its line and field ------------------------------------------------------------

PROBLEMS = [
    ({"prompt": "q", "rejected": "b"}, "missing_chosen", "chosen"),
    ({"prompt": "q", "chosen": "a"}, "missing_rejected", "rejected"),
    ({"prompt": "q", "chosen": "a", "rejected": None}, "missing_rejected", "rejected"),
    ({"chosen": "The sky is blue.", "rejected": "The sky is green."}, "missing_prompt", "prompt"),
    ({"chosen": [POLITE], "rejected": [CURT]}, "missing_prompt", "prompt"),
    ({"prompt": [], "chosen": "a", "rejected": "b"}, "missing_prompt", "prompt"),
    ({"prompt": "q", "chosen": "Same answer.", "rejected": " Same  answer.\n"}, "identical_answers", "rejected"),
    ({"prompt": "q", "chosen": [], "rejected": "b"}, "empty_answer", "chosen"),
    ({"chosen": [USER, POLITE], "rejected": [USER]}, "empty_answer", "rejected"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, "missing_content", "chosen"),
    ({"prompt": "q", "chosen": [assistant("  ")], "rejected": "b"}, "missing_content", "chosen[0].content"),
    ({"prompt": [USER, POLITE], "chosen": "a", "rejected": "b"}, "prompt_not_ending_with_user", "prompt[1].role"),
    ({"prompt": "q", "chosen": [USER], "rejected": "b"}, "answer_not_assistant", "chosen[0].role"),
    ({"chosen": [USER, POLITE], "rejected": [USER, POLITE, user("more?"), CURT]}, "answer_not_assistant",
     "rejected[2].role"),
    ({"prompt": "q", "chosen": [POLITE, {"role": "tool", "tool_call_id": "x", "content": "r"}], "rejected": "b"},
     "unknown_tool_call_id", "chosen[1].tool_call_id"),
    ({"prompt": "q", "chosen": [{**POLITE, "weight": 0}], "rejected": "b"}, "example_missing_assistant_message",
     "chosen"),
    ({"prompt": "Hey", "chosen": [USER, POLITE], "rejected": [USER, CURT]}, "prompt_mismatch", "prompt"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "wrong_type", "prompt"),
    ({"prompt": "q", "chosen": {"role": "assistant", "content": "a"}, "rejected": "b"}, "wrong_type", "chosen"),
    ({"prompt": "q", "chosen": ["a"], "rejected": "b"}, "wrong_type", "chosen[0]"),
    ({"prompt": "q", "chosen": [{"role": "robot", "content": "a"}], "rejected": "b"}, "unrecognized_role",
     "chosen[0].role"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "reason": "tone"}, "unrecognized_key", "reason"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "preferred_output": []}, "unrecognized_key", "preferred_output"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "images": ["x.png"]}, "multimodal_content", "images"),
    (["q", "a", "b"], "data_type", ""),
]


def test_every_problem_names_its_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}]
                       + [row for row, _, _ in PROBLEMS])
    result = read_pairs(path)
    assert (result.total, len(result.pairs)) == (len(PROBLEMS) + 1, 1)
    got = [(p.line, p.code, p.field) for p in result.problems]
    assert got == [(n, code, fld) for n, (_, code, fld) in enumerate(PROBLEMS, 2)]
    code, out, _ = run_cli("data", "check", path)
    assert code == 1 and "pairs.jsonl:2: missing_chosen [chosen]: no 'chosen'" in out
    assert "pairs.jsonl:13: prompt_not_ending_with_user [prompt[1].role]" in out


OPENAI_PROBLEMS = [
    (openai_row(chosen=()), "empty_answer", "preferred_output"),
    ({k: v for k, v in openai_row().items() if k != "preferred_output"}, "missing_chosen", "preferred_output"),
    ({k: v for k, v in openai_row().items() if k != "non_preferred_output"}, "missing_rejected",
     "non_preferred_output"),
    ({k: v for k, v in openai_row().items() if k != "input"}, "missing_prompt", "input"),
    (openai_row(prompt=()), "missing_messages_list", "input.messages"),
    (openai_row() | {"input": "Can I return a scarf?"}, "wrong_type", "input"),
    (openai_row() | {"input": {"messages": [USER], "temperature": 0}}, "unrecognized_key", "input.temperature"),
    (openai_row() | {"input": {"messages": [USER], "tools": "nope"}}, "invalid_tools", "input.tools"),
    (openai_row(chosen=[CURT]), "identical_answers", "non_preferred_output"),
    (openai_row() | {"preferred_output": POLITE["content"]}, "wrong_type", "preferred_output"),
    (openai_row(rejected=[USER]), "answer_not_assistant", "non_preferred_output[0].role"),
    (openai_row(prompt=[SYSTEM]), "prompt_not_ending_with_user", "input.messages[0].role"),
]


def test_openai_problems_name_openai_fields(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [openai_row()] + [row for row, _, _ in OPENAI_PROBLEMS])
    got = [(p.line, p.code, p.field) for p in read_pairs(path).problems]
    assert got == [(n, code, fld) for n, (_, code, fld) in enumerate(OPENAI_PROBLEMS, 2)]


def test_a_line_in_the_other_shape_says_so(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, openai_row()])
    (problem,) = read_pairs(path).problems
    assert problem.code == "missing_chosen" and "one file holds one format" in problem.message


def test_invalid_json_is_a_problem_not_a_crash(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [openai_row()])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"input": \n')
    result = read_pairs(path)
    assert [(p.line, p.code) for p in result.problems] == [(2, "invalid_json")] and len(result.pairs) == 1


def test_load_pairs_refuses_a_file_with_problems(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [openai_row(), openai_row(chosen=[CURT])])
    with pytest.raises(InhouseError, match=r"pairs.jsonl:2: identical_answers .*inhouse data check"):
        load_pairs(path)
    assert len(load_pairs(EXAMPLES / "preferences.jsonl")) == 20


# --- supervised training refuses pairs -------------------------------------------------------------------


def test_supervised_training_refuses_a_pair_file_in_one_line(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [openai_row()])
    with pytest.raises(InhouseError, match=r"pairs.jsonl: this is preference data .*`method: dpo`"):
        load_conversations(path)
    code, out, err = run_cli("train", "--base-model", "builtin:tiny", "--train-file", path,
                             env={"INHOUSE_HOME": str(tmp_path / "home")})
    assert code == 1 and err.count("\n") == 1 and "method: dpo" in err and "Traceback" not in err


# --- data check ------------------------------------------------------------------------------------------


def chars(conv) -> int:
    """A stand-in tokenizer: one token per character of content."""
    return sum(len(m.content) for m in conv.messages)


def test_check_measures_both_sides(tmp_path):
    rows = [{"prompt": "qq", "chosen": "aaaa", "rejected": "b"},  # chosen side 6, rejected side 3
            {"prompt": [SYSTEM, user("q")], "chosen": "a" * 20, "rejected": "bb"},
            {"prompt": "qq", "chosen": "cc", "rejected": "b"},  # the same prompt as line 1
            {"prompt": "qq", "chosen": "x", "rejected": "x"}]
    report = check_pairs(write_jsonl(tmp_path / "p.jsonl", rows), chars, max_seq_length=10)
    assert (report.total, report.valid, report.prompts, report.system) == (4, 3, 2, 1)
    system = len(SYSTEM["content"])
    assert (report.chosen_tokens.min, report.chosen_tokens.max) == (4, system + 21)
    assert (report.rejected_tokens.min, report.rejected_tokens.max) == (3, system + 3)
    assert report.too_long == [(f"{tmp_path / 'p.jsonl'}:2", system + 21)]
    assert [(p.line, p.code) for p in report.problems] == [(4, "identical_answers")]


def test_check_cli_on_the_example(tmp_path):
    code, out, err = run_cli("data", "check", EXAMPLES / "preferences.jsonl")
    assert code == 0, out + err
    assert "preference_trl format, 20 pairs, 20 valid, 0 with problems" in out
    assert "Prompts: 20 distinct; with a system message: 20" in out and "OK: ready to train with method: dpo" in out


# --- data prepare ----------------------------------------------------------------------------------------


def support_pairs():
    rows = [{"prompt": [SYSTEM, user(f"Where is order LL-{20400 + 37 * i}?")],
             "chosen": f"Hi! Order LL-{20400 + 37 * i} left Porto on day {i} and arrives within 5 days.",
             "rejected": "Check the tracking.", "category": ["shipping", "returns"][i % 2]} for i in range(20)]
    rows[3]["prompt"][1] = user("Where is my order? Write to jane.doe@example.com")
    rows[4]["rejected"] = "Ask jane.doe@example.com, not me."
    rows[5]["chosen"] = "Call us on +44 20 7946 0958 and we'll sort it out."
    rows.append(dict(rows[1], rejected="Whatever."))  # line 21: prompt and chosen of line 2 again
    rows.append(dict(rows[2], chosen=rows[2]["chosen"].replace("arrives", "arrive")))  # line 22: near copy of 3
    rows.append(dict(rows[6], chosen=rows[6]["rejected"], rejected=rows[6]["chosen"]))  # line 23: line 7 reversed
    rows.append({"prompt": "q", "chosen": "same", "rejected": "same"})  # line 24: unusable
    return rows


def events_at(prepared, line):
    return [(e.step, e.action, e.reason) for e in prepared.events if e.where.endswith(f":{line}")]


def test_prepare_pairs_dedups_redacts_and_splits(tmp_path):
    path = write_jsonl(tmp_path / "raw.jsonl", support_pairs())
    prepared = prepare(path, PrepareConfig(validation=0.2, stratify="category"))
    assert prepared.unit == "pairs" and prepared.counts["unit"] == "pairs"
    assert events_at(prepared, 24)[0][:2] == ("load", "removed") and "identical_answers" in events_at(prepared, 24)[0][2]
    assert events_at(prepared, 21) == [("dedup", "removed", f"exact duplicate (prompt and chosen answer) of {path}:2")]
    assert events_at(prepared, 22)[0][:2] == ("dedup", "removed") and "near duplicate" in events_at(prepared, 22)[0][2]
    assert events_at(prepared, 23) == [("conflicts", "flagged", f"prefers the answer {path}:7 rejects, for the same prompt")]
    assert events_at(prepared, 4) == [("pii", "changed", "EMAIL j***@e***.com in prompt[1]")]
    assert events_at(prepared, 5) == [("pii", "changed", "EMAIL j***@e***.com in rejected[0]")]
    assert events_at(prepared, 6)[0][:2] == ("pii", "changed") and "in chosen[0]" in events_at(prepared, 6)[0][2]
    kept = prepared.train + prepared.validation
    assert len(kept) == 21 and len(prepared.validation) == 4
    assert prepared.counts["strata"] == {"returns": {"train": 8, "validation": 2, "test": 0},
                                         "shipping": {"train": 9, "validation": 2, "test": 0}}
    everything = " ".join(m.content for p in kept for _, m in named_messages(p))
    assert "jane.doe" not in everything and "7946" not in everything and "<EMAIL>" in everything


def test_prepared_pairs_are_openai_preference_jsonl_and_read_back(tmp_path):
    call = {"id": "c1", "type": "function", "function": {"name": "order_status", "arguments": '{"id": 7}'}}
    rows = [openai_row(prompt=[SYSTEM, user(f"Question {i}?")], category="c", id=f"p{i}") for i in range(5)]
    rows[0]["input"]["tools"] = [WEATHER]
    rows[0]["preferred_output"] = [{"role": "assistant", "tool_calls": [call]},
                                   {"role": "tool", "tool_call_id": "c1", "content": "shipped"}, assistant("Shipped.")]
    rows[1] |= {"prompt_id": "x", "score_chosen": 9.5, "score_rejected": 2.0}
    path = write_jsonl(tmp_path / "raw.jsonl", rows)
    config = PrepareConfig(validation=0, dedup=False)
    prepared = prepare(path, config)
    write_prepared(prepared, path, config, tmp_path / "out")
    lines = (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert set(first) == {"input", "preferred_output", "non_preferred_output", "category", "id"}
    assert first["input"]["tools"] == [WEATHER] and first["preferred_output"][0]["tool_calls"][0]["id"] == "c1"
    assert json.loads(lines[1])["score_chosen"] == 9.5
    again = read_pairs(tmp_path / "out" / "train.jsonl")
    assert again.problems == [] and again.format == "preference_openai"
    assert [(p.prompt, p.chosen, p.rejected, p.meta, p.tools) for p in again.pairs] == \
        [(p.prompt, p.chosen, p.rejected, p.meta, p.tools) for p in prepared.train]
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "Loaded 5 pairs" in report and "| pairs after |" in report


def test_prepare_pairs_options(tmp_path):
    path = write_jsonl(tmp_path / "raw.jsonl", support_pairs())
    dropped = prepare(path, PrepareConfig(validation=0, pii="drop", conflicts="drop", dedup=False))
    lines = {p.line for p in dropped.train}
    assert {4, 5, 6, 7, 23}.isdisjoint(lines) and {21, 22} <= lines
    assert ("conflicts", "removed", "another pair prefers the answer it rejects") in events_at(dropped, 7)


def test_schema_applies_to_the_chosen_answer_only(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["status"]}))
    rows = [{"prompt": "Status of 1?", "chosen": '{"status": "open"}', "rejected": "open"},
            {"prompt": "Status of 2?", "chosen": "closed", "rejected": '{"status": "closed"}'}]
    prepared = prepare(write_jsonl(tmp_path / "raw.jsonl", rows), PrepareConfig(validation=0, schema_file=schema))
    assert [p.line for p in prepared.train] == [1]
    assert events_at(prepared, 2)[0][:2] == ("schema", "removed") and "chosen side messages[1] not_json" in \
        events_at(prepared, 2)[0][2]


def test_length_counts_both_sides(tmp_path):
    rows = [{"prompt": "q", "chosen": "fine", "rejected": "x " * 400}, {"prompt": "q2", "chosen": "ok", "rejected": "no"}]
    prepared = prepare(write_jsonl(tmp_path / "raw.jsonl", rows), PrepareConfig(validation=0, max_seq_length=200))
    assert [p.line for p in prepared.train] == [2]
    (length,) = [e for e in events_at(prepared, 1) if e[0] == "length"]
    assert length[1] == "removed" and "(the longer side; pairs are not truncated)" in length[2]


def test_prepare_cli_and_scan_on_pairs(tmp_path):
    path = write_jsonl(tmp_path / "raw.jsonl", support_pairs())
    code, out, err = run_cli("data", "prepare", path, "--out", tmp_path / "out")
    assert code == 0, err
    assert out.startswith("24 pairs read; ")
    code, out, err = run_cli("data", "check", tmp_path / "out" / "train.jsonl")
    assert code == 0 and "preference_openai format" in out
    code, out, err = run_cli("data", "scan", path)
    assert f"{path}:4  prompt[1] user  EMAIL" in out and f"{path}:5  rejected[0] assistant  EMAIL" in out
    assert code == 1 and "1 record is not a valid example" in out  # line 24, scanned all the same
