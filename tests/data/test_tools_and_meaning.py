"""Tool-calling data in its three spellings, and data whose meaning the loader cannot keep: refused by name."""

import json

import pytest
from helpers import run_cli

from inhouse.data.conversation import ToolCall
from inhouse.data.formats import load_conversations, load_dataset
from inhouse.data.prepare import PrepareConfig, prepare, to_record
from inhouse.errors import InhouseError
from inhouse.model import tiny
from inhouse.model.template import IGNORE, TemplateError, encode, preflight, stop_token_ids

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def openai_example(arguments='{"city": "Paris"}', tool_call_id="call_1", answered=True, name="get_weather"):
    messages = [{"role": "system", "content": "You help with the weather."},
                {"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                      "function": {"name": name, "arguments": arguments}}]}]
    if answered:
        messages += [{"role": "tool", "tool_call_id": tool_call_id, "content": "18 degrees, sunny"},
                     {"role": "assistant", "content": "It is 18 degrees and sunny in Paris."}]
    return {"messages": messages, "tools": [WEATHER], "parallel_tool_calls": False}


def write(tmp_path, rows, name="tools.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_openai_tool_calls_load_into_the_conversation(tmp_path):
    result = load_dataset(write(tmp_path, [openai_example(), openai_example(answered=False)]))
    assert result.problems == [] and result.format == "chat"
    conv = result.conversations[0]
    assert conv.tools == (WEATHER,)
    assert conv.messages[2].tool_calls == (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)
    assert conv.messages[3].role == "tool" and conv.messages[3].tool_call_id == "call_1"
    chat = conv.as_chat()
    assert chat[2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert chat[3] == {"role": "tool", "content": "18 degrees, sunny", "tool_call_id": "call_1"}
    assert len(result.conversations[1].messages) == 3  # ending on the call is a complete example


def test_the_older_functions_form_and_sharegpt_tools_load_the_same(tmp_path):
    legacy = {"functions": [WEATHER["function"]], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"role": "function", "name": "get_weather", "content": "18 degrees, sunny"},
        {"role": "assistant", "content": "18 degrees and sunny."}]}
    sharegpt = {"tools": json.dumps([WEATHER["function"]]), "system": "Be brief.", "conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
        {"from": "observation", "value": "18 degrees, sunny"},
        {"from": "gpt", "value": "18 degrees and sunny."}]}
    for row in (legacy, sharegpt):
        result = load_dataset(write(tmp_path, [row], name=f"{len(row)}.jsonl"))
        assert result.problems == [], result.problems
        conv = result.conversations[0]
        call = next(m for m in conv.messages if m.tool_calls).tool_calls[0]
        answer = next(m for m in conv.messages if m.role == "tool")
        assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
        assert answer.tool_call_id == call.id and conv.tools[0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize(("row", "code", "field"), [
    (openai_example(arguments='{"city": "Par'), "invalid_tool_call_arguments", "messages[2].tool_calls[0].function.arguments"),
    (openai_example(arguments='["Paris"]'), "invalid_tool_call_arguments", "messages[2].tool_calls[0].function.arguments"),
    (openai_example(name="book_flight"), "undeclared_function", "messages[2].tool_calls"),
    (openai_example(tool_call_id="call_9"), "unknown_tool_call_id", "messages[3].tool_call_id"),
    ({"messages": openai_example(answered=False)["messages"] + [{"role": "user", "content": "and?"},
                                                               {"role": "assistant", "content": "Sunny."}],
      "tools": [WEATHER]}, "unanswered_tool_call", "messages[2].tool_calls"),
    ({"messages": openai_example()["messages"], "tools": "not json"}, "invalid_tools", "tools"),
])
def test_tool_problems_have_codes_and_fields(tmp_path, row, code, field):
    (problem,) = load_dataset(write(tmp_path, [row])).problems
    assert (problem.code, problem.field, problem.line) == (code, field, 1), problem


@pytest.fixture
def tools_tokenizer():
    tok = tiny.build_tokenizer(tiny.CHATML_TOOLS_TEMPLATE)
    return tok, stop_token_ids(tok)


def test_the_loss_covers_the_tool_call_and_the_answer_but_not_the_tool_result(tmp_path, tools_tokenizer):
    tok, stops = tools_tokenizer
    conv = load_dataset(write(tmp_path, [openai_example()])).conversations[0]
    preflight([conv], tok, stops)
    enc = encode(conv, tok, stops)
    trained = tok.decode([t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE])
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in trained
    assert "It is 18 degrees and sunny in Paris." in trained
    assert "18 degrees, sunny" not in trained and "get_weather\", \"description" not in trained


def test_a_template_that_ignores_tools_is_refused_before_training(tmp_path):
    tok = tiny.build_tokenizer()  # plain ChatML: no tools, no tool calls
    conv = load_dataset(write(tmp_path, [openai_example()])).conversations[0]
    with pytest.raises(TemplateError, match="does not render the tool definitions.*chatml-tools"):
        preflight([conv], tok, stop_token_ids(tok))


def test_training_on_tool_calls_through_the_cli(tmp_path, tiny_dir):
    data = write(tmp_path, [openai_example()] * 6)
    code, out, err = run_cli("train", "--base-model", tiny_dir, "--train-file", data, "--max-steps", "2",
                             "--chat-template", "chatml-tools", "--output-name", "weather", "-q",
                             env={"INHOUSE_HOME": str(tmp_path / "home")})
    assert code == 0, err
    code, out, err = run_cli("data", "check", data, "--model", "builtin:tiny", "--chat-template", "chatml-tools")
    assert code == 0 and "tool calls: 6" in out and "OK: ready to train" in out


def test_prepare_keeps_tools_calls_and_results(tmp_path):
    path = write(tmp_path, [openai_example(), openai_example(arguments='{"city": "Rome"}')])
    prepared = prepare(path, PrepareConfig(validation=0, pii="off", near_duplicate_threshold=1.0))
    records = sorted((to_record(c) for c in prepared.train), key=json.dumps)
    again = load_dataset(write(tmp_path, records, name="again.jsonl"))
    assert again.problems == [] and len(again.conversations) == 2
    assert {c.messages[2].tool_calls[0].arguments for c in again.conversations} == \
        {'{"city": "Paris"}', '{"city": "Rome"}'}  # exact dedup tells the two calls apart


def test_prepare_redacts_inside_tool_call_arguments_and_the_output_loads_back(tmp_path):
    from inhouse.data.prepare import write_prepared

    path = write(tmp_path, [openai_example(arguments='{"city": "Paris", "notify": "jane@example.com"}')])
    prepared = prepare(path, PrepareConfig(validation=0))
    write_prepared(prepared, path, PrepareConfig(validation=0), tmp_path / "o")
    again = load_dataset(tmp_path / "o" / "train.jsonl")
    assert again.problems == []
    args = json.loads(again.conversations[0].messages[2].tool_calls[0].arguments)
    assert args == {"city": "Paris", "notify": "<EMAIL>"}
    assert [e.action for e in prepared.events if e.step == "pii"] == ["changed"]


PREFERENCE_ROWS = [
    {"input": {"messages": [{"role": "user", "content": "Hi"}]},
     "preferred_output": [{"role": "assistant", "content": "Hello! How can I help?"}],
     "non_preferred_output": [{"role": "assistant", "content": "What."}]},
    {"prompt": "Hi", "chosen": "Hello! How can I help?", "rejected": "What."},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "rejected": "What."},
]


@pytest.mark.parametrize("row", PREFERENCE_ROWS[:2])
def test_preference_pairs_are_checked_as_pairs_never_trained_as_plain_chat(tmp_path, row):
    path = write(tmp_path, [row])
    code, out, err = run_cli("data", "check", path)
    assert code == 0 and "1 pair, 1 valid" in out and "method: dpo" in out
    with pytest.raises(InhouseError, match=r"^\S*tools.jsonl: this is preference data .*`method: dpo`"):
        load_conversations(path)


def test_a_pair_in_a_conversation_file_or_a_half_pair_is_named(tmp_path):
    path = write(tmp_path, [openai_example(), PREFERENCE_ROWS[2]])
    code, out, err = run_cli("data", "check", path)
    assert code == 1 and "tools.jsonl:2: preference_data [rejected]" in out and "method: dpo" in out
    with pytest.raises(InhouseError, match=r"tools.jsonl:2: preference_data.*nothing was written"):
        prepare(path, PrepareConfig())
    code, out, err = run_cli("data", "check", write(tmp_path, [PREFERENCE_ROWS[2]]))
    assert code == 1 and "tools.jsonl:1: missing_chosen [chosen]" in out


@pytest.mark.parametrize(("row", "code", "field"), [
    ({"prompt": "Hi", "completion": "Go away.", "label": False}, "feedback_label", "label"),
    ({"messages": [{"role": "user", "content": "<image>What is this?"}, {"role": "assistant", "content": "A lamp."}],
      "images": ["lamp.png"]}, "multimodal_content", "images"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                {"type": "image_url", "image_url": {"url": "x.png"}}]},
                   {"role": "assistant", "content": "A lamp."}]}, "multimodal_content", "messages[0].content[1]"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
      "reasoning": "The user greets me."}, "unrecognized_key", "reasoning"),
    ({"instruction": "Translate", "output": "Bonjour", "explanation": "French greeting"}, "unrecognized_key",
     "explanation"),
])
def test_content_the_loader_would_drop_is_reported(tmp_path, row, code, field):
    (problem,) = load_dataset(write(tmp_path, [row])).problems
    assert (problem.code, problem.field) == (code, field)
    with pytest.raises(InhouseError, match=code):
        prepare(write(tmp_path, [row], name="p.jsonl"), PrepareConfig())


def test_text_parts_metadata_and_alpaca_history_are_used_not_refused(tmp_path):
    rows = [{"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                          {"role": "assistant", "content": "Hello", "name": "bot"}], "id": "a1", "metadata": {"src": "x"}},
            {"instruction": "And Rome?", "output": "Warm.", "history": [["Paris?", "Mild."], ["Oslo?", "Cold."]]}]
    chat = load_dataset(write(tmp_path, rows[:1], name="c.jsonl"))
    alpaca = load_dataset(write(tmp_path, rows[1:], name="a.jsonl"))
    assert chat.problems == [] and chat.conversations[0].messages[0].content == "Hi there"
    assert alpaca.problems == []
    assert [m.content for m in alpaca.conversations[0].messages] == ["Paris?", "Mild.", "Oslo?", "Cold.", "And Rome?",
                                                                     "Warm."]
