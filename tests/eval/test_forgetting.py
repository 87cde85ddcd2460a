"""Forgetting check: perplexity and multiple-choice scoring checked by hand, flagging on real PEFT models."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import write_jsonl
from peft import LoraConfig, get_peft_model

from inhouse.errors import InhouseError
from inhouse.eval.forgetting import (MultipleChoice, choice_logprobs, default_reference_text, forgetting_check,
                                     load_multiple_choice, multiple_choice_accuracy, perplexity, windows)
from inhouse.model import tiny

TEXT = "The bridge carries the road over the river, and the river carries boats to the sea. " * 3


@pytest.fixture(scope="module")
def tiny_model():
    model, tok = tiny.build(seed=0)
    return model.eval(), tok


def ids_of(tok, text):
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])


class Favouring(torch.nn.Module):
    """A fake causal LM that always predicts one byte: its preferences are known exactly."""

    def __init__(self, token, vocab=len(tiny.build_tokenizer()), strength=5.0):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.token, self.vocab, self.strength = token, vocab, strength

    @property
    def device(self):
        return self.anchor.device

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.token] = self.strength
        return SimpleNamespace(logits=logits)


# --- perplexity -------------------------------------------------------------------------------------------

def test_perplexity_of_text_within_one_window_is_exp_of_the_model_loss(tiny_model):
    model, tok = tiny_model
    ids = ids_of(tok, TEXT)
    assert ids.shape[1] < 512
    with torch.no_grad():
        expected = math.exp(model(ids, labels=ids).loss.item())
    for stride in (256, 60):  # every window starts at 0 here, so stride cannot change the result
        assert perplexity(model, tok, TEXT, window=512, stride=stride) == pytest.approx(expected, rel=1e-5)


def test_perplexity_with_stride_one_matches_a_token_by_token_brute_force(tiny_model):
    model, tok = tiny_model
    ids = ids_of(tok, TEXT[:60])[0]
    window = 16
    nll = 0.0
    with torch.no_grad():
        for j in range(1, len(ids)):  # token j given exactly the window - 1 tokens before it
            ctx = ids[max(0, j + 1 - window):j + 1][None]
            nll -= torch.log_softmax(model(ctx).logits[0, -2].float(), -1)[ids[j]].item()
    expected = math.exp(nll / (len(ids) - 1))
    assert perplexity(model, tok, TEXT[:60], window=window, stride=1, batch_size=7) == pytest.approx(expected, rel=1e-5)


def test_batching_does_not_change_perplexity(tiny_model):
    model, tok = tiny_model
    one = perplexity(model, tok, TEXT, window=40, stride=13, batch_size=1)
    assert perplexity(model, tok, TEXT, window=40, stride=13, batch_size=6) == pytest.approx(one, rel=1e-5)


@pytest.mark.parametrize("n,window,stride", [(2, 4, 1), (100, 16, 5), (100, 16, 15), (17, 16, 8), (1000, 512, 256)])
def test_windows_score_every_token_once_with_context(n, window, stride):
    scored = []
    for start, first, end in windows(n, window, stride):
        assert end - start <= window and start < first  # fits, and the first scored token has context
        assert first - start >= min(first, window - stride)
        scored += range(first, end)
    assert scored == list(range(1, n))


def test_bad_windows_and_short_text_are_refused(tiny_model):
    model, tok = tiny_model
    with pytest.raises(InhouseError, match="stride < window"):
        perplexity(model, tok, TEXT, window=64, stride=64)
    with pytest.raises(InhouseError, match="too short"):
        perplexity(model, tok, "x")


def test_bundled_reference_text_is_general_prose_and_measurable(tiny_model):
    text = default_reference_text()
    assert 6000 <= len(text.encode()) <= 8200 and "printing" in text and "bridge" in text
    model, tok = tiny_model
    ppl = perplexity(model, tok, text)
    assert math.isfinite(ppl) and ppl > 1


# --- multiple choice --------------------------------------------------------------------------------------

def test_choice_logprobs_match_a_direct_forward_pass(tiny_model):
    model, tok = tiny_model
    item = MultipleChoice("Which is a colour?", ("blue", "seventeen", "a"), 0)
    got = choice_logprobs(model, tok, item)
    with torch.no_grad():
        for choice, score in zip(item.choices, got):
            prompt = tok(f"Question: {item.question}\nAnswer:", add_special_tokens=False)["input_ids"]
            cont = tok(" " + choice, add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(model(torch.tensor([prompt + cont])).logits[0].float(), -1)
            expected = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(cont))
            assert score == pytest.approx(expected, abs=1e-4)


def test_accuracy_is_the_argmax_of_the_choice_scores(tiny_model):
    model, tok = tiny_model
    items = [MultipleChoice(q, ("yes", "no", "maybe"), a) for q, a in [("Is ice cold?", 0), ("Is fire cold?", 1),
                                                                       ("Do fish swim?", 0), ("Can pigs fly?", 2)]]
    picks = [max(range(3), key=choice_logprobs(model, tok, it).__getitem__) for it in items]
    expected = sum(p == it.answer for p, it in zip(picks, items)) / len(items)
    assert multiple_choice_accuracy(model, tok, items) == expected


def test_accuracy_follows_what_the_model_prefers():
    tok = tiny.build_tokenizer()
    items = [MultipleChoice("Pick one", ("AAA", "BBB"), 0), MultipleChoice("Again", ("BBB", "AAA"), 1),
             MultipleChoice("Trap", ("AAA", "BBB"), 1)]
    assert multiple_choice_accuracy(Favouring(ord("A")), tok, items) == pytest.approx(2 / 3)
    assert multiple_choice_accuracy(Favouring(ord("B")), tok, items) == pytest.approx(1 / 3)


def test_choices_are_scored_by_summed_not_mean_log_likelihood():
    # Every token costs log-probability, so the sum prefers the shorter answer even though
    # the longer one has the better per-token mean (the documented choice).
    tok = tiny.build_tokenizer()
    short_first = MultipleChoice("Pick", ("A", "AA"), 0)
    scores = choice_logprobs(Favouring(ord("A")), tok, short_first)
    assert scores[0] > scores[1] and scores[0] / 2 < scores[1] / 3
    assert multiple_choice_accuracy(Favouring(ord("A")), tok, [short_first]) == 1.0


def test_load_multiple_choice(tmp_path):
    rows = [{"question": "2+2?", "choices": ["3", "4"], "answer": 1},
            {"question": "Sky?", "choices": ["blue", "red"], "answer": 0}]
    path = write_jsonl(tmp_path / "mc.jsonl", rows)
    path.write_text(path.read_text() + "\n")  # blank lines are fine
    assert load_multiple_choice(path) == [MultipleChoice("2+2?", ("3", "4"), 1),
                                          MultipleChoice("Sky?", ("blue", "red"), 0)]


@pytest.mark.parametrize("line,problem", [
    ("{not json", "not valid JSON"),
    ('["a", "b"]', "not a JSON object"),
    (json.dumps({"choices": ["a", "b"], "answer": 0}), "'question'"),
    (json.dumps({"question": "q", "choices": ["only one"], "answer": 0}), "'choices'"),
    (json.dumps({"question": "q", "choices": ["a", ""], "answer": 0}), "'choices'"),
    (json.dumps({"question": "q", "choices": ["a", "b"], "answer": 2}), "'answer'"),
    (json.dumps({"question": "q", "choices": ["a", "b"], "answer": True}), "'answer'"),
    (json.dumps({"question": "q", "choices": ["a", "b"], "answer": "0"}), "'answer'"),
])
def test_bad_multiple_choice_lines_name_file_and_line(tmp_path, line, problem):
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"question": "ok?", "choices": ["a", "b"], "answer": 0}) + "\n" + line + "\n")
    with pytest.raises(InhouseError, match=problem) as err:
        load_multiple_choice(path)
    assert str(err.value).startswith(f"{path}:2: ") and "\n" not in str(err.value)


def test_missing_or_empty_multiple_choice_file(tmp_path):
    with pytest.raises(InhouseError, match="no such"):
        load_multiple_choice(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InhouseError, match="no questions"):
        load_multiple_choice(tmp_path / "empty.jsonl")


# --- the check --------------------------------------------------------------------------------------------

def lora(seed=0):
    model, tok = tiny.build(seed=seed)
    # lm_head included: behind the final norm, only the head can make a random model confidently wrong
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                        target_modules=["q_proj", "v_proj", "down_proj", "lm_head"])
    return get_peft_model(model, config), tok


REFERENCE = default_reference_text()[:600]
MC = [MultipleChoice("Is ice cold?", ("yes", "no"), 0), MultipleChoice("Is fire cold?", ("yes", "no"), 1)]


def test_an_untrained_adapter_changes_nothing_and_is_not_flagged():
    model, tok = lora()  # LoRA starts with B = 0: the adapter is exactly a no-op
    report = forgetting_check(model, tok, REFERENCE, MC, window=64, stride=32)
    assert report.ppl_after == pytest.approx(report.ppl_before, rel=1e-6)
    assert abs(report.relative_change) < 1e-6 and report.mc_after == report.mc_before
    assert not report.flagged and report.reasons == []


def wrecked():
    """A LoRA adapter with large random weights: the model's predictions fall apart."""
    model, tok = lora()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 1.0, generator=torch.Generator().manual_seed(len(name)))
    return model, tok


def test_a_wrecked_adapter_is_flagged_and_its_base_measured_with_the_adapter_off():
    model, tok = wrecked()
    base_ppl = perplexity(tiny.build(seed=0)[0], tok, REFERENCE, window=64, stride=32)
    report = forgetting_check(model, tok, REFERENCE, window=64, stride=32)
    assert report.ppl_before == pytest.approx(base_ppl, rel=1e-5)
    assert report.ppl_after > 2 * report.ppl_before and report.relative_change > 1
    assert report.flagged and len(report.reasons) == 1 and "perplexity" in report.reasons[0]
    assert report.mc_before is None and report.mc_after is None
    # the adapter is back on afterwards
    assert perplexity(model, tok, REFERENCE, window=64, stride=32) == pytest.approx(report.ppl_after, rel=1e-6)


def test_the_threshold_decides():
    model, tok = wrecked()
    change = forgetting_check(model, tok, REFERENCE, window=64, stride=32).relative_change
    assert not forgetting_check(model, tok, REFERENCE, window=64, stride=32, threshold=change * 1.01).flagged
    assert forgetting_check(model, tok, REFERENCE, window=64, stride=32, threshold=change * 0.99).flagged
    with pytest.raises(InhouseError, match="threshold"):
        forgetting_check(model, tok, REFERENCE, threshold=-0.1)


def test_full_fine_tune_compares_against_a_given_base_and_flags_lost_accuracy():
    tok = tiny.build_tokenizer()
    items = [MultipleChoice("Pick", ("AAA", "BBB"), 0), MultipleChoice("Again", ("BBB", "AAA"), 1)]
    neutral = "CCCC CCCC CCCC"  # both fakes are equally surprised by it
    report = forgetting_check(Favouring(ord("B")), tok, neutral, items, base_model=Favouring(ord("A")),
                              window=8, stride=4)
    assert (report.mc_before, report.mc_after) == (1.0, 0.0)
    assert report.relative_change == pytest.approx(0.0)
    assert report.flagged and len(report.reasons) == 1 and "accuracy fell" in report.reasons[0]


def test_full_fine_tune_without_a_base_is_refused():
    model, tok = tiny.build(seed=0)
    with pytest.raises(InhouseError, match="base_model"):
        forgetting_check(model, tok, REFERENCE)
