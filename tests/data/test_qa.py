"""QA files: every line an item or a problem naming file:line and field."""

import json

import pytest

from inhouse.data.qa import QAItem, load_qa, read_qa
from inhouse.errors import InvalidInputError


def write(tmp_path, lines):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_items_keep_their_line_metadata_and_round_trip(tmp_path):
    path = write(tmp_path, [
        {"question": " How often? ", "answer": "Every 6 months.", "doc_path": "pumps.md", "quote": "Seals: 6 months.",
         "id": 7},
        {"question": "Who won the cup?", "answerable": False},
    ])
    first, second = load_qa(path)
    assert first == QAItem("How often?", "Every 6 months.", f"{path}:1", "pumps.md", None, "Seals: 6 months.")
    assert first.meta == {"id": 7} and first.as_json()["id"] == 7
    assert not second.answerable and second.answer == "" and second.as_json() == {"question": "Who won the cup?",
                                                                                   "answerable": False}
    assert parse_back(first) == first


def parse_back(item):
    from inhouse.data.qa import parse_item

    return parse_item(json.loads(json.dumps(item.as_json())), item.where.rsplit(":", 1)[0], int(item.where.rsplit(":", 1)[1]))


@pytest.mark.parametrize("line, field", [
    ({"answer": "x", "doc_path": "a.md"}, "question"),
    ({"question": "q", "doc_path": "a.md"}, "answer"),
    ({"question": "q", "answer": "a"}, "doc_path"),
    ({"question": 3, "answer": "a", "doc_path": "a.md"}, "question"),
    ({"question": "q", "answer": "a", "doc_path": "a.md", "answerable": "no"}, "answerable"),
    ([1, 2], ""),
])
def test_a_bad_line_is_named_with_its_field(tmp_path, line, field):
    path = write(tmp_path, [{"question": "fine", "answer": "a", "chunk_id": "c1"}, line])
    items, problems = read_qa(path)
    assert len(items) == 1 and len(problems) == 1
    assert problems[0].line == 2 and problems[0].field == field
    with pytest.raises(InvalidInputError, match=rf"qa.jsonl:2: .*{field}"):
        load_qa(path)


def test_broken_json_and_an_empty_file_are_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="qa.jsonl:1"):
        load_qa(write(tmp_path, ["{not json"]))
    with pytest.raises(InvalidInputError, match="no questions"):
        load_qa(write(tmp_path, ["[]"]))


def test_embedder_tuning_reads_questions_without_answers_and_passages_given_outright(tmp_path):
    path = write(tmp_path, [{"question": "q1", "doc_path": "a.md"}, {"question": "q2", "text": "The passage."},
                            {"question": "q3", "passage": "Another.", "answer": "a"}])
    with pytest.raises(InvalidInputError, match=r"qa.jsonl:1: invalid_value \[answer\]"):
        load_qa(path)
    first, second, third = load_qa(path, need_answer=False)
    assert (first.doc_path, second.passage, third.passage, third.answer) == ("a.md", "The passage.", "Another.", "a")
    assert second.meta == {} and second.as_json() == {"question": "q2", "passage": "The passage."}
