"""The loss mask: exactly the assistant tokens plus each turn's end-of-turn token.

Expected ids and labels are built by hand, piece by piece, independently of the
span logic in `inhouse.model.template`.
"""

import pytest

from inhouse.data.conversation import Conversation, Message
from inhouse.model import tiny
from inhouse.model.template import (IGNORE, Encoded, TemplateError, check_mask, encode, preflight,
                                    stop_token_ids)

CONV = Conversation((
    Message("system", "Be brief."),
    Message("user", "What is 2+2?"),
    Message("assistant", "4."),
    Message("user", "And 3+3?"),
    Message("assistant", "6, of course."),
), "t.jsonl", 7)


def expected(tok, pieces):
    """pieces: (text, trained) -> ids and labels, tokenized piece by piece."""
    ids, labels = [], []
    for text, trained in pieces:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    return ids, labels


def chatml_pieces(conv, weights=None):
    pieces = []
    for m in conv.messages:
        trained = m.role == "assistant" and m.weight == 1
        pieces += [(f"<|im_start|>{m.role}\n", False), (m.content, trained), ("<|im_end|>", trained), ("\n", False)]
    return pieces


def llama3_pieces(conv):
    pieces = [("<|begin_of_text|>", False)]
    for m in conv.messages:
        trained = m.role == "assistant" and m.weight == 1
        pieces += [(f"<|start_header_id|>{m.role}<|end_header_id|>\n\n", False),
                   (m.content.strip(), trained), ("<|eot_id|>", trained)]
    return pieces


@pytest.mark.parametrize("template,pieces", [(tiny.CHATML_TEMPLATE, chatml_pieces),
                                             (tiny.LLAMA3_TEMPLATE, llama3_pieces)])
def test_mask_is_exactly_assistant_plus_end_of_turn(template, pieces):
    tok = tiny.build_tokenizer(template)
    enc = encode(CONV, tok, stop_token_ids(tok))
    ids, labels = expected(tok, pieces(CONV))
    assert enc.input_ids == ids
    assert enc.labels == labels
    trained_text = tok.decode([t for t in enc.labels if t != IGNORE])
    eot = "<|im_end|>" if "im_end" in template else "<|eot_id|>"
    assert trained_text == f"4.{eot}6, of course.{eot}"


def test_weight_zero_turn_is_context_only():
    conv = Conversation((Message("user", "a"), Message("assistant", "bad answer", 0),
                         Message("user", "again"), Message("assistant", "good answer")), "t", 1)
    tok = tiny.build_tokenizer()
    enc = encode(conv, tok, stop_token_ids(tok))
    ids, labels = expected(tok, chatml_pieces(conv))
    assert (enc.input_ids, enc.labels) == (ids, labels)
    assert tok.decode([t for t in enc.labels if t != IGNORE]) == "good answer<|im_end|>"


def test_trailing_newline_after_end_of_turn_is_not_trained():
    tok = tiny.build_tokenizer()
    enc = encode(CONV, tok, stop_token_ids(tok))
    newline = tok("\n", add_special_tokens=False)["input_ids"][0]
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    for k, label in enumerate(enc.labels):
        if label == eot:
            assert enc.input_ids[k + 1] == newline and enc.labels[k + 1] == IGNORE


def test_template_without_end_of_turn_is_refused():
    tok = tiny.build_tokenizer("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(TemplateError, match="end-of-turn token would fall outside"):
        encode(CONV, tok, stop_token_ids(tok))


def test_end_of_turn_emitted_by_the_next_turn_is_refused():
    # The classic bug: the separator comes *before* each message, so the last
    # assistant turn is never closed inside its own span.
    tok = tiny.build_tokenizer("{% for m in messages %}{% if not loop.first %}<|im_end|>{% endif %}"
                               "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}<|im_end|><|im_start|>assistant\n{% endif %}")
    with pytest.raises(TemplateError):
        encode(CONV, tok, stop_token_ids(tok))


def test_template_that_rewrites_history_is_refused():
    tok = tiny.build_tokenizer("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                               "{% if m['role'] == 'assistant' and not loop.last %}...{% else %}{{ m['content'] }}"
                               "{% endif %}<|im_end|>\n{% endfor %}"
                               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TemplateError, match="differently"):
        encode(CONV, tok, stop_token_ids(tok))


def test_check_mask_catches_wrong_masks():
    tok = tiny.build_tokenizer()
    stops = stop_token_ids(tok)
    good = encode(CONV, tok, stops)
    check_mask(CONV, good, tok, stops)
    no_eot = Encoded(good.input_ids, [IGNORE if t in stops else t for t in good.labels])
    with pytest.raises(TemplateError, match="end-of-turn"):
        check_mask(CONV, no_eot, tok, stops)
    everything = Encoded(good.input_ids, list(good.input_ids))
    with pytest.raises(TemplateError):
        check_mask(CONV, everything, tok, stops)
    text = tok.decode(good.input_ids)
    start = text.index("What is 2+2?")
    leak = list(good.labels)
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for k, (a, _) in enumerate(offsets):
        if start <= a < start + len("What is 2+2?"):
            leak[k] = good.input_ids[k]
    with pytest.raises(TemplateError):
        check_mask(CONV, Encoded(good.input_ids, leak), tok, stops)


def test_preflight_passes_on_real_multiturn_data():
    tok = tiny.build_tokenizer(tiny.LLAMA3_TEMPLATE)
    preflight([CONV, CONV], tok, stop_token_ids(tok))


def test_stop_tokens_include_eos_and_generation_config_ids():
    tok = tiny.build_tokenizer()
    ids = stop_token_ids(tok, [5])
    assert tok.eos_token_id in ids and 5 in ids
