"""read_records: file-level errors raise, per-line errors become records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inhouse.data import read
from inhouse.data.read import Record, read_records
from inhouse.errors import InhouseError


def write(tmp_path: Path, data: str | bytes, name: str = "data.jsonl") -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def values(path: Path) -> list[tuple[int, object]]:
    return [(r.line, r.value) for r in read_records(path)]


def one_line_error(path: Path) -> str:
    with pytest.raises(InhouseError) as info:
        list(read_records(path))
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_jsonl_values_and_line_numbers_skip_blank_lines(tmp_path):
    p = write(tmp_path, '{"a": 1}\n\n   \n[2]\n"three"\nnull\n')
    assert values(p) == [(1, {"a": 1}), (4, [2]), (5, "three"), (6, None)]
    assert all(r.ok for r in read_records(p))


def test_bom_and_crlf_are_accepted(tmp_path):
    p = write(tmp_path, b'\xef\xbb\xbf{"a": 1}\r\n\r\n{"b": "x"}\r\n')
    assert values(p) == [(1, {"a": 1}), (3, {"b": "x"})]


def test_last_line_without_newline(tmp_path):
    assert values(write(tmp_path, '{"a": 1}\n{"b": 2}')) == [(1, {"a": 1}), (2, {"b": 2})]


def test_broken_json_line_is_a_problem_and_reading_continues(tmp_path):
    p = write(tmp_path, '{"a": 1}\n{"a": 2,}\n{"a": 3}\n')
    recs = list(read_records(p))
    assert [r.line for r in recs] == [1, 2, 3]
    bad = recs[1]
    assert bad.value is None and bad.problem is not None
    assert bad.problem.code == "invalid_json"
    assert bad.problem.line == 2
    assert "column 9" in bad.problem.message
    assert recs[2].value == {"a": 3}


def test_pretty_printed_object_gets_a_hint(tmp_path):
    p = write(tmp_path, '{\n  "a": 1\n}\n')
    first = next(read_records(p))
    assert first.problem.code == "invalid_json"
    assert "one whole example per line" in first.problem.message


def test_json_array_elements_get_the_line_they_start_on(tmp_path):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "input": "d\ne", "output": "f"}]
    p = write(tmp_path, "\n" + json.dumps(rows, indent=2) + "\n", name="data.json")
    # Line 1 blank, "[" on 2, first "{" on 3, 4 lines per object plus "},".
    assert values(p) == [(3, rows[0]), (7, rows[1])]


def test_json_array_one_line_and_empty(tmp_path):
    assert values(write(tmp_path, '[{"a": 1}, {"a": 2}]', "one.json")) == [(1, {"a": 1}), (1, {"a": 2})]
    assert values(write(tmp_path, "[ ]\n", "empty.json")) == []


def test_json_array_with_bom_and_crlf(tmp_path):
    p = write(tmp_path, b'\xef\xbb\xbf[\r\n  {"a": 1},\r\n  {"a": 2}\r\n]\r\n', "data.json")
    assert values(p) == [(2, {"a": 1}), (3, {"a": 2})]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[\n  {"a": 1},\n  {"a": 2,}\n]\n', 3),  # error inside an element
        ('[\n  {"a": 1}\n  {"a": 2}\n]\n', 3),  # missing comma
        ('[\n  {"a": 1},\n]\n', 3),  # trailing comma
        ('[\n  {"a": 1}\n', 3),  # never closed: reported at the end
        ('[\n  {"a": 1}\n]\n{"b": 2}\n', 4),  # junk after the array
    ],
)
def test_json_array_syntax_error_stops_with_one_problem(tmp_path, text, line):
    recs = list(read_records(write(tmp_path, text, "data.json")))
    assert recs[0].value == {"a": 1}
    last = recs[-1]
    assert last.problem is not None and last.problem.code == "invalid_json"
    assert last.problem.line == line
    assert sum(not r.ok for r in recs) == 1


def test_missing_file(tmp_path):
    assert "no such file" in one_line_error(tmp_path / "nope.jsonl")


def test_directory(tmp_path):
    assert "is a directory" in one_line_error(tmp_path)


@pytest.mark.parametrize("data", [b"", b"  \n\r\n\t\n", b"\xef\xbb\xbf\n"])
def test_empty_or_whitespace_file(tmp_path, data):
    assert "empty" in one_line_error(write(tmp_path, data))


def test_binary_junk(tmp_path):
    msg = one_line_error(write(tmp_path, bytes(range(256)) * 4, "model.bin"))
    assert "looks like binary, not JSON/JSONL" in msg


def test_nul_byte_far_down_a_jsonl_file(tmp_path):
    good = '{"a": 1}\n' * 2000  # past the first 8 KiB sniff
    p = write(tmp_path, good.encode() + b'{"a": "\x00"}\n')
    msg = one_line_error(p)
    assert "looks like binary" in msg and ":2001:" in msg


def test_gzip_is_named(tmp_path):
    assert "gzip" in one_line_error(write(tmp_path, b"\x1f\x8b\x08\x00junk", "data.jsonl.gz"))


def test_non_utf8_names_line_and_column(tmp_path):
    p = write(tmp_path, '{"a": "ok"}\n'.encode() + b'{"a": "caf\xe9"}\n')
    msg = one_line_error(p)
    assert f"{p}:2:" in msg
    assert "0xe9" in msg and "column 11" in msg
    assert "UTF-8" in msg


def test_non_utf8_in_json_array(tmp_path):
    p = write(tmp_path, b'[\n  {"a": "caf\xe9"}\n]\n', "data.json")
    msg = one_line_error(p)
    assert f"{p}:2:" in msg and "column 13" in msg


def test_line_too_long_is_skipped_not_parsed(tmp_path, monkeypatch):
    monkeypatch.setattr(read, "MAX_LINE_BYTES", 20)
    short = '{"a": "0123456789"}'  # 19 bytes: under the limit
    exact = '{"a": "01234567890"}'  # 20 bytes: at the limit is fine
    long = '{"a": "' + "x" * 100 + '"}'
    p = write(tmp_path, "\n".join([short, long, exact, long + "\r", long]))
    recs = list(read_records(p))
    assert [r.line for r in recs] == [1, 2, 3, 4, 5]
    assert [r.problem.code if r.problem else "ok" for r in recs] == [
        "ok",
        "line_too_long",
        "ok",
        "line_too_long",
        "line_too_long",
    ]


def test_line_just_over_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(read, "MAX_LINE_BYTES", 20)
    line = '{"a": "012345678901"}'  # 21 bytes
    recs = list(read_records(write(tmp_path, line + "\r\n" + '{"b": 1}\r\n')))
    assert recs[0] == Record(1, problem=recs[0].problem)
    assert recs[0].problem.code == "line_too_long"
    assert recs[1] == Record(2, value={"b": 1})


def test_a_json_file_holding_one_example_or_a_wrapped_list(tmp_path):
    import json as json_mod

    from inhouse.data.formats import load_dataset

    example = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    one = tmp_path / "one.json"
    one.write_text(json_mod.dumps(example, indent=2), encoding="utf-8")
    result = load_dataset(one)
    assert result.problems == [] and len(result.conversations) == 1 and result.conversations[0].line == 1
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json_mod.dumps({"version": 2, "data": [example, example, {"messages": []}]}, indent=2),
                       encoding="utf-8")
    result = load_dataset(wrapped)
    assert len(result.conversations) == 2 and [p.code for p in result.problems] == ["missing_messages_list"]
    text = wrapped.read_text().splitlines()
    assert text[result.conversations[1].line - 1].strip() == "{"  # lines point into the file
    assert '"messages": []' in "\n".join(text[result.problems[0].line - 1:result.problems[0].line + 1])
    pretty_jsonl = tmp_path / "pretty.jsonl"
    pretty_jsonl.write_text(json_mod.dumps(example, indent=2) + "\n" + json_mod.dumps(example, indent=2),
                            encoding="utf-8")
    with pytest.raises(InhouseError, match="one whole example per line"):
        load_dataset(pretty_jsonl)


@pytest.mark.parametrize("fails", ["stat", "open"])
def test_a_file_this_user_may_not_read_is_one_line_naming_it(tmp_path, monkeypatch, fails):
    """As root chmod 000 binds nobody, so the refusal is simulated (the fuzz corpus runs the real one as uid
    65534): a PermissionError from stat (a locked folder on the way) or open (the file itself)."""
    path = write(tmp_path, '{"prompt": "a", "completion": "b"}\n')

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    if fails == "stat":
        monkeypatch.setattr(Path, "is_dir", refuse)
    else:
        monkeypatch.setattr(read, "open", refuse, raising=False)
    assert "cannot be read (Permission denied)" in one_line_error(path)
    for reader in (read.read_table,):
        with pytest.raises(InhouseError, match="cannot be read"):
            reader(write(tmp_path, "prompt,completion\na,b\n", "t.csv"))
