"""Batched generation with per-request settings: stop strings, lengths, streaming, seeds, mixing."""

import pytest

from inhouse.generation import GenerationConfig
from inhouse.adapters.load import load_chat_model

QUESTIONS = ["Where is my order?", "Can I return a lamp?", "Hello", "What are your opening hours on Sunday?"]


@pytest.fixture(scope="module")
def chat(tiny_dir):
    return load_chat_model(str(tiny_dir))


def ask(q):
    return [{"role": "user", "content": q}]


def test_length_and_token_counts(chat):
    out = chat.complete(ask("Hello"), max_new_tokens=7)
    assert out.finish_reason == "length" and out.completion_tokens == 7
    assert out.prompt_tokens == len(chat.prompt_ids(ask("Hello"), GenerationConfig()))


def test_a_stop_string_ends_the_answer_and_is_not_part_of_it(chat):
    full = chat.complete(ask("Where is my order?"), max_new_tokens=40).text
    visible = full.strip()
    assert len(visible) > 12, full  # the random model still says something
    stop = visible[8:11]
    cut = chat.complete(ask("Where is my order?"), max_new_tokens=40, stop=[stop, "never-said-xyz"])
    assert cut.finish_reason == "stop"
    assert cut.text == full[:full.find(stop)]


def test_streamed_pieces_add_up_to_the_answer_and_never_show_a_stop_string(chat):
    full = chat.complete(ask("Can I return a lamp?"), max_new_tokens=40).text
    stop = full.strip()[10:14]
    pieces = []
    out = chat.complete(ask("Can I return a lamp?"), max_new_tokens=40, stop=[stop], on_text=pieces.append)
    assert "".join(pieces) == out.text == full[:full.find(stop)]
    pieces = []
    plain = chat.complete(ask("Can I return a lamp?"), max_new_tokens=40, on_text=pieces.append)
    assert "".join(pieces) == plain.text == full and len(pieces) > 3


def test_greedy_answers_are_the_same_alone_and_in_a_mixed_batch(chat):
    alone = [chat.complete(ask(q), max_new_tokens=12 + 4 * i).text for i, q in enumerate(QUESTIONS)]
    configs = [GenerationConfig(max_new_tokens=12 + 4 * i) for i in range(len(QUESTIONS))]
    from inhouse.model import batch

    requests = [chat.request(ask(q), c) for q, c in zip(QUESTIONS, configs)]
    sampled = chat.request(ask("Hello"), GenerationConfig(temperature=1.0, seed=3, max_new_tokens=30))
    together = batch.generate(chat.model, chat.tokenizer, [requests[0], sampled, *requests[1:]], chat.stop_ids)
    assert [c.text for c in together[:1] + together[2:]] == alone
    assert [c.completion_tokens for c in together[:1] + together[2:]] == [12, 16, 20, 24]


def test_a_seed_gives_the_same_sample_alone_or_in_a_batch(chat):
    config = GenerationConfig(temperature=1.2, top_p=0.95, seed=7, max_new_tokens=20)
    alone = chat.complete(ask("Hello"), config).text
    assert chat.complete(ask("Hello"), config).text == alone
    batched = chat.complete_batch([ask("Where is my order?"), ask("Hello")], config)
    assert batched[1].text == alone
    others = {chat.complete(ask("Hello"), config.model_copy(update={"seed": s})).text for s in range(4)}
    assert len(others) > 1  # sampling does sample


def test_a_tiny_nucleus_is_greedy(chat):
    greedy = chat.complete(ask("Hello"), max_new_tokens=15).text
    assert chat.complete(ask("Hello"), temperature=1.5, top_p=1e-6, max_new_tokens=15).text == greedy


def test_system_message_is_added_only_when_missing():
    config = GenerationConfig(system="Be brief.")
    assert config.with_system(ask("hi"))[0] == {"role": "system", "content": "Be brief."}
    own = [{"role": "system", "content": "mine"}, *ask("hi")]
    assert config.with_system(own) == own


def test_bad_settings_are_rejected():
    from pydantic import ValidationError

    for bad in ({"stop": ["a", "b", "c", "d", "e"]}, {"stop": [""]}, {"temperature": -1}, {"top_p": 0},
                {"max_new_tokens": 0}, {"temperature": float("nan")}):
        with pytest.raises(ValidationError):
            GenerationConfig(**bad)
