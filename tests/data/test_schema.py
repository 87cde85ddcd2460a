"""Structured outputs: JSON extraction, schema errors with paths, count rules, drop/keep policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import write_jsonl

from inhouse.data.conversation import Conversation, Message
from inhouse.data.formats import load_dataset
from inhouse.data.schema import (
    MAX_REASON,
    Rule,
    check_structured,
    extract_json,
    filter_structured,
    json_message_indexes,
    load_schema,
    parse_path,
    parse_rules,
)
from inhouse.errors import InhouseError

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["title", "attendees"],
    "properties": {
        "title": {"type": "string", "maxLength": 80},
        "attendees": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["email", "role"],
                "properties": {
                    "email": {"type": "string", "format": "email"},
                    "role": {"enum": ["organizer", "guest"]},
                },
            },
        },
    },
}

ONE_ORGANIZER = {
    "name": "one organizer",
    "path": "attendees[*]",
    "where": {"role": "organizer"},
    "count": {"equals": 1},
}


def person(role: str, email: str = "a@example.com") -> dict:
    return {"email": email, "role": role}


def conv(*replies: str, line: int = 1) -> Conversation:
    msgs: list[Message] = []
    for r in replies:
        msgs += [Message("user", "book it"), Message("assistant", r)]
    return Conversation(tuple(msgs), source="data.jsonl", line=line)


def meeting(*roles: str, **extra) -> str:
    return json.dumps({"title": "Standup", "attendees": [person(r) for r in roles], **extra})


@pytest.fixture
def validator(tmp_path: Path):
    p = tmp_path / "schema.json"
    p.write_text(json.dumps(SCHEMA), encoding="utf-8")
    return load_schema(p)


# --- extract_json ------------------------------------------------------------


@pytest.mark.parametrize(
    "text, how",
    [
        ('{"a": 1}', "whole"),
        ('\n  {"a": 1}  \n', "whole"),
        ('```json\n{"a": 1}\n```', "fence"),
        ('  ```JSON  \n{"a": 1}\n```\n', "fence"),
        ('```\n{"a": 1}\n```', "fence"),
        ('```{"a": 1}```', "fence"),
        ('```json\r\n{"a": 1}\r\n```', "fence"),
        ('\ufeff{"a": 1}', "whole"),
    ],
)
def test_extract_json_whole_or_single_fence(text, how):
    assert extract_json(text) == ({"a": 1}, how)


@pytest.mark.parametrize(
    "text",
    [
        "Sure! The meeting is booked.",
        'Here it is:\n```json\n{"a": 1}\n```',  # prose around the fence
        '```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```',  # two fences
        '```python\n{"a": 1}\n```',  # not a json fence
        '```json\n{"a": 1,}\n```',  # broken JSON inside the fence
        '{"a": NaN}',
        '{"a": 1, "a": 2}',  # duplicate key: which one would be checked?
        "[" * 100_000 + "]" * 100_000,  # nests too deeply for the parser
        "",
    ],
)
def test_extract_json_rejects(text):
    assert extract_json(text) is None


def test_extract_json_keeps_fence_markers_inside_strings():
    assert extract_json('{"code": "```py\\nprint(1)\\n```"}') == ({"code": "```py\nprint(1)\n```"}, "whole")


# --- schema -----------------------------------------------------------------


def test_valid_example_passes(validator):
    assert check_structured([conv(meeting("organizer", "guest"))], validator, []) == []


def test_schema_failure_names_example_message_and_path(validator):
    bad = json.dumps({"title": "x", "attendees": [person("guest"), person("organizer", email="not-an-email")]})
    [f] = check_structured([conv(meeting("guest")), conv(bad, line=7)], validator, [])
    assert (f.example, f.where, f.message_index) == (1, "data.jsonl:7", 1)
    assert (f.kind, f.path) == ("schema", "$.attendees[1].email")
    assert "email" in f.reason
    assert str(f).startswith("data.jsonl:7: message 1: schema at $.attendees[1].email:")
    assert f.as_problem().field == "messages[1]"


def test_all_schema_errors_of_a_message_are_reported(validator):
    bad = json.dumps({"title": 5, "attendees": [{"role": "boss"}, person("guest", email="nope")]})
    fails = check_structured([conv(bad)], validator, [])
    paths = [f.path for f in fails]
    assert sorted(paths) == sorted(["$.title", "$.attendees[0]", "$.attendees[0].role", "$.attendees[1].email"])
    assert paths[0] == "$.title"  # best match (shallowest) first
    assert all(f.kind == "schema" and f.example == 0 for f in fails)


def test_missing_required_property_points_at_its_object(validator):
    [f] = check_structured([conv(json.dumps({"attendees": []}))], validator, [])
    assert f.path == "$" and "'title' is a required property" in f.reason


def test_json_in_code_fence_is_validated(validator):
    fenced = "```json\n" + json.dumps({"title": "x", "attendees": [{"role": "guest"}]}) + "\n```"
    [f] = check_structured([conv(fenced)], validator, [])
    assert (f.kind, f.path) == ("schema", "$.attendees[0]")


def test_non_json_reply_is_not_json_and_skips_schema(validator):
    [f] = check_structured([conv("I booked it for 3pm.")], validator, [Rule(**ONE_ORGANIZER)])
    assert (f.kind, f.path, f.message_index) == ("not_json", "$", 1)
    assert f.reason.startswith("not JSON")


def test_prose_around_fence_is_explained(validator):
    [f] = check_structured([conv("Here you go:\n```json\n{}\n```")], validator, [])
    assert f.kind == "not_json" and "around the code fence" in f.reason


def test_emoji_and_rtl_text_inside_json_strings(validator):
    title = "اجتماع الفريق 🎉 שלום \u202e"  # Arabic, Hebrew, emoji, RTL override
    organizer = person("organizer", email="مدير@example.com")
    ok = json.dumps({"title": title, "attendees": [organizer]}, ensure_ascii=False)
    assert check_structured([conv(ok)], validator, [Rule(**ONE_ORGANIZER)]) == []
    bad = json.dumps({"title": title, "attendees": [{"email": "x@y.z", "role": "🎉"}]}, ensure_ascii=False)
    [f] = check_structured([conv(bad)], validator, [])
    assert f.path == "$.attendees[0].role" and "🎉" in f.reason


def test_giant_string_value_gives_a_short_one_line_reason(validator):
    giant = "x\n" * 1_000_000
    [f] = check_structured([conv(json.dumps({"title": giant, "attendees": []}))], validator, [])
    assert f.path == "$.title"
    assert len(f.reason) <= MAX_REASON and "\n" not in f.reason


def test_lone_surrogates_from_bad_decoding_do_not_crash(validator):
    text = '{"title": "caf\\udce9", "attendees": [{"email": "a@b.c", "role": "\\udcff"}]}'
    [f] = check_structured([conv(text)], validator, [])
    assert f.path == "$.attendees[0].role"
    str(f)


def test_keys_that_are_not_identifiers_are_quoted_in_paths(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"properties": {"due date": {"type": "string"}}}), encoding="utf-8")
    [f] = check_structured([conv('{"due date": 3}')], load_schema(p), [])
    assert f.path == "$['due date']"


def test_failures_name_the_file_line_of_loaded_data(tmp_path, validator):
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": meeting("organizer")}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no json 🙈"}]},
    ]
    data = load_dataset(write_jsonl(tmp_path / "mixed.jsonl", rows))
    [f] = check_structured(data.conversations, validator, [])
    assert f.where.endswith("mixed.jsonl:2") and f.kind == "not_json"


# --- load_schema ---------------------------------------------------------------


def test_missing_schema_file(tmp_path):
    with pytest.raises(InhouseError, match="schema file not found"):
        load_schema(tmp_path / "nope.json")


def test_schema_file_that_is_not_json_names_the_line(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{\n  "type": "object",\n  "required": [\n}\n', encoding="utf-8")
    with pytest.raises(InhouseError, match=r"s\.json:4: schema is not valid JSON"):
        load_schema(p)


@pytest.mark.parametrize(
    "schema, match",
    [
        ({"type": "objekt"}, r"invalid JSON Schema at \$\.type"),
        ({"properties": {"a": {"minLength": -1}}}, r"invalid JSON Schema at \$\.properties\.a\.minLength"),
        ({"pattern": "(unclosed"}, "invalid JSON Schema"),
        ([1, 2], "must be an object or a boolean"),
        ({"$schema": "https://example.com/my-draft"}, "unknown \\$schema"),
        ({"$schema": ["x"]}, "unknown \\$schema"),
    ],
)
def test_invalid_schema_is_one_line_error(tmp_path, schema, match):
    p = tmp_path / "s.json"
    p.write_text(json.dumps(schema), encoding="utf-8")
    with pytest.raises(InhouseError, match=match) as e:
        load_schema(p)
    assert "\n" not in str(e.value)


# --- rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    "roles, fails", [((), True), (("organizer", "guest"), False), (("organizer", "organizer"), True)]
)
def test_exactly_one_organizer(roles, fails):
    result = check_structured([conv(meeting(*roles))], None, parse_rules([ONE_ORGANIZER]))
    assert bool(result) == fails
    if fails:
        [f] = result
        assert (f.kind, f.path) == ("rule", "$.attendees[*]")
        assert f"found {roles.count('organizer')}" in f.reason and "expected exactly 1" in f.reason
        assert f.reason.startswith("one organizer:")


def test_rule_failure_lists_where_the_matches_are():
    [f] = check_structured([conv(meeting("organizer", "guest", "organizer"))], None, [Rule(**ONE_ORGANIZER)])
    assert "$.attendees[0], $.attendees[2]" in f.reason


@pytest.mark.parametrize("n, fails", [(0, True), (1, False), (3, False), (4, True)])
def test_min_max_rule(n, fails):
    rule = Rule(path="$.attendees[*]", count={"min": 1, "max": 3}, message="1 to 3 people")
    result = check_structured([conv(meeting(*["guest"] * n))], None, [rule])
    assert bool(result) == fails
    if fails:
        assert result[0].reason.endswith("(1 to 3 people)")


def test_rule_on_missing_key_counts_zero():
    rule = Rule(path="location.room", count={"min": 1})
    [f] = check_structured([conv(meeting("organizer"))], None, [rule])
    assert f.path == "$.location.room" and "found 0" in f.reason


def test_each_checks_the_rule_per_item():
    doc = {"meetings": [{"attendees": [person("organizer")]}, {"attendees": [person("guest")]}]}
    rule = Rule(each="meetings[*]", path="attendees[*]", where={"role": "organizer"}, count={"equals": 1})
    [f] = check_structured([conv(json.dumps(doc))], None, [rule])
    assert f.path == "$.meetings[1].attendees[*]"


def test_where_compares_json_values_exactly():
    doc = json.dumps({"items": [{"ok": True}, {"ok": 1}, {"ok": "true"}]})
    rule = Rule(path="items[*]", where={"ok": True}, count={"equals": 1})
    assert check_structured([conv(doc)], None, [rule]) == []


def test_rules_and_schema_errors_together(validator):
    bad = json.dumps({"title": "x", "attendees": [{"email": "a@b.c", "role": "boss"}]})
    kinds = [f.kind for f in check_structured([conv(bad)], validator, [Rule(**ONE_ORGANIZER)])]
    assert kinds == ["schema", "rule"]


@pytest.mark.parametrize(
    "path, steps",
    [
        ("$", ()),
        ("attendees", ("attendees",)),
        ("$.attendees[0].email", ("attendees", 0, "email")),
        ("$['due date'][-1]", ("due date", -1)),
    ],
)
def test_parse_path(path, steps):
    assert parse_path(path) == steps


@pytest.mark.parametrize(
    "item, match",
    [
        ({"path": "a[", "count": {"min": 1}}, r"rules\[1\]: path: bad bracket"),
        ({"path": "a..b", "count": {"min": 1}}, "rules\\[1\\]: path: empty or bad name"),
        ({"path": "a", "count": {}}, "count needs equals, min or max"),
        ({"path": "a", "count": {"equals": 1, "min": 0}}, "equals alone"),
        ({"path": "a", "count": {"min": 3, "max": 1}}, "min 3 > max 1"),
        ({"path": "a", "count": {"min": -1}}, "count.min"),
        ({"path": "a", "count": {"min": "1"}}, "count.min"),
        ({"path": "a", "count": {"min": 1}, "filter": "x"}, "filter"),
        ({"path": "a", "count": {"min": 1}, "where": "role=organizer"}, "where"),
    ],
)
def test_bad_rules_are_one_line_errors(item, match):
    with pytest.raises(InhouseError, match=match):
        parse_rules([item])


def test_rules_must_be_a_list():
    with pytest.raises(InhouseError, match="expected a list"):
        parse_rules({"path": "a"})
    assert parse_rules(None) == []


# --- which messages, and the drop/keep policy --------------------------------------


def test_json_messages_policy():
    c = conv("thinking out loud", '{"a": 1}', "```json\n{}\n```", "done")
    assert json_message_indexes(c, "all") == [1, 3, 5, 7]
    assert json_message_indexes(c, "last") == [7]
    assert json_message_indexes(c, "fenced") == [3, 5]
    assert [f.message_index for f in check_structured([c], None, [], json_messages="all")] == [1, 7]
    assert check_structured([c], None, [], json_messages="fenced") == []
    with pytest.raises(InhouseError, match="json_messages"):
        json_message_indexes(c, "some")


def test_filter_drops_or_keeps_invalid(validator):
    convs = [conv(meeting("organizer"), line=1), conv("nope", line=2), conv(meeting("guest"), line=3)]
    fails = check_structured(convs, validator, [Rule(**ONE_ORGANIZER)])
    kept, dropped = filter_structured(convs, fails, keep_invalid=False)
    assert [c.line for c in kept] == [1] and [c.line for c in dropped] == [2, 3]
    kept, dropped = filter_structured(convs, fails, keep_invalid=True)
    assert kept == convs and dropped == []


def test_identical_examples_are_filtered_by_position():
    same = [conv("nope"), conv(meeting("organizer"))] * 2  # equal objects, distinct examples
    kept, dropped = filter_structured(same, check_structured(same, None, []), keep_invalid=False)
    assert len(kept) == 2 and len(dropped) == 2


def test_remote_ref_is_not_fetched(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"$ref": "https://example.com/meeting.json"}), encoding="utf-8")
    with pytest.raises(InhouseError, match="remote refs are not fetched"):
        check_structured([conv("{}")], load_schema(p), [])
