"""ShareGPT, CSV/TSV and Parquet loading, role spellings, category passthrough."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inhouse.data import read
from inhouse.data.conversation import Message
from inhouse.data.formats import ColumnMap, load_conversations, load_dataset
from inhouse.data.read import read_records
from inhouse.errors import InhouseError


def jsonl(tmp_path: Path, rows: list, name: str = "data.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p


def sharegpt(*turns: tuple[str, object], **extra) -> dict:
    return {"conversations": [{"from": f, "value": v} for f, v in turns], **extra}


def write(tmp_path: Path, data: str | bytes, name: str) -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def one_line_error(path: Path, columns: ColumnMap | None = None) -> str:
    with pytest.raises(InhouseError) as info:
        load_dataset(path, columns)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --- ShareGPT ---------------------------------------------------------------------------


def test_sharegpt_loads_and_maps_speakers(tmp_path):
    rows = [
        sharegpt(("system", "Be brief."), ("human", "Hi"), ("gpt", "Hello")),
        sharegpt(("User", "a"), (" ChatGPT ", "b"), ("HUMAN", "c"), ("bot", "d"), ("user", "e"), ("model", "f")),
        sharegpt(("human", "q"), ("assistant", "r"), id="x-1", markdown=None),
    ]
    result = load_dataset(jsonl(tmp_path, rows))
    assert (result.format, result.total, result.problems) == ("sharegpt", 3, [])
    first, second, third = result.conversations
    assert first.messages == (Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello"))
    assert [m.role for m in second.messages] == ["user", "assistant"] * 3
    assert third.as_chat() == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]
    assert [c.line for c in result.conversations] == [1, 2, 3]


def test_sharegpt_json_array_and_extra_turn_keys(tmp_path):
    rows = [
        {"id": 1, "conversations": [{"from": "human", "value": "Q", "markdown": "x"}, {"from": "gpt", "value": "A"}]}
    ]
    p = tmp_path / "share.json"
    p.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    result = load_dataset(p)
    assert result.format == "sharegpt" and result.problems == []
    assert result.conversations[0].line == 2


@pytest.mark.parametrize(
    ("row", "code", "field"),
    [
        (sharegpt(("human", "Hi"), ("narrator", "x")), "unrecognized_role", "conversations[1].from"),
        (sharegpt(("human", "Hi"), ("function_call", "x")), "invalid_tool_call_arguments", "conversations[1].value"),
        (sharegpt(("human", "Hi"), (None, "x")), "unrecognized_role", "conversations[1].from"),
        (sharegpt(("human", "Hi"), ("gpt", "")), "missing_content", "conversations[1].value"),
        (sharegpt(("human", "  \n"), ("gpt", "x")), "missing_content", "conversations[0].value"),
        (sharegpt(("human", "Hi"), ("gpt", None)), "missing_content", "conversations[1].value"),
        (sharegpt(("human", "Hi"), ("gpt", ["x"])), "wrong_type", "conversations[1].value"),
        (
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt"}]},
            "message_missing_key",
            "conversations[1]",
        ),
        ({"conversations": [{"value": "Hi"}]}, "message_missing_key", "conversations[0]"),
        ({"conversations": ["Hi"]}, "wrong_type", "conversations[0]"),
        ({"conversations": []}, "missing_messages_list", "conversations"),
        (sharegpt(("human", "Hi")), "example_missing_assistant_message", "conversations"),
        ([1], "data_type", ""),
    ],
)
def test_sharegpt_problem_codes(tmp_path, row, code, field):
    result = load_dataset(jsonl(tmp_path, [sharegpt(("human", "a"), ("gpt", "b")), row]))
    assert result.format == "sharegpt"
    assert [(x.code, x.field, x.line) for x in result.problems] == [(code, field, 2)]


def test_chat_roles_are_compared_without_case_or_blanks(tmp_path):
    row = {
        "messages": [
            {"role": " System ", "content": "s"},
            {"role": "USER", "content": "u"},
            {"role": " Assistant ", "content": "a"},
        ]
    }
    result = load_dataset(jsonl(tmp_path, [row]))
    assert result.problems == []
    assert [m.role for m in result.conversations[0].messages] == ["system", "user", "assistant"]


def test_chat_unknown_role_still_named_as_written(tmp_path):
    row = {"messages": [{"role": " Robot ", "content": "u"}, {"role": "assistant", "content": "a"}]}
    (problem,) = load_dataset(jsonl(tmp_path, [row])).problems
    assert problem.code == "unrecognized_role" and "' Robot '" in problem.message


# --- category passthrough -----------------------------------------------------------------


def test_category_passes_through_every_json_format(tmp_path):
    cases = [
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "category": "billing"},
        sharegpt(("human", "u"), ("gpt", "a"), category="shipping"),
        {"instruction": "i", "output": "o", "category": 3},
        {"prompt": "p", "completion": "c", "category": None},
    ]
    for n, row in enumerate(cases):
        result = load_dataset(jsonl(tmp_path, [row], name=f"d{n}.jsonl"))
        assert result.problems == []
        assert result.conversations[0].meta == {"category": row["category"]}


def test_no_category_means_empty_meta(tmp_path):
    result = load_dataset(jsonl(tmp_path, [{"prompt": "p", "completion": "c"}]))
    assert result.conversations[0].meta == {}


# --- CSV / TSV --------------------------------------------------------------------------------


def test_csv_default_instruction_input_output(tmp_path):
    p = write(tmp_path, "instruction,input,output,category\nSum,1 2,3,math\nGreet,,Hi,social\n", "data.csv")
    result = load_dataset(p)
    assert (result.format, result.total, result.problems) == ("csv", 2, [])
    a, b = result.conversations
    assert a.messages == (Message("user", "Sum\n\n1 2"), Message("assistant", "3"))
    assert b.messages == (Message("user", "Greet"), Message("assistant", "Hi"))
    assert (a.meta, b.meta) == ({"category": "math"}, {"category": "social"})
    assert (a.line, b.line, a.source) == (2, 3, str(p))


@pytest.mark.parametrize(
    "header", ["prompt,completion", "prompt,response", "question,answer", "Question,Answer", " PROMPT , Completion "]
)
def test_csv_default_pairs(tmp_path, header):
    result = load_dataset(write(tmp_path, f"{header}\nQ?,A.\n", "data.csv"))
    assert result.problems == []
    assert result.conversations[0].as_chat() == [
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "A."},
    ]


def test_csv_explicit_mapping_with_system_category_and_meta(tmp_path):
    text = "ticket,q,a,sys,team,lang\nT-1,Where is it?,On its way.,Be kind.,logistics,en\n"
    cols = ColumnMap(prompt="q", response="a", system="sys", category="team", meta=("ticket", "lang"))
    (conv,) = load_conversations(write(tmp_path, text, "tickets.csv"), cols)
    assert conv.messages == (
        Message("system", "Be kind."),
        Message("user", "Where is it?"),
        Message("assistant", "On its way."),
    )
    assert conv.meta == {"category": "logistics", "ticket": "T-1", "lang": "en"}


def test_csv_quoted_newlines_report_the_physical_start_line(tmp_path):
    text = 'prompt,completion\n"multi\nline\nprompt","answer"\n\n"q2","a ""quoted""\r\nover lines"\nq3,a3\n'
    result = load_dataset(write(tmp_path, text, "data.csv"))
    assert result.problems == []
    assert [c.line for c in result.conversations] == [2, 6, 8]
    assert result.conversations[0].messages[0].content == "multi\nline\nprompt"
    assert result.conversations[1].messages[1].content == 'a "quoted"\nover lines'


def test_csv_bom_and_crlf(tmp_path):
    p = write(tmp_path, b"\xef\xbb\xbfprompt,completion\r\nHi,Hello\r\n\r\nBye,See you\r\n", "excel.csv")
    result = load_dataset(p)
    assert result.problems == []
    assert [(c.line, c.messages[1].content) for c in result.conversations] == [(2, "Hello"), (4, "See you")]


def test_csv_json_inside_a_cell_survives(tmp_path):
    payload = '```json\n{"sku": "A-1", "qty": 2}\n```'
    cell = '"' + payload.replace('"', '""') + '"'
    result = load_dataset(write(tmp_path, f"prompt,completion\nOrder?,{cell}\n", "data.csv"))
    assert result.conversations[0].messages[1].content == payload


def test_csv_latin1_names_the_line(tmp_path):
    p = write(tmp_path, b"prompt,completion\nHi,Hello\nCaf\xe9,ok\n", "latin1.csv")
    msg = one_line_error(p)
    assert f"{p}:3:" in msg and "0xe9" in msg and "UTF-8" in msg


def test_csv_missing_column_names_the_columns_there(tmp_path):
    p = write(tmp_path, "question,reply\nQ,A\n", "data.csv")
    msg = one_line_error(p, ColumnMap(prompt="question", response="answer"))
    assert "no column 'answer'" in msg and "'question', 'reply'" in msg


def test_csv_without_usual_columns_asks_for_a_mapping(tmp_path):
    msg = one_line_error(write(tmp_path, "a,b\n1,2\n", "data.csv"))
    assert "'a', 'b'" in msg and "instruction/output" in msg and "--prompt-column" in msg


def test_csv_empty_cells_and_ragged_rows_are_problems(tmp_path):
    text = "prompt,completion\nQ,\n,A\nQ,A,extra\nQ\n   ,  \nQ,A\n"
    result = load_dataset(write(tmp_path, text, "data.csv"))
    got = [(x.code, x.field, x.line) for x in result.problems]
    assert got == [
        ("missing_content", "completion", 2),
        ("missing_content", "prompt", 3),
        ("invalid_row", "", 4),
        ("invalid_row", "", 5),
    ]
    assert [c.line for c in result.conversations] == [7]  # line 6 is blank cells only: skipped


def test_csv_unclosed_quote_is_one_line_error(tmp_path):
    msg = one_line_error(write(tmp_path, 'prompt,completion\nQ,"never closed\nmore\n', "data.csv"))
    assert "data.csv:2:" in msg and "not valid CSV" in msg


def test_csv_giant_field_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(read, "MAX_LINE_BYTES", 100)
    big = "x" * 60
    p = write(tmp_path, f'prompt,completion\nQ,"{big}\n{big}"\n', "data.csv")
    assert "data.csv:2:" in one_line_error(p)
    long_line = write(tmp_path, f"prompt,completion\nQ,{'y' * 200}\n", "long.csv")
    assert "long.csv:2: line is longer than 100 bytes" in one_line_error(long_line)


def test_csv_header_only_and_empty_file(tmp_path):
    result = load_dataset(write(tmp_path, "prompt,completion\n", "data.csv"))
    assert (result.total, result.conversations) == (0, [])
    assert "empty" in one_line_error(write(tmp_path, b"", "empty.csv"))


def test_csv_duplicate_header_and_binary(tmp_path):
    assert "appears twice" in one_line_error(write(tmp_path, "prompt,prompt,completion\n", "dup.csv"))
    assert "Excel" in one_line_error(write(tmp_path, b"PK\x03\x04junk", "sheet.csv"))
    assert "looks like binary, not CSV" in one_line_error(write(tmp_path, b"prompt,completion\nQ,\x00\n", "nul.csv"))


def test_tsv_and_unicode_cells(tmp_path):
    text = "prompt\tcompletion\nمرحبا، أين طلبي؟\tفي الطريق \U0001f69a\n"
    (conv,) = load_conversations(write(tmp_path, text, "data.TSV"))
    assert conv.messages[1].content == "في الطريق \U0001f69a"


def test_column_mapping_on_json_is_refused(tmp_path):
    p = jsonl(tmp_path, [{"prompt": "p", "completion": "c"}])
    assert "only to .csv" in one_line_error(p, ColumnMap(prompt="prompt", response="completion"))


# --- Parquet ------------------------------------------------------------------------------------


def parquet(tmp_path: Path, columns: dict, name: str = "data.parquet") -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / name
    pq.write_table(pa.table(columns), p, row_group_size=2)
    return p


def test_parquet_default_mapping_and_row_numbers(tmp_path):
    p = parquet(tmp_path, {"instruction": ["a", "b", "c"], "output": ["A", "B", "C"], "category": ["x", "y", None]})
    result = load_dataset(p)
    assert (result.format, result.total, result.problems) == ("parquet", 3, [])
    assert [c.line for c in result.conversations] == [1, 2, 3]
    assert [c.meta["category"] for c in result.conversations] == ["x", "y", None]


def test_parquet_explicit_mapping_reads_only_mapped_columns(tmp_path):
    p = parquet(
        tmp_path,
        {"q": ["Q1", None, "Q3"], "a": ["A1", "A2", "  "], "team": [1, 2, 3], "embedding": [[0.1], [0.2], [0.3]]},
    )
    result = load_dataset(p, ColumnMap(prompt="q", response="a", category="team"))
    assert [(x.code, x.field, x.line) for x in result.problems] == [
        ("missing_content", "q", 2),
        ("missing_content", "a", 3),
    ]
    (conv,) = result.conversations
    assert conv.meta == {"category": 1} and conv.messages[0].content == "Q1"
    assert next(read.read_table(p).read(["q"])).value == {"q": "Q1"}  # the embedding is never loaded


def test_parquet_non_text_column_is_wrong_type(tmp_path):
    p = parquet(tmp_path, {"prompt": ["p1", "p2"], "completion": [1.5, None]})
    result = load_dataset(p)
    assert [(x.code, x.field, x.line) for x in result.problems] == [
        ("wrong_type", "completion", 1),
        ("missing_content", "completion", 2),
    ]


def test_parquet_missing_column_names_available(tmp_path):
    p = parquet(tmp_path, {"prompt": ["p"], "answer": ["a"]})
    msg = one_line_error(p, ColumnMap(prompt="prompt", response="completion"))
    assert "no column 'completion'" in msg and "'prompt', 'answer'" in msg


def test_not_really_parquet(tmp_path):
    assert "not a readable Parquet file" in one_line_error(write(tmp_path, "prompt,completion\n", "x.parquet"))


def test_parquet_bytes_in_a_jsonl_file_point_at_the_extension(tmp_path):
    p = parquet(tmp_path, {"prompt": ["p"]}, name="data.jsonl")
    with pytest.raises(InhouseError, match=r"Parquet file; give it the \.parquet extension"):
        list(read_records(p))
