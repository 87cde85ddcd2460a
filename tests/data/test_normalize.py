"""normalize_text / normalize_conversation: invisible noise goes, meaning stays."""

from __future__ import annotations

import json
import time

import pytest

from inhouse.data.conversation import Conversation, Message
from inhouse.data.normalize import REASONS, normalize_conversation, normalize_text

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # man ZWJ woman ZWJ girl ZWJ boy
RAINBOW_FLAG = "\U0001f3f3\ufe0f\u200d\U0001f308"
THUMBS_MEDIUM = "\U0001f44d\U0001f3fd"  # skin-tone modifier, no joiner
FLAG_DE = "\U0001f1e9\U0001f1ea"  # regional indicators


def reasons(text: str) -> list[str]:
    conv = Conversation((Message("user", text), Message("assistant", "ok")))
    return normalize_conversation(conv)[1]


# --- each step -------------------------------------------------------------------------


def test_nfc_composes_decomposed_accents():
    assert normalize_text("Cafe\u0301 nai\u0308ve") == "Café naïve"
    assert reasons("Cafe\u0301") == ["nfc"]
    assert normalize_text("\u1100\u1161") == "\uac00"  # Hangul jamo compose to one syllable


def test_nfc_not_nfkc_keeps_compatibility_characters():
    text = "x² ﬁle ＡＢＣ ½ ①"
    assert normalize_text(text) == text
    assert reasons(text) == []


def test_control_characters_removed_tab_and_newline_kept():
    assert normalize_text("a\x00b\x07c\x1bd\x7fe\x9ff\tg\nh") == "abcdef\tg\nh"
    assert reasons("bell\x07") == ["control_chars"]


def test_crlf_and_cr_become_lf():
    assert normalize_text("one\r\ntwo\rthree\n") == "one\ntwo\nthree"
    assert reasons("one\r\ntwo") == ["line_endings"]


def test_other_line_breaks_keep_words_apart():
    # Word exports use vertical tab for a manual line break; JS strings carry U+2028.
    assert normalize_text("cell one\x0bcell two\u2028three\x0cfour\x85five") == "cell one\ncell two\nthree\nfour\nfive"


def test_zero_width_space_and_bom_removed():
    assert normalize_text("\ufeffpass\u200bword\u2060!") == "password!"
    assert reasons("pass\u200bword") == ["zero_width"]


@pytest.mark.parametrize("emoji", [FAMILY, RAINBOW_FLAG, THUMBS_MEDIUM, FLAG_DE, "\u2764\ufe0f\u200d\U0001f525"])
def test_emoji_sequences_are_untouched(emoji):
    text = f"Thanks {emoji} see you"
    assert normalize_text(text) == text
    assert normalize_text(emoji) == emoji


def test_stray_zwj_removed_but_joining_zwj_kept():
    assert normalize_text("\u200dhello \u200d world\u200d") == "hello  world"
    assert normalize_text(f"{FAMILY}\u200d") == FAMILY
    # Devanagari conjunct (ZWJ after virama) and Persian ZWNJ are spelling, not noise.
    assert normalize_text("क्\u200dष") == "क्\u200dष"
    assert normalize_text("می\u200cخواهم") == "می\u200cخواهم"


def test_right_to_left_text_and_bidi_controls_kept():
    hebrew = "\u200fשלום, ההזמנה שלך #4521 נשלחה\u200e."
    arabic = "\u202bمرحبا، طلبك رقم 4521 في الطريق\u202c"
    isolate = "order \u2067ملف.txt\u2069 is ready"
    for text in (hebrew, arabic, isolate):
        assert normalize_text(text) == text
        assert reasons(text) == []


def test_whitespace_trailing_blank_lines_and_ends():
    text = "  \n\nHello   \nline two\t\n\n\n\n\n\nafter gap  \n\n"
    assert normalize_text(text) == "Hello\nline two\n\n\nafter gap"
    assert reasons(text) == ["whitespace"]


def test_inner_spacing_and_indentation_kept():
    text = "Steps:\n  1. open  settings\n\t2. tap  sync"
    assert normalize_text(text) == text


def test_two_blank_lines_are_allowed():
    assert normalize_text("a\n\n\nb") == "a\n\n\nb"


def test_lone_surrogate_becomes_replacement_character():
    assert normalize_text("bad \ud83d half") == "bad \ufffd half"
    assert reasons("bad \ud83d half") == ["lone_surrogates"]


# --- adversarial ------------------------------------------------------------------------


def test_json_in_code_fence_unchanged_except_line_endings():
    payload = '{\r\n  "sku": "A-1",   \r\n\r\n\r\n\r\n\r\n  "note": "two  spaces  "\r\n}'
    text = f"Here is the payload:  \r\n```json\r\n{payload}\r\n```\r\nDone."
    out = normalize_text(text)
    block = out.split("```json\n")[1].split("\n```")[0]
    assert block == payload.replace("\r\n", "\n")
    assert json.loads(block) == json.loads(payload)
    assert out.startswith("Here is the payload:\n```json\n")


def test_tilde_fences_and_unclosed_fence():
    assert normalize_text("~~~~\nx  \n```\ny  \n~~~~\nz  ") == "~~~~\nx  \n```\ny  \n~~~~\nz"
    assert normalize_text("see:\n```\ncode  \n\n\n\n\nmore  ") == "see:\n```\ncode  \n\n\n\n\nmore"


def test_giant_line_is_linear_time():
    line = "word " * 400_000 + " " * 1_000_000 + "end" + " " * 1_000_000
    start = time.perf_counter()
    out = normalize_text(line)
    assert time.perf_counter() - start < 120  # a backtracking guard (hours if quadratic), not a speed target
    assert out.endswith(" " * 1_000_000 + "end") and out.startswith("word word")


def test_many_lines_and_zwj_runs_do_not_blow_up():
    text = ("\u200d" * 100_000 + "a\n") * 10 + "\n" * 100_000
    start = time.perf_counter()
    assert normalize_text(text) == "\n".join(["a"] * 10)
    assert time.perf_counter() - start < 120  # a backtracking guard (hours if quadratic), not a speed target


def test_pii_split_across_lines_keeps_the_line_break():
    # Joining lines would change what a PII scanner sees; only the endings change.
    assert normalize_text("card 4111 1111\r\n1111 1111 exp 12/29") == "card 4111 1111\n1111 1111 exp 12/29"
    assert normalize_text("mail jane.doe@\r\nexample.com") == "mail jane.doe@\nexample.com"


def test_hidden_characters_inside_pii_are_removed():
    assert normalize_text("jane\u200b.doe@exa\u00admple.com") == "jane.doe@exa\u00admple.com"
    assert normalize_text("4111\u200b1111\ufeff1111\u20601111") == "4111111111111111"


def test_mojibake_is_left_alone():
    # Guessing at double-encoded text is out of scope; it must not get worse.
    assert normalize_text("CafÃ© naÃ¯ve") == "CafÃ© naÃ¯ve"


@pytest.mark.parametrize(
    "text",
    [
        "Cafe\u0301\r\n\r\n\r\n\r\nx \u200b",
        f"  {FAMILY} \u200d \u200f\u05e9\u200e\x00\r",
        "```\r\n  a  \r\n\r\n\r\n\r\n```  \r\n\r\n\r\n\r\nb",
        "\x0b\x0c\x85\u2028\u2029",
    ],
)
def test_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once


# --- conversations ----------------------------------------------------------------------


def test_conversation_changes_are_listed_in_report_order():
    conv = Conversation(
        (Message("system", "Be brief.\r\n"), Message("user", "Cafe\u0301\x07"), Message("assistant", "ok", weight=0)),
        source="data.jsonl",
        line=7,
        meta={"category": "billing"},
    )
    new, why = normalize_conversation(conv)
    assert why == ["line_endings", "control_chars", "nfc", "whitespace"]
    assert [m.content for m in new.messages] == ["Be brief.", "Café", "ok"]
    assert [m.weight for m in new.messages] == [1, 1, 0]
    assert (new.source, new.line, new.meta) == ("data.jsonl", 7, {"category": "billing"})
    assert set(why) <= set(REASONS)


def test_clean_conversation_is_unchanged():
    conv = Conversation((Message("user", "Hi"), Message("assistant", "Hello \U0001f44b")))
    new, why = normalize_conversation(conv)
    assert why == [] and new == conv


def test_message_of_only_invisible_characters_is_flagged():
    conv = Conversation((Message("user", "\u200b\ufeff"), Message("assistant", "ok")))
    new, why = normalize_conversation(conv)
    assert new.messages[0].content == ""
    assert why == ["zero_width", "empty_message"]
