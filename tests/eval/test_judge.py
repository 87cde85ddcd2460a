"""LLM-as-judge: strict verdict parsing, honest counting, and the real model path."""

import itertools

import pytest

from inhouse.eval.judge import (CRITERIA, RUBRIC, Judgement, ModelJudge, judge_all, judgement, load_judge,
                                parse_verdict, rubric_messages)
from inhouse.model import tiny
from inhouse.model.generate import ChatModel
from inhouse.model.template import stop_token_ids


class FakeJudge:
    """Deterministic judge: cycles through canned raw verdicts and records what it was asked."""

    def __init__(self, responses):
        self.responses = itertools.cycle(responses)
        self.asked = []

    def judge(self, question, answer, context=None, reference=None) -> Judgement:
        self.asked.append(rubric_messages(question, answer, context, reference))
        return judgement(next(self.responses))


SCORES = {"relevance": 4, "grounding": 3, "hallucination": 5}

GOOD = {
    "json": '{"relevance": 4, "grounding": 3, "hallucination": 5, "reason": "Mostly on topic."}',
    "fenced": '```json\n{"relevance": 4, "grounding": 3, "hallucination": 5, "reason": "ok"}\n```',
    "prose around json": 'Here is my verdict:\n{"relevance": 4, "grounding": 3, "hallucination": 5}\nHope it helps.',
    "string and float values": '{"Relevance": "4/5", "grounding": 3.0, "hallucination": "5"}',
    "nested scores": '{"scores": {"relevance": 4, "grounding": 3, "hallucination": 5}, "reason": "r"}',
    "key variants": '{"relevance_score": 4, "Groundedness": 3, "No hallucination": 5}',
    "lines": "Relevance: 4/5\nGrounding: 3/5\nHallucination: 5/5\nReason: fine",
    "markdown lines": "- **Relevance**: 4\n- **Grounding** - 3\n- **Hallucination score** = 5 out of 5",
    "json cut off": '{"relevance": 4, "grounding": 3, "hallucination": 5, "reason": "The answer is mostly',
    "lines in prose": "I read it carefully.\nrelevance: 4\ngrounding: 3\nhallucination: 5\nOverall decent.",
}

BAD = {
    "out of range": '{"relevance": 7, "grounding": 3, "hallucination": 5}',
    "zero": '{"relevance": 0, "grounding": 3, "hallucination": 5}',
    "missing criterion": '{"relevance": 4, "grounding": 3, "reason": "forgot one"}',
    "fractional": '{"relevance": 4.5, "grounding": 3, "hallucination": 5}',
    "boolean": '{"relevance": true, "grounding": 3, "hallucination": 5}',
    "words not numbers": '{"relevance": "high", "grounding": 3, "hallucination": 5}',
    "other scale": "Relevance: 8/10\nGrounding: 3/5\nHallucination: 5/5",
    "lines out of range": "Relevance: 7\nGrounding: 3\nHallucination: 5",
    "lines missing": "Relevance: 4\nGrounding: 3",
    "conflicting lines": "Relevance: 4\nGrounding: 3\nHallucination: 5\nRelevance: 2",
    "conflicting json": '{"relevance": 4, "grounding": 3, "hallucination": 5} or maybe '
                        '{"relevance": 2, "grounding": 3, "hallucination": 5}',
    "bad json wins over lines": '{"relevance": 9, "grounding": 3, "hallucination": 5}\n'
                                "Relevance: 4\nGrounding: 3\nHallucination: 5",
    "rubric echoed": '{"relevance": <1-5>, "grounding": <1-5>, "hallucination": <1-5>, "reason": "<one sentence>"}',
    "garbage": "ÿ\x03kq<|im_start|>zz 4 5 3 !!",
    "empty": "",
    "no numbers": "The answer is relevant, grounded and has no hallucinations.",
}


@pytest.mark.parametrize("text", GOOD.values(), ids=GOOD.keys())
def test_parse_verdict_accepts_common_formats(text):
    verdict = parse_verdict(text)
    assert verdict is not None and verdict.scores == SCORES
    assert verdict.raw == text


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_parse_verdict_never_guesses(text):
    assert parse_verdict(text) is None


def test_reason_is_kept():
    assert parse_verdict(GOOD["json"]).reason == "Mostly on topic."
    assert parse_verdict(GOOD["lines"]).reason == "fine"


def test_rubric_carries_question_answer_context_and_reference():
    messages = rubric_messages("Q-text?", "A-text.", context="C-text", reference="R-text")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == RUBRIC["system"]
    user = messages[1]["content"]
    assert all(s in user for s in ("Q-text?", "A-text.", "C-text", "R-text"))
    assert all(c in RUBRIC["system"] for c in CRITERIA) and "1 to 5" in RUBRIC["system"]
    bare = rubric_messages("Q?", "A.")[1]["content"]
    assert bare.count("(none given)") == 2


def test_rubric_survives_braces_in_the_inputs():
    user = rubric_messages("What is {x}?", '{"relevance": 5}')[1]["content"]
    assert "What is {x}?" in user and '{"relevance": 5}' in user


def test_judge_all_counts_unparsed_and_averages_only_parsed():
    fake = FakeJudge([GOOD["json"], BAD["out of range"], '{"relevance": 2, "grounding": 5, "hallucination": 1}',
                      BAD["garbage"]])
    items = [{"question": f"q{i}", "answer": f"a{i}", "context": "ctx" if i % 2 else None} for i in range(4)]
    summary = judge_all(fake, items)
    assert (summary.n, summary.n_unparsed) == (4, 2)
    assert summary.means == {"relevance": 3.0, "grounding": 4.0, "hallucination": 3.0}
    assert [j.parsed for j in summary.judgements] == [True, False, True, False]
    assert summary.judgements[1].scores is None and summary.judgements[1].raw == BAD["out of range"]
    assert "ctx" in fake.asked[1][1]["content"] and "(none given)" in fake.asked[0][1]["content"]


def test_judge_all_with_nothing_parsed_reports_no_means():
    summary = judge_all(FakeJudge([BAD["garbage"]]), [{"question": "q", "answer": "a"}] * 3)
    assert summary.n_unparsed == 3 and summary.means == {}


def test_model_judge_on_a_random_model_counts_garbage_as_unparsed():
    model, tok = tiny.build(seed=0)
    chat = ChatModel(model.eval(), tok, stop_token_ids(tok, model.generation_config.eos_token_id), "tiny")
    judge = ModelJudge(chat, max_new_tokens=12)
    result = judge.judge("What is the capital of France?", "Paris.", context="France's capital is Paris.")
    expected = chat.reply(rubric_messages("What is the capital of France?", "Paris.",
                                          "France's capital is Paris."), max_new_tokens=12)
    assert result.raw == expected  # greedy: the raw judge text is exactly what the model said
    assert not result.parsed and result.scores is None
    summary = judge_all(judge, [{"question": "2+2?", "answer": "4"}, {"question": "Sky?", "answer": "Blue"}])
    assert (summary.n, summary.n_unparsed) == (2, 2)


def test_load_judge_loads_any_model(home):
    judge = load_judge("builtin:tiny", max_new_tokens=4)
    assert isinstance(judge, ModelJudge) and judge.max_new_tokens == 4
    assert judge.judge("q?", "a").parsed is False
