"""Tool calling in training data: OpenAI's `tools` / `tool_calls` / `tool` messages, its older
`functions` / `function_call` / `function` form, and ShareGPT's `function_call` / `observation` turns.

All three become the same thing: assistant messages with `ToolCall`s (trained), `tool` messages
answering them by id (context only), and the tool definitions on the conversation. Checks (OpenAI's
spirit, with codes): arguments are JSON objects, every result answers a call made before it, a call
is answered before the conversation goes on, and every called function is declared in `tools`.
"""

from __future__ import annotations

import json
from typing import Any

from inhouse.data.conversation import Message, ToolCall


class ToolProblem(Exception):
    """One problem with an example's tool data: (code, field, message), like formats._Bad."""

    def __init__(self, code: str, fld: str, message: str) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, fld, message


def tools_of(obj: dict) -> tuple[Any, ...]:
    """The example's tool definitions: `tools`, or the older `functions` as tools; a JSON string holding
    the list (as LLaMA-Factory's ShareGPT files have it) is read too."""
    if "tools" in obj and "functions" in obj:
        raise ToolProblem("wrong_type", "functions", "give 'tools' or the older 'functions', not both")
    raw = obj.get("tools", obj.get("functions"))
    where = "tools" if "tools" in obj else "functions"
    if raw is None:
        return ()
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ToolProblem("invalid_tools", where, f"'{where}' is a string but not JSON") from None
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ToolProblem("invalid_tools", where, f"'{where}' must be a list of tool definitions (objects)")
    return tuple(t if "function" in t else {"type": "function", "function": t} for t in raw)


def declared(tools: tuple[Any, ...]) -> set[str]:
    return {t["function"].get("name") for t in tools if isinstance(t.get("function"), dict)}


def parse_calls(raw: Any, where: str, serial: list[int]) -> tuple[ToolCall, ...]:
    """OpenAI's `tool_calls` list."""
    if not isinstance(raw, list) or not raw:
        raise ToolProblem("wrong_type", where, "'tool_calls' must be a non-empty list")
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}[{j}]"
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise ToolProblem("wrong_type", at, "a tool call must be an object with a 'function' object")
        if call.get("type", "function") != "function":
            raise ToolProblem("unsupported_tool_type", f"{at}.type", f"tool call type {call.get('type')!r} (only 'function')")
        call_id = call.get("id") or f"call_{next_id(serial)}"
        calls.append(function_call(call["function"], f"{at}.function", str(call_id)))
    return tuple(calls)


def function_call(raw: Any, where: str, call_id: str) -> ToolCall:
    """A {name, arguments} object (arguments as JSON text, or already an object)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"].strip():
        raise ToolProblem("wrong_type", f"{where}.name", "a function call needs a 'name' string")
    arguments = raw.get("arguments", "{}")
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    try:
        parsed = json.loads(text)
    except ValueError as e:
        raise ToolProblem("invalid_tool_call_arguments", f"{where}.arguments",
                          f"arguments of {raw['name']!r} are not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(parsed, dict):
        raise ToolProblem("invalid_tool_call_arguments", f"{where}.arguments",
                          f"arguments of {raw['name']!r} must be a JSON object")
    return ToolCall(call_id, raw["name"], text)


def next_id(serial: list[int]) -> int:
    serial[0] += 1
    return serial[0]


def sharegpt_calls(value: Any, where: str, serial: list[int]) -> tuple[ToolCall, ...]:
    """A ShareGPT `function_call` turn: JSON text of one call {name, arguments} or a list of them."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        raise ToolProblem("invalid_tool_call_arguments", where, "a function_call turn's value must be JSON "
                          "{\"name\": ..., \"arguments\": {...}}") from None
    items = parsed if isinstance(parsed, list) else [parsed]
    return tuple(function_call(item, f"{where}[{j}]" if isinstance(parsed, list) else where,
                               f"call_{next_id(serial)}") for j, item in enumerate(items))


def answer_legacy(messages: list[Message], name: str | None) -> str | None:
    """The id of the latest unanswered call (of `name`, when given) for an older-style result message."""
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    for msg in reversed(messages):
        for call in reversed(msg.tool_calls):
            if call.id not in answered and (name is None or call.name == name):
                return call.id
    return None


def check(messages: list[Message], tools: tuple[Any, ...], where: str) -> None:
    """Results answer earlier calls, calls are answered before the conversation goes on, functions exist."""
    names, open_calls = declared(tools), {}
    for i, msg in enumerate(messages):
        if msg.role == "tool":
            if msg.tool_call_id not in open_calls:
                raise ToolProblem("unknown_tool_call_id", f"{where}[{i}].tool_call_id",
                                  f"tool result for {msg.tool_call_id!r}, which no earlier call made (or was answered)")
            del open_calls[msg.tool_call_id]
            continue
        if open_calls:
            first = next(iter(open_calls.values()))
            raise ToolProblem("unanswered_tool_call", f"{where}[{first[0]}].tool_calls",
                              f"the call of {first[1]!r} gets no tool result before the conversation goes on")
        for call in msg.tool_calls:
            if call.name not in names:
                known = ", ".join(sorted(n for n in names if n)) or "none"
                raise ToolProblem("undeclared_function", f"{where}[{i}].tool_calls",
                                  f"calls {call.name!r}, which is not in the example's tools (declared: {known})")
            open_calls[call.id] = (i, call.name)
