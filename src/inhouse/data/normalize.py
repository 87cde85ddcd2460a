"""Make text that means the same thing look the same, before dedup and training.

Exported files carry invisible noise: Windows line endings, decomposed
accents, pasted control characters, zero-width spaces from web pages, and
trailing blanks. Left in, they split one example into "different" ones for
deduplication and waste tokens in training. Everything here is conservative:
only characters that carry no meaning are changed, so right-to-left text,
emoji sequences and code keep working.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

from inhouse.data.conversation import Conversation

# Reasons, in the order a report lists them.
REASONS = ("line_endings", "control_chars", "lone_surrogates", "zero_width", "nfc", "whitespace", "empty_message")

# \r\n and \r, plus characters that editors and Word exports use as line
# breaks (vertical tab, form feed, NEL, Unicode line/paragraph separators):
# turning them into \n keeps the words they separate apart.
_LINE_BREAKS = re.compile("\r\n?|[\x0b\x0c\x85\u2028\u2029]")
# C0 and C1 controls except \t and \n (the line breaks above are gone by now).
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# Halves of UTF-16 pairs that JSON "\ud83d" escapes can smuggle in: they cannot
# be written as UTF-8, so they become U+FFFD instead of crashing a later step.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Zero-width space, word joiner and BOM carry no meaning inside text. ZWJ
# (U+200D) builds emoji sequences and Indic conjuncts, so it is removed only
# when it joins nothing: next to whitespace, another ZWJ, or an end. ZWNJ
# (U+200C) is spelling in Persian and Indic scripts, and the bidi marks
# U+200E/U+200F order right-to-left text: both are kept.
_ZERO_WIDTH = re.compile("[\u200b\u2060\ufeff]|(?<![^\\s\u200d])\u200d|\u200d(?![^\\s\u200d])")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def normalize_text(text: str) -> str:
    """The canonical form of one message's text (see `normalize_conversation`)."""
    return _normalize(text)[0]


def normalize_conversation(conv: Conversation) -> tuple[Conversation, list[str]]:
    """Normalise every message; also say why anything changed, so a prepare
    report can show each altered example with its reasons."""
    messages, reasons = [], set()
    for m in conv.messages:
        if not m.content:  # a tool call's empty text stays as it is, and is no reason to report
            messages.append(m)
            continue
        content, why = _normalize(m.content)
        reasons.update(why)
        messages.append(m if content == m.content else dataclasses.replace(m, content=content))
    new = dataclasses.replace(conv, messages=tuple(messages), meta=dict(conv.meta))
    return new, [r for r in REASONS if r in reasons]


def _normalize(text: str) -> tuple[str, set[str]]:
    """Each step in turn, recording the ones that changed something."""
    reasons: set[str] = set()
    for reason, step in _STEPS:
        new = step(text)
        if new != text:
            reasons.add(reason)
            text = new
    if not text:
        reasons.add("empty_message")
    return text, reasons


def _nfc(text: str) -> str:
    """NFC, not NFKC: compatibility folding would turn "x²" into "x2"."""
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _whitespace(text: str) -> str:
    """Trailing blanks off each line, at most two blank lines in a row, and
    the message stripped. Fenced code blocks keep their layout untouched."""
    out: list[str] = []
    fence = ""  # the opening fence while inside a code block
    blanks = 0
    for line in text.split("\n"):
        if fence:
            closing = _closes(line, fence)
            out.append(line.rstrip() if closing else line)
            fence = "" if closing else fence
            continue
        line = line.rstrip()
        blanks = blanks + 1 if not line else 0
        if blanks <= 2:
            out.append(line)
        if m := _FENCE.match(line):
            fence = m.group(1)
    return "\n".join(out).strip()


def _closes(line: str, fence: str) -> bool:
    """CommonMark: a closing fence is the same character, at least as long, alone on its line."""
    m = _FENCE.match(line)
    return bool(m) and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line[m.end() :].strip()


_STEPS = (
    ("line_endings", lambda t: _LINE_BREAKS.sub("\n", t)),
    ("control_chars", lambda t: _CONTROL.sub("", t)),
    ("lone_surrogates", lambda t: _SURROGATE.sub("\ufffd", t)),
    ("zero_width", lambda t: _ZERO_WIDTH.sub("", t)),
    ("nfc", _nfc),
    ("whitespace", _whitespace),
)
