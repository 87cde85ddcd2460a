"""Format detection, conversion, validation codes and problem summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inhouse.data.conversation import Conversation, Message, Problem
from inhouse.data.formats import load_conversations, load_dataset, summarise
from inhouse.errors import InhouseError


def jsonl(tmp_path: Path, rows: list, name: str = "data.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def chat(*msgs: dict) -> dict:
    return {"messages": list(msgs)}


def user(text: str = "Hi") -> dict:
    return {"role": "user", "content": text}


def bot(text: str = "Hello", **extra) -> dict:
    return {"role": "assistant", "content": text, **extra}


def only_problem(tmp_path: Path, row) -> Problem:
    """Load a file whose line 2 is `row` (line 1 fixes the format as chat)."""
    result = load_dataset(jsonl(tmp_path, [chat(user(), bot()), row]))
    assert len(result.problems) == 1, result.problems
    assert result.total == 2 and len(result.conversations) == 1
    problem = result.problems[0]
    assert problem.line == 2
    return problem


# --- formats load ----------------------------------------------------------------


def test_chat_loads_with_weights_and_line_numbers(tmp_path):
    rows = [
        chat({"role": "system", "content": "Be brief."}, user(), bot()),
        chat(user("a"), bot("b", weight=0), user("c"), bot("d", weight=1, name="x")),
    ]
    result = load_dataset(jsonl(tmp_path, rows))
    assert (result.format, result.total, result.problems) == ("chat", 2, [])
    first, second = result.conversations
    assert first.messages == (Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello"))
    assert [m.weight for m in second.messages] == [1, 0, 1, 1]
    assert (first.line, second.line) == (1, 2)
    assert second.source == str(tmp_path / "data.jsonl")


def test_alpaca_json_array(tmp_path):
    rows = [
        {"instruction": "Sum", "input": "1 2", "output": "3"},
        {"instruction": "Greet", "input": "", "output": "Hi", "system": "Be nice."},
        {"instruction": "Greet", "output": "Hi"},
    ]
    p = tmp_path / "alpaca.json"
    p.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    result = load_dataset(p)
    assert (result.format, result.total, result.problems) == ("alpaca", 3, [])
    a, b, c = result.conversations
    assert a.messages == (Message("user", "Sum\n\n1 2"), Message("assistant", "3"))
    assert b.messages == (Message("system", "Be nice."), Message("user", "Greet"), Message("assistant", "Hi"))
    assert c.messages == (Message("user", "Greet"), Message("assistant", "Hi"))
    # indent=2: "[" on 1, each object 5 lines (or 6 with "system") starting on 2, 7, 13.
    assert [x.line for x in result.conversations] == [2, 7, 13]


def test_alpaca_jsonl(tmp_path):
    rows = [{"instruction": "Sum", "input": "1 2", "output": "3"}, {"instruction": "Q", "output": "A"}]
    result = load_dataset(jsonl(tmp_path, rows))
    assert result.format == "alpaca" and result.problems == []
    assert result.conversations[0].as_chat() == [
        {"role": "user", "content": "Sum\n\n1 2"},
        {"role": "assistant", "content": "3"},
    ]


def test_prompt_completion_keeps_text_exactly(tmp_path):
    result = load_dataset(jsonl(tmp_path, [{"prompt": "Q: 2+2?\n", "completion": " 4"}]))
    assert result.format == "prompt_completion"
    assert result.conversations[0].messages == (Message("user", "Q: 2+2?\n"), Message("assistant", " 4"))


def test_format_detected_from_first_recognisable_record(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text('{broken\n[1, 2]\n{"prompt": "p", "completion": "c"}\n', encoding="utf-8")
    result = load_dataset(p)
    assert result.format == "prompt_completion"
    assert [(x.code, x.line) for x in result.problems] == [("invalid_json", 1), ("data_type", 2)]
    assert result.total == 3 and len(result.conversations) == 1


def test_bom_and_crlf_file_loads(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + (json.dumps(chat(user(), bot())) + "\r\n").encode() * 2)
    result = load_dataset(p)
    assert result.problems == [] and len(result.conversations) == 2


# --- file-level errors -----------------------------------------------------------


def test_unrecognised_format_names_expected_formats(tmp_path):
    with pytest.raises(InhouseError, match="could not recognise the format") as info:
        load_dataset(jsonl(tmp_path, [{"question": "q", "answer": "a"}]))
    msg = str(info.value)
    assert "chat" in msg and "alpaca" in msg and "prompt_completion" in msg
    assert "['answer', 'question']" in msg


def test_empty_array_has_no_examples(tmp_path):
    p = tmp_path / "data.json"
    p.write_text("[]", encoding="utf-8")
    with pytest.raises(InhouseError, match="no examples"):
        load_dataset(p)


def test_nothing_parses_reports_the_json_error(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text("{not json\n{nor this\n", encoding="utf-8")
    with pytest.raises(InhouseError, match=r"data.jsonl:1: invalid_json"):
        load_dataset(p)


def test_file_level_errors_propagate(tmp_path):
    with pytest.raises(InhouseError, match="no such file"):
        load_dataset(tmp_path / "missing.jsonl")
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(json.dumps(chat(user(), bot())).encode() + b'\n{"messages": "caf\xe9"}\n')
    with pytest.raises(InhouseError, match=r"latin1.jsonl:2: .*UTF-8"):
        load_dataset(p)


# --- per-example validation --------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "code", "field"),
    [
        ([1, 2], "data_type", ""),
        ("text", "data_type", ""),
        ({"messages": []}, "missing_messages_list", "messages"),
        ({"messages": "hi"}, "missing_messages_list", "messages"),
        ({"instruction": "i", "output": "o"}, "missing_messages_list", "messages"),
        (chat({"content": "x"}, bot()), "message_missing_key", "messages[0]"),
        (chat(user(), {"role": "assistant"}), "message_missing_key", "messages[1]"),
        (chat(user(), bot(tool_calls=[])), "wrong_type", "messages[1].tool_calls"),
        (chat({"role": "tool", "content": "x"}, bot()), "message_missing_key", "messages[0].tool_call_id"),
        (chat({"role": "robot", "content": "x"}, bot()), "unrecognized_role", "messages[0].role"),
        (chat(user(), bot("   ")), "missing_content", "messages[1].content"),
        (chat(user(), bot(None)), "missing_content", "messages[1].content"),
        (chat(user(), bot("")), "missing_content", "messages[1].content"),
        (chat(user(), bot(42)), "wrong_type", "messages[1].content"),
        (chat(user(), bot(name=7)), "wrong_type", "messages[1].name"),
        (chat(user(), bot(weight="1")), "wrong_type", "messages[1].weight"),
        (chat(user(), bot(weight=True)), "wrong_type", "messages[1].weight"),
        (chat(user(), "hello"), "wrong_type", "messages[1]"),
        (chat(user(), bot(weight=2)), "invalid_weight", "messages[1].weight"),
        (chat(user(), bot(weight=0.5)), "invalid_weight", "messages[1].weight"),
        (chat(user(), bot(weight=-1)), "invalid_weight", "messages[1].weight"),
        (chat(user()), "example_missing_assistant_message", "messages"),
        (chat(user(), bot(weight=0)), "example_missing_assistant_message", "messages"),
    ],
)
def test_chat_problem_codes(tmp_path, row, code, field):
    problem = only_problem(tmp_path, row)
    assert (problem.code, problem.field) == (code, field)
    assert str(tmp_path / "data.jsonl") == problem.source


@pytest.mark.parametrize(
    ("row", "code", "field"),
    [
        ({"instruction": "i", "input": "x", "output": "o", "extra": 1}, "unrecognized_key", "extra"),
        ({"instruction": "i", "input": "x", "output": "o", "id": 1}, None, None),
        ({"instruction": "i", "input": None, "output": "o"}, None, None),
        ({"instruction": ["i"], "output": "o"}, "wrong_type", "instruction"),
        ({"instruction": "i", "output": {"text": "o"}}, "wrong_type", "output"),
        ({"instruction": "i", "input": 3, "output": "o"}, "wrong_type", "input"),
        ({"instruction": "i", "output": "o", "system": 1}, "wrong_type", "system"),
        ({"instruction": "i", "output": " "}, "missing_content", "output"),
        ({"input": "x", "output": "o"}, "missing_field", "instruction"),
        ({"instruction": "i", "input": "x"}, "missing_field", "output"),
        (["i", "o"], "data_type", ""),
    ],
)
def test_alpaca_problem_codes(tmp_path, row, code, field):
    result = load_dataset(jsonl(tmp_path, [{"instruction": "a", "output": "b"}, row]))
    assert result.format == "alpaca"
    got = [(x.code, x.field, x.line) for x in result.problems]
    assert got == ([] if code is None else [(code, field, 2)])


@pytest.mark.parametrize(
    ("row", "code", "field"),
    [
        ({"prompt": "p"}, "missing_field", "completion"),
        ({"completion": "c"}, "missing_field", "prompt"),
        ({"prompt": 1, "completion": "c"}, "wrong_type", "prompt"),
        ({"prompt": "p", "completion": ""}, "missing_content", "completion"),
    ],
)
def test_prompt_completion_problem_codes(tmp_path, row, code, field):
    result = load_dataset(jsonl(tmp_path, [{"prompt": "a", "completion": "b"}, row]))
    assert [(x.code, x.field, x.line) for x in result.problems] == [(code, field, 2)]


def test_first_problem_only_per_example(tmp_path):
    problem = only_problem(tmp_path, chat({"role": "robot", "content": 1}, bot(weight=5)))
    assert problem.code == "unrecognized_role"


def test_weight_zero_assistant_turn_is_context(tmp_path):
    row = chat(user("q1"), bot("a1", weight=0), user("q2"), bot("a2"))
    (conv,) = load_dataset(jsonl(tmp_path, [row])).conversations
    assert [(m.role, m.weight) for m in conv.messages] == [
        ("user", 1),
        ("assistant", 0),
        ("user", 1),
        ("assistant", 1),
    ]


def test_problem_messages_are_one_line(tmp_path):
    row = chat(user(), bot(**{"bad\nkey": 1}))
    problem = only_problem(tmp_path, row)
    assert problem.code == "message_unrecognized_key"
    assert "\n" not in problem.message


# --- load_conversations ---------------------------------------------------------------


def test_load_conversations_returns_conversations(tmp_path):
    convs = load_conversations(jsonl(tmp_path, [chat(user(), bot())] * 3))
    assert len(convs) == 3 and all(isinstance(c, Conversation) for c in convs)


def test_load_conversations_raises_one_line_with_count(tmp_path):
    rows = [chat(user(), bot())] * 16 + [chat(user(), bot(""))] + [chat(user())] * 41
    p = jsonl(tmp_path, rows)
    with pytest.raises(InhouseError) as info:
        load_conversations(p)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}:17: missing_content [messages[1].content]: ")
    assert msg.endswith(f"(and 41 more problems; run 'inhouse data check {p}')")


def test_load_conversations_single_problem(tmp_path):
    p = jsonl(tmp_path, [chat(user(), bot()), [1]])
    with pytest.raises(InhouseError, match=r":2: data_type: .*\(run 'inhouse data check .*'\)$"):
        load_conversations(p)


def test_load_conversations_quotes_paths_with_spaces(tmp_path):
    p = jsonl(tmp_path, [chat(user(), bot()), [1]], name="my data.jsonl")
    with pytest.raises(InhouseError, match="inhouse data check '"):
        load_conversations(p)


# --- summarise ---------------------------------------------------------------------------


def make(code: str, line: int) -> Problem:
    return Problem(code, "data.jsonl", line, "is empty", "messages[1].content")


def test_summarise_collapses_many_identical_problems():
    problems = [make("missing_content", n) for n in range(1, 1001)] + [make("data_type", 2000)]
    lines = summarise(problems)
    assert lines == [
        "data.jsonl:1: missing_content [messages[1].content]: is empty",
        "data.jsonl:2: missing_content [messages[1].content]: is empty",
        "data.jsonl:3: missing_content [messages[1].content]: is empty",
        "... missing_content on 997 more lines (e.g. 4, 5, 6, ...)",
        "data.jsonl:2000: data_type [messages[1].content]: is empty",
    ]


def test_summarise_small_groups_and_per_code():
    problems = [make("a", 1), make("b", 2), make("a", 3), make("a", 4), make("a", 5)]
    assert summarise(problems, per_code=2) == [
        str(problems[0]),
        str(problems[2]),
        "... a on 2 more lines (e.g. 4, 5)",
        str(problems[1]),
    ]
    assert summarise([]) == []
