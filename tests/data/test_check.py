"""check_dataset / format_report: stats checked against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inhouse.data.check import TokenStats, check_dataset, format_report, nearest_rank
from inhouse.errors import InhouseError


def chars(conv) -> int:
    """A stand-in tokenizer: one token per character of content."""
    return sum(len(m.content) for m in conv.messages)


def write_jsonl(tmp_path: Path, rows: list) -> Path:
    p = tmp_path / "data.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def msg(role: str, content: str, **extra) -> dict:
    return {"role": role, "content": content, **extra}


ROWS = [
    # line 1: 1 + 2 = 3 chars
    {"messages": [msg("user", "a"), msg("assistant", "bb")]},
    # line 2: 3 + 1 + 4 = 8 chars, one system message
    {"messages": [msg("system", "sss"), msg("user", "u"), msg("assistant", "aaaa")]},
    # line 3: problem (no assistant turn) - excluded from stats
    {"messages": [msg("user", "nobody answers")]},
    # line 4: 2 + 5 + 1 + 2 = 10 chars, two assistant turns, one weight 0
    {"messages": [msg("user", "uu"), msg("assistant", "ctx..", weight=0), msg("user", "u"), msg("assistant", "ok")]},
    # line 5: 20 + 20 = 40 chars
    {"messages": [msg("user", "x" * 20), msg("assistant", "y" * 20)]},
    # line 6: problem (bad weight)
    {"messages": [msg("user", "q"), msg("assistant", "a", weight=3)]},
]


@pytest.fixture
def report(tmp_path):
    return check_dataset(write_jsonl(tmp_path, ROWS), chars, max_seq_length=9)


def test_counts(report):
    assert (report.format, report.total, report.valid) == ("chat", 6, 4)
    assert [(p.code, p.line) for p in report.problems] == [
        ("example_missing_assistant_message", 3),
        ("invalid_weight", 6),
    ]
    assert report.role_counts == {"system": 1, "user": 5, "assistant": 5}
    assert (report.trained_turns, report.weight0_turns, report.multi_turn) == (4, 1, 1)
    assert not report.ok


def test_token_stats_hand_computed(report):
    # Lengths 3, 8, 10, 40: nearest-rank median = rank ceil(2) = 8; p95 = rank ceil(3.8) = 40.
    assert report.tokens == TokenStats(min=3, median=8, p95=40, max=40, total=61)
    assert [(where.rsplit(":", 1)[1], n) for where, n in report.too_long] == [("4", 10), ("5", 40)]


def test_nearest_rank():
    values = list(range(1, 101))
    assert nearest_rank(values, 95) == 95
    assert nearest_rank(values, 50) == 50
    assert nearest_rank([7], 95) == 7
    assert nearest_rank([1, 2, 3], 50) == 2
    assert nearest_rank(list(range(1, 21)), 95) == 19


def test_without_counter(tmp_path):
    report = check_dataset(write_jsonl(tmp_path, ROWS[:2]), None, max_seq_length=1)
    assert report.tokens is None and report.too_long == []
    assert report.ok
    text = format_report(report)
    assert "not counted" in text and "OK: ready to train" in text


def test_format_report_text(report):
    text = format_report(report)
    assert "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].endswith("data.jsonl: chat format, 6 examples, 4 valid, 2 with problems")
    assert "1 system, 5 user, 5 assistant" in lines[1]
    assert "weight 0: 1" in lines[1]
    assert "Tokens per example: min 3, median 8, p95 40, max 40 (total 61)" in text
    assert "Longer than max_seq_length 9: 2 examples" in text
    assert any(line.strip().endswith("data.jsonl:5: 40 tokens") for line in lines)
    assert "Problems (example_missing_assistant_message 1, invalid_weight 1):" in text
    assert any("data.jsonl:6: invalid_weight [messages[1].weight]" in line for line in lines)
    assert lines[-1].startswith("NOT READY: fix 2 problems")


def test_format_report_summarises_many_problems(tmp_path):
    rows = [ROWS[0]] + [{"messages": [msg("user", "q"), msg("assistant", "")]}] * 1000
    report = check_dataset(write_jsonl(tmp_path, rows), chars, max_seq_length=100)
    text = format_report(report)
    assert len(text.splitlines()) < 12
    assert "... missing_content on 997 more lines (e.g. 5, 6, 7, ...)" in text


def test_file_level_errors_raise(tmp_path):
    with pytest.raises(InhouseError, match="no such file"):
        check_dataset(tmp_path / "missing.jsonl", chars, 10)


def test_an_example_without_a_user_turn_gets_a_warning(tmp_path):
    from inhouse.data.check import check_dataset, format_report

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]})
                    + "\n" + json.dumps({"messages": [{"role": "user", "content": "u"}, {"role": "assistant",
                                                                                         "content": "a"}]}) + "\n",
                    encoding="utf-8")
    report = check_dataset(path, None, 100)
    assert report.ok and report.no_user == [f"{path}:1"]
    assert f"Warning: 1 example without a user turn: {path}:1" in format_report(report)
