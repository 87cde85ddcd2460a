"""Evaluation metrics against hand-computed values and the reference implementations."""

import json
import math

import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer

from inhouse.data.schema import load_schema
from inhouse.errors import InhouseError
from inhouse.eval.metrics import (
    DEFAULT_REFUSALS,
    bleu,
    exact_match,
    finalize_token_metrics,
    json_metrics,
    mean_length,
    normalize_answer,
    per_example,
    refusal_rate,
    rouge_l,
    score_answers,
    token_f1,
    token_metrics,
)

LN2 = math.log(2)

# --- EM / F1 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        ("An apple, a day.", "apple day"),
        ("the theory of THE anthem", "theory of anthem"),  # only whole-word articles go
        ("  tabs\tand\nnewlines ", "tabs and newlines"),
        ("well-known (1,000)", "wellknown 1000"),  # punctuation removed, not spaced
        ("", ""),
    ],
)
def test_normalize_answer(text, want):
    assert normalize_answer(text) == want


@pytest.mark.parametrize(
    ("pred", "ref", "want"),
    [
        ("The Eiffel Tower.", "eiffel tower", 1.0),
        ("Eiffel Tower", "the tower of Eiffel", 0.0),
        ("", "", 1.0),
        ("the", "", 1.0),  # both normalise to nothing
        ("", "Paris", 0.0),
        ("well-known", "well known", 0.0),
    ],
)
def test_exact_match(pred, ref, want):
    assert exact_match(pred, ref) == want


@pytest.mark.parametrize(
    ("pred", "ref", "want"),
    [
        ("Paris", "paris.", 1.0),
        ("the cat sat", "a cat sat down", 0.8),  # P=2/2, R=2/3
        ("cat cat cat", "cat dog", 0.4),  # one shared cat: P=1/3, R=1/2
        ("cat cat", "cat cat dog", 0.8),  # both cats count: P=2/2, R=2/3
        ("dog", "cat", 0.0),
        ("", "", 1.0),
        ("An", "the", 1.0),
        ("", "cat", 0.0),
        ("cat", "", 0.0),
    ],
)
def test_token_f1(pred, ref, want):
    assert token_f1(pred, ref) == pytest.approx(want)


# --- ROUGE-L ---------------------------------------------------------------

PREDS = [
    "The cat sat on the mat.",
    "Oslo is the capital of Norway, a Nordic country.",
    "He was running to the stations quickly",
    "",
    "completely unrelated words",
]
REFS = [
    "The cat is on the mat.",
    "The capital of Norway is Oslo.",
    "He runs to the station.",
    "Something was expected here.",
    "the answer is 42",
]


def test_rouge_l_hand_computed_lcs():
    # LCS("the cat is on the mat", "the cat sat on the mat") = the cat on the mat: 5 of 6 each side.
    assert rouge_l(["the cat sat on the mat"], ["the cat is on the mat"]) == pytest.approx(5 / 6)
    # LCS(one three five six | one two three four five) = 3: P=3/4, R=3/5, F=2/3.
    assert rouge_l(["one three five six"], ["one two three four five"]) == pytest.approx(2 / 3)
    assert rouge_l(
        ["the cat sat on the mat", "one three five six"], ["the cat is on the mat", "one two three four five"]
    ) == pytest.approx((5 / 6 + 2 / 3) / 2)
    assert rouge_l(["cats running"], ["cat run"]) == pytest.approx(1.0)  # stemmer on


def test_rouge_l_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    want = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(PREDS, REFS)]
    assert rouge_l(PREDS, REFS) == pytest.approx(sum(want) / len(want))
    assert [per_example(p, r)["rougeL"] for p, r in zip(PREDS, REFS)] == pytest.approx(want)


def test_rouge_l_empty():
    assert rouge_l([], []) is None
    assert rouge_l([""], ["cat"]) == 0.0
    assert rouge_l(["", "x"], ["", "y"]) == 0.0  # rouge-score's number for empty text


# --- BLEU ------------------------------------------------------------------


def test_bleu_matches_sacrebleu():
    assert bleu(PREDS, REFS) == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score)


def test_bleu_hand_computed():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)
    assert bleu(["w x y z"], ["a b c d"]) == 0.0
    # Clipped n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty.
    got = bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert got == pytest.approx(100 * (1 / 12) ** 0.25)


def test_bleu_empty():
    assert bleu([], []) is None
    assert bleu([""], ["the cat sat on the mat"]) == 0.0
    assert bleu(["", ""], ["", ""]) == 0.0


def test_lengths_must_match():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_l(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        score_answers(["a"], [])


# --- JSON ------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
}


def _ref(name, age, city, zip_, tags):
    return json.dumps({"name": name, "age": age, "address": {"city": city, "zip": zip_}, "tags": tags})


JSON_REFS = [
    _ref("Ann", 30, "Oslo", "0150", ["a", "b"]),
    _ref("Bob", 41, "Bergen", "5003", ["a", "b"]),
    _ref("Cy", 52, "Trondheim", "7010", []),
    _ref("Di", 25, "Oslo", "0150", []),
]
JSON_PREDS = [
    _ref("Ann", 30, "Oslo", "0150", ["a", "b"]),  # all right
    # fenced; age a string (schema fails), zip missing, list order differs, extra key ignored
    '```json\n{"name": "Bob", "age": "41", "address": {"city": "Bergen"}, "tags": ["b", "a"], "x": 1}\n```',
    'Sure! {"name": "Cy", "age": 52}',  # prose around it: not JSON
    '{"name": "Di", "age": 25.0, "address": {"city": "Oslo", "zip": "0151"}, "tags": []}',  # 25.0 == 25
]


@pytest.fixture
def validator(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    return load_schema(path)


def test_json_metrics_hand_computed(validator):
    got = json_metrics(JSON_PREDS, JSON_REFS, validator)
    assert got["n"] == 4
    assert got["parse_rate"] == 0.75
    assert got["schema_rate"] == 0.5
    assert got["field_accuracy"] == {
        "name": 0.75,
        "age": 0.5,
        "address.city": 0.75,
        "address.zip": 0.25,
        "tags": 0.5,
    }


def test_json_metrics_without_validator_and_plain_refs():
    got = json_metrics(['{"a": true}', "[1]", "no"], ['{"a": 1}', "plain text", "[1, 2]"])
    assert got["schema_rate"] is None
    assert got["parse_rate"] == pytest.approx(2 / 3)
    assert got["field_accuracy"] == {"a": 0.0}  # true is not 1; non-object refs skipped


def test_json_metrics_nested_and_empty_objects():
    refs = ['{"a": {"b": {"c": 1}, "d": {}}, "e": [{"f": 1}]}'] * 2
    preds = ['{"a": {"b": {"c": 1.0}, "d": {}}, "e": [{"f": 1}]}', '{"a": {"b": 1, "d": {"x": 1}}, "e": []}']
    assert json_metrics(preds, refs)["field_accuracy"] == {"a.b.c": 0.5, "a.d": 0.5, "e": 0.5}


def test_json_metrics_empty(validator):
    assert json_metrics([], [], validator) == {"parse_rate": None, "schema_rate": None, "field_accuracy": {}, "n": 0}


def test_json_metrics_unresolvable_ref_is_user_error(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"$ref": "https://example.invalid/x.json"}))
    with pytest.raises(InhouseError, match="cannot be resolved"):
        json_metrics(['{"a": 1}'], ['{"a": 1}'], load_schema(path))


# --- Refusals, length --------------------------------------------------------


def test_refusal_rate():
    preds = ["The answer is NOT  in the\ncontext.", "I don\u2019t know.", "Paris", "I cannot find the answer here."]
    assert refusal_rate(preds) == 0.75
    assert refusal_rate(preds, DEFAULT_REFUSALS) == 0.75
    assert refusal_rate(preds, ("PARIS",)) == 0.25
    assert refusal_rate(preds, "paris") == 0.25  # a single string is one phrase
    assert refusal_rate(preds, ["", "  "]) == 0.0
    assert refusal_rate([]) is None


def test_mean_length():
    assert mean_length(["a b c", "", "d  e\n"]) == pytest.approx(5 / 3)
    assert mean_length(["abc", "de"], count=len) == 2.5
    assert mean_length([]) is None


# --- All at once -------------------------------------------------------------


def test_score_answers_plain():
    preds, refs = ["Paris", "the cat", "not in the context"], ["Paris.", "a cat sat", "Oslo"]
    got = score_answers(preds, refs)
    assert set(got) == {"n", "exact_match", "f1", "rouge_l", "bleu", "mean_length"}
    assert got["n"] == 3
    assert got["exact_match"] == pytest.approx(1 / 3)
    assert got["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)  # "cat" vs "cat sat": P=1, R=1/2
    assert got["rouge_l"] == pytest.approx(rouge_l(preds, refs))
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert got["mean_length"] == pytest.approx(7 / 3)  # 1 + 2 + 4 words
    assert score_answers(preds, refs, refusal_phrases=DEFAULT_REFUSALS)["refusal_rate"] == pytest.approx(1 / 3)


def test_score_answers_json_only_over_structured_refs(validator):
    preds, refs = [*JSON_PREDS, "Paris", "42"], [*JSON_REFS, "Paris", "42"]  # "42" is a plain answer
    got = score_answers(preds, refs, validator=validator)
    assert got["json"] == json_metrics(JSON_PREDS, JSON_REFS, validator)
    assert "json" not in score_answers(["1"], ["1"])
    assert score_answers(["{}", "x"], ["a", "b"], validator=validator)["json"]["schema_rate"] == 0.0


def test_per_example():
    assert per_example("The cat sat", "the cat sat.") == {"em": 1.0, "f1": 1.0, "rougeL": 1.0}
    got = per_example("cat cat", "cat cat dog")
    assert got["em"] == 0.0 and got["f1"] == pytest.approx(0.8) and got["rougeL"] == pytest.approx(0.8)


def test_empty_inputs_are_none_not_zero():
    got = score_answers([], [])
    assert got == {"n": 0, "exact_match": None, "f1": None, "rouge_l": None, "bleu": None, "mean_length": None}


# --- Token metrics -----------------------------------------------------------


def _logits():
    """Vocab 3, T 3. Position 0: softmax (1/4, 1/2, 1/4); position 1: (1/4, 1/4, 1/2); 2 is never scored."""
    return torch.tensor([[[0.0, LN2, 0.0], [0.0, 0.0, LN2], [5.0, 0.0, 0.0]]])


def test_token_metrics_hand_computed():
    # Targets are labels[1:] = (1, 0): -ln(1/2) right, -ln(1/4) wrong (argmax is 2).
    sums = token_metrics(_logits(), torch.tensor([[2, 1, 0]]))
    assert sums["tokens"] == 2 and sums["correct"] == 1
    assert sums["nll"] == pytest.approx(3 * LN2, rel=1e-6)
    got = finalize_token_metrics(sums)
    assert got["loss"] == pytest.approx(1.5 * LN2, rel=1e-6)
    assert got["perplexity"] == pytest.approx(2**1.5, rel=1e-6)
    assert got["perplexity"] == pytest.approx(math.exp(got["loss"]))
    assert got["token_accuracy"] == 0.5


def test_token_metrics_ignore_index_and_accumulation():
    only_first = token_metrics(_logits(), torch.tensor([[-100, 1, -100]]))
    assert only_first == {"nll": pytest.approx(LN2, rel=1e-6), "tokens": 1, "correct": 1}
    assert finalize_token_metrics(only_first)["perplexity"] == pytest.approx(2.0, rel=1e-6)
    # Two batches add up per token: (ln 2 + 3 ln 2) / 3 tokens, 2 of 3 right.
    two = [only_first, token_metrics(_logits(), torch.tensor([[2, 1, 0]]))]
    got = finalize_token_metrics(two)
    assert got["loss"] == pytest.approx(4 * LN2 / 3, rel=1e-6)
    assert got["token_accuracy"] == pytest.approx(2 / 3)
    # One batch of both rows is the same.
    batch = token_metrics(torch.cat([_logits(), _logits()]), torch.tensor([[-100, 1, -100], [2, 1, 0]]))
    assert finalize_token_metrics(batch) == pytest.approx(got)


def test_token_metrics_matches_causal_lm_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    labels = torch.randint(0, 11, (2, 7))
    labels[0, :3] = -100
    labels[1, 5:] = -100
    want = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    got = finalize_token_metrics(token_metrics(logits, labels))
    assert got["loss"] == pytest.approx(want.item(), rel=1e-5)
    assert token_metrics(logits.bfloat16(), labels)["tokens"] == 8  # 4 + 4 targets after the shift


def test_finalize_edge_cases():
    assert finalize_token_metrics({"nll": 0.0, "tokens": 0, "correct": 0}) == {
        "loss": None,
        "perplexity": None,
        "token_accuracy": None,
    }
    assert finalize_token_metrics([]) == {"loss": None, "perplexity": None, "token_accuracy": None}
    assert finalize_token_metrics(None) == {"loss": None, "perplexity": None, "token_accuracy": None}
    assert finalize_token_metrics({"nll": 1e6, "tokens": 1, "correct": 0})["perplexity"] == math.inf


def test_token_metrics_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected logits"):
        token_metrics(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="expected logits"):
        token_metrics(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long))
