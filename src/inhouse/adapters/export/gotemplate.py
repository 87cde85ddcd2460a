"""Translate a Hugging Face (Jinja) chat template into an Ollama TEMPLATE (Go text/template).

A general Jinja-to-Go compiler is impossible, so the translation works by example: the Jinja
template renders a few conversations whose contents are unique markers, and the text around the
markers gives each role's prefix and suffix, the generation prompt, the text before the first
turn, and where a system prompt goes (its own turn, or folded into the first or the last user
message, as Gemma 3, Llama 2 and Mistral v0.3 do). From those pieces a Go template over Ollama's
data (`.System`, `.Messages` with `.Role` and `.Content`) is built.

Then the translation is checked, not trusted: multi-turn conversations are rendered by Jinja and
by a Python model of the emitted Go template (`render_layout`), and any difference refuses the
translation with one line saying where. Golden tests run the emitted text through Go's own
text/template to keep that model honest.

Conventions of Ollama that the translation follows:
- the engine prepends BOS itself (GGUF `tokenizer.ggml.add_bos_token`), so a leading BOS the
  Jinja template writes is left out;
- every system message is joined into `.System` and placed once, where the first one goes;
- a conversation that ends with an assistant message is continued (prefill): that message is
  left open, like Jinja's `continue_final_message`.
Tool definitions, tool calls and tool results are not rendered (v1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from inhouse.errors import InvalidInputError

Render = Callable[..., str]

USER_1, USER_2, USER_3 = "uSeRmArK1", "uSeRmArK2", "uSeRmArK3"
ASSISTANT_1, ASSISTANT_2 = "aSsTmArK1", "aSsTmArK2"
SYSTEM = "sYsTmArK1"


class TemplateTranslationError(InvalidInputError):
    """The chat template does something the by-example Go template cannot reproduce."""


class _Unrenderable(Exception):
    """Jinja refused this conversation (raise_exception, a missing variable)."""


@dataclass(frozen=True)
class SystemTurn:
    """The system prompt is a turn of its own: the text before the first user turn becomes
    `before + system + after` (the no-system text, a default system turn included, is `Layout.head`)."""

    before: str
    after: str


@dataclass(frozen=True)
class SystemFold:
    """The system prompt is written inside a user message, just before its content."""

    before: str
    after: str
    last: bool  # into the last message when it is a user one (Mistral v0.3), else the first user one


@dataclass(frozen=True)
class Layout:
    """Everything the Go template is built from: literal pieces around the message contents."""

    head: str
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str
    system: SystemTurn | SystemFold | None = None
    turn_bos: str = ""  # written before every user turn but the first (Llama 2)


@dataclass(frozen=True)
class Translation:
    template: str
    layout: Layout
    notes: tuple[str, ...]

    @property
    def supports_system(self) -> bool:
        return self.layout.system is not None


def to_go_template(chat_template: str, *, bos_token: str | None = None, eos_token: str | None = None,
                   engine_adds_bos: bool = True) -> str:
    """The Ollama TEMPLATE for `chat_template`; raises TemplateTranslationError when it cannot be exact."""
    return translate(chat_template, bos_token=bos_token, eos_token=eos_token,
                     engine_adds_bos=engine_adds_bos).template


def translate(chat_template: str, *, bos_token: str | None = None, eos_token: str | None = None,
              engine_adds_bos: bool = True) -> Translation:
    """Derive, emit and verify. `bos_token`/`eos_token` are the tokenizer's (what transformers
    passes to the template); `engine_adds_bos` says whether the GGUF makes the engine prepend BOS."""
    if eos_token is None and "eos_token" in chat_template:
        raise TemplateTranslationError("the chat template writes eos_token; pass the tokenizer's eos_token")
    render = jinja_renderer(chat_template, bos_token, eos_token)
    strip = bos_token if engine_adds_bos and bos_token else ""
    turns = _strip_bos(derive_turns(render), strip)
    failures: list[str] = []
    for system in system_candidates(render, turns, strip):
        layout = replace(turns, system=system)
        failure = verify(layout, render, strip)
        if failure is None:
            return Translation(emit(layout), layout, _notes(layout, render, chat_template))
        failures.append(failure)
    raise TemplateTranslationError(f"the chat template cannot be written as an Ollama template: {failures[0]}")


def jinja_renderer(chat_template: str, bos_token: str | None, eos_token: str | None) -> Render:
    """render(messages, generation=False, prefill=False) with transformers' own Jinja renderer."""
    import jinja2
    from transformers.utils.chat_template_utils import render_jinja_template

    specials = {k: v for k, v in (("bos_token", bos_token), ("eos_token", eos_token)) if v is not None}

    def render(messages: list[dict], generation: bool = False, prefill: bool = False) -> str:
        try:
            out, _ = render_jinja_template(conversations=[messages], chat_template=chat_template,
                                           add_generation_prompt=generation, continue_final_message=prefill,
                                           **specials)
        except (jinja2.TemplateError, ValueError, TypeError) as exc:
            raise _Unrenderable(" ".join(str(exc).split())[:160]) from None
        return out[0]
    return render


def _msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _around(text: str, marker: str, what: str) -> tuple[str, str]:
    """The text before and after the one occurrence of `marker`."""
    if text.count(marker) != 1:
        raise TemplateTranslationError(f"the chat template writes the {what} {text.count(marker)} times "
                                       "instead of once (it rewrites message contents)")
    at = text.index(marker)
    return text[:at], text[at + len(marker):]


def _follows(text: str, start: str, what: str) -> str:
    """What `text` adds after `start`; the template must not rewrite earlier turns once later ones follow."""
    if not text.startswith(start):
        raise TemplateTranslationError(f"the chat template renders earlier turns differently once {what} follows")
    return text[len(start):]


def derive_turns(render: Render) -> Layout:
    """Role prefixes and suffixes, generation prompt and head, from conversations without a system prompt."""
    u1, a1, u2 = _msg("user", USER_1), _msg("assistant", ASSISTANT_1), _msg("user", USER_2)
    try:
        one, with_reply, two = render([u1]), render([u1, a1]), render([u1, a1, u2], generation=True)
        generation = _follows(render([u1], generation=True), one, "the generation prompt")
    except _Unrenderable as exc:
        raise TemplateTranslationError(f"the chat template fails on a plain user/assistant chat: {exc}") from None
    head_and_prefix, user_suffix = _around(one, USER_1, "user message")
    assistant = _around(_follows(with_reply, one, "an assistant turn"), ASSISTANT_1, "assistant message")
    user_prefix, rest = _around(_follows(two, with_reply, "a second user turn"), USER_2, "user message")
    if rest != user_suffix + generation or not head_and_prefix.endswith(user_prefix):
        raise TemplateTranslationError("the chat template renders the second user turn unlike the first")
    head = head_and_prefix[:len(head_and_prefix) - len(user_prefix)]
    return Layout(head, (user_prefix, user_suffix), assistant, generation)


def _strip_bos(layout: Layout, bos: str) -> Layout:
    """Leave out the BOS the engine adds itself: from the head, or from the first user turn."""
    if bos and layout.head.startswith(bos):
        return replace(layout, head=layout.head[len(bos):])
    prefix, suffix = layout.user
    if bos and not layout.head and prefix.startswith(bos):
        return replace(layout, user=(prefix[len(bos):], suffix), turn_bos=bos)
    return layout


def system_candidates(render: Render, layout: Layout, bos: str) -> list[SystemTurn | SystemFold | None]:
    """Where the system prompt may go, most specific first; `[None]` when the template has no place for it."""
    try:
        text = render([_msg("system", SYSTEM), _msg("user", USER_1)])
    except _Unrenderable:
        return [None]
    if SYSTEM not in text:
        return [None]
    text = text[len(bos):] if bos and text.startswith(bos) else text
    found: list[SystemTurn | SystemFold | None] = []
    turn = layout.user[0] + USER_1 + layout.user[1]
    if text.endswith(turn) and SYSTEM in text[:-len(turn)]:
        found.append(SystemTurn(*_around(text[:-len(turn)], SYSTEM, "system message")))
    opening, content = layout.head + layout.user[0], USER_1 + layout.user[1]
    if text.startswith(opening) and text.endswith(content) and SYSTEM in text[len(opening):-len(content)]:
        before, after = _around(text[len(opening):-len(content)], SYSTEM, "system message")
        found += [SystemFold(before, after, last=False), SystemFold(before, after, last=True)]
    if not found:
        raise TemplateTranslationError("the chat template puts the system prompt neither in a turn of its own "
                                       "nor at the start of a user message")
    return found


def ollama_view(messages: list[dict]) -> tuple[str, list[dict]]:
    """What Ollama hands the template: all system contents joined as `.System`, and the messages with
    runs of one role merged (its `collate`); system messages stay in the list."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    merged: list[dict] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"] != "tool":
            merged[-1] = {**merged[-1], "content": merged[-1]["content"] + "\n\n" + m["content"]}
        else:
            merged.append(dict(m))
    return system, merged


def render_layout(layout: Layout, system: str, messages: list[dict]) -> str:
    """Python model of exactly what `emit(layout)` renders in Go for Ollama's data."""
    sys_turn = isinstance(layout.system, SystemTurn) and system
    out = [layout.system.before + system + layout.system.after if sys_turn else layout.head]
    started = folded = False
    for i, m in enumerate(messages):
        last = i == len(messages) - 1
        if m["role"] == "user":
            out += [layout.turn_bos if started else "", layout.user[0]]
            fold = layout.system if isinstance(layout.system, SystemFold) else None
            if fold and system and (last if fold.last else not folded):
                out += [fold.before, system, fold.after]
            out += [m["content"], layout.user[1], layout.generation if last else ""]
            started = folded = True
        elif m["role"] == "assistant":
            out += [layout.assistant[0], m["content"], "" if last else layout.assistant[1]]
            started = True
        elif m["role"] == "system" and last:
            out.append(layout.generation)
    return "".join(out)


def _conversations(with_system: bool) -> list[tuple[list[dict], bool]]:
    """(messages, prefill) pairs: several turns, multi-line and unusual contents."""
    u = [_msg("user", t) for t in ("Hi!", "Line one\nline two", "Ünïcödé ✓ {{ .Content }} {% x %}")]
    a = [_msg("assistant", t) for t in ("Hello.", "Sure:\n- one\n- two")]
    chats = [[u[0]], [u[0], a[0], u[1]], [u[0], a[0], u[1], a[1], u[2]], [u[0], a[0]], [u[0], a[0], u[1], a[1]]]
    system = [_msg("system", "Be brief.\nAnswer in English.")]
    out = [(c, c[-1]["role"] == "assistant") for c in chats]
    return out + ([(system + c, p) for c, p in out] if with_system else [])


def verify(layout: Layout, render: Render, bos: str) -> str | None:
    """None when the layout renders every test conversation exactly as Jinja does, else where it differs."""
    for messages, prefill in _conversations(layout.system is not None):
        try:
            expected = render(messages, generation=not prefill, prefill=prefill)
        except _Unrenderable as exc:
            return f"Jinja fails on a {len(messages)}-message chat ({exc})"
        expected = expected[len(bos):] if bos and expected.startswith(bos) else expected
        got = render_layout(layout, *ollama_view(messages))
        if got != expected:
            return _difference(messages, got, expected)
    return None


def _difference(messages: list[dict], got: str, expected: str) -> str:
    at = next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))
    roles = "/".join(m["role"] for m in messages)
    return (f"a {roles} chat renders {expected[at:at + 40]!r} at character {at} in Jinja but "
            f"{got[at:at + 40]!r} by example (content-dependent logic?); write the TEMPLATE by hand")


def _where_system_goes(layout: Layout) -> str:
    if isinstance(layout.system, SystemFold):
        return f"folded into the {'last' if layout.system.last else 'first'} user message"
    return "in a turn of its own" if layout.system else "nowhere (the template has no system role)"


def _notes(layout: Layout, render: Render, chat_template: str) -> tuple[str, ...]:
    notes = [f"system prompt: {_where_system_goes(layout)}", "tool definitions, calls and results are not rendered"]
    if "strftime_now" in chat_template:
        notes.append("the Jinja template writes today's date; the Ollama template keeps the date of the export")
    padded = "\n" + USER_1 + "\n"
    if padded not in render([_msg("user", padded)]):
        notes.append("the Jinja template trims whitespace around message contents; Ollama's template does not")
    return tuple(notes)


# --- emitting Go text/template ------------------------------------------------------------------

def _act(code: str) -> tuple[str, str]:
    return ("act", code)


def _text(text: str) -> list[tuple[str, str]]:
    """A literal piece: raw when Go and Ollama's Modelfile parser keep it verbatim, else a Go string."""
    if not text:
        return []
    raw = all(c.isprintable() or c in "\n\t" for c in text) and '"' not in text \
        and "{{" not in text and not text.endswith("{")
    return [("text", text)] if raw else [_act(go_string(text))]


def go_string(text: str) -> str:
    """A Go interpreted string literal that holds `text` exactly, in printable ASCII-safe form."""
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = [escapes.get(c) or (c if c.isprintable() else
                              f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}") for c in text]
    return '"' + "".join(out) + '"'


def _when(condition: str, body: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [_act(f"if {condition}"), *body, _act("end")] if body else []


def _user_branch(layout: Layout) -> list[tuple[str, str]]:
    fold = layout.system if isinstance(layout.system, SystemFold) else None
    tokens = _when("$started", _text(layout.turn_bos)) + _text(layout.user[0])
    if fold:
        inserted = _text(fold.before) + [_act("$.System")] + _text(fold.after)
        tokens += _when("and $.System $last" if fold.last else "and $.System (not $folded)", inserted)
        tokens += [] if fold.last else [_act("$folded = true")]
    tokens += [_act("$m.Content"), *_text(layout.user[1]), *_when("$last", _text(layout.generation))]
    return tokens + ([_act("$started = true")] if layout.turn_bos else [])


def _head(layout: Layout) -> list[tuple[str, str]]:
    if not isinstance(layout.system, SystemTurn):
        return _text(layout.head)
    turn = _text(layout.system.before) + [_act(".System")] + _text(layout.system.after)
    if not layout.head:
        return _when(".System", turn)
    return [_act("if .System"), *turn, _act("else"), *_text(layout.head), _act("end")]


def emit(layout: Layout) -> str:
    """The Go template: head, then one branch per role inside `range .Messages`."""
    fold_first = isinstance(layout.system, SystemFold) and not layout.system.last
    tokens = ([_act("$started := false")] if layout.turn_bos else []) + \
        ([_act("$folded := false")] if fold_first else []) + _head(layout)
    tokens += [_act("range $i, $m := .Messages"), _act("$last := eq (len (slice $.Messages $i)) 1"),
               _act('if eq $m.Role "user"'), *_user_branch(layout),
               _act('else if eq $m.Role "assistant"'), *_text(layout.assistant[0]), _act("$m.Content"),
               *_when("not $last", _text(layout.assistant[1])), *([_act("$started = true")] if layout.turn_bos else [])]
    if layout.generation:
        tokens += [_act('else if eq $m.Role "system"'), *_when("$last", _text(layout.generation))]
    return _join(tokens + [_act("end"), _act("end")])


def _join(tokens: list[tuple[str, str]]) -> str:
    """Actions that follow an action start a new line (`{{-` eats that newline, never literal text)."""
    out, previous = [], "text"
    for kind, value in tokens:
        if kind == "text":
            out.append(value)
        else:
            out.append(f"\n{{{{- {value} }}}}" if previous == "act" else f"{{{{ {value} }}}}")
        previous = kind
    return "".join(out)
