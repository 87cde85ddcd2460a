"""A model trained on `data raft` output quotes the oracle passage of questions about documents it
never saw more often than the base model: the whole path (index, data raft, train, the prompt `ask`
builds) on builtin:tiny. Slow: 400 training steps of 16 examples on the real prompt (about 100 s on a
2-core CPU).

What is measured: for each held-out question, the probability the model gives to the answer quoting
the oracle's code, against the same answer quoting the code of another held-out document (9 rivals):
the share of sampled answers of that form that quote the oracle (chance 0.10). Greedy answers are
counted too and printed (the strict count: a `[n] "..."` quote line found word for word in the oracle
chunk, holding its code). Measured when this test was written: share 0.33 tuned, 0.12 base; greedy
0.00 for both.

Why batches of 16: whether copying emerges in so few steps depends on the CPU's rounding. With batches
of 8 (400 steps), the tuned share ranged 0.22-0.52 over recipe seeds 42, 0, 1 and 2 on AVX-512 kernels and
on AVX2 ones (ATEN_CPU_CAPABILITY=avx2), and failed the bar in CI once; 800 such steps still gave 0.25 for
seed 42 on AVX2. With batches of 16 (400 steps, the same compute) the eight runs gave 0.37-0.62; the base
stays at 0.12.

The toy is shaped so that copying can be learnt at all in CPU time, and no further:

- each "code" document holds a two-character code; the held-out documents' codes occur in no training
  document (asserted), so preferring the oracle's code can only come from reading the prompt;
- two thirds of the knowledge base are "filler" documents without a code, and each example shows the
  oracle beside one random distractor, so the distractor is usually easy to tell apart;
- full fine-tuning, not LoRA: on builtin:tiny's frozen random weights a LoRA adapter learnt the answer
  format but no copying within 1000 steps.

Measured while writing it, to show where the limits are: greedy answers quoting the oracle's code
appeared only after about 1000 full fine-tuning steps on 16,000 distinct documents (too slow for a
test, and there the codes also occurred in training); with such codes, greedy "successes" come sooner
but are partly the model completing codes it has memorised, which is why the held-out codes here are
unseen.
"""

from __future__ import annotations

import random
import time

import pytest
from helpers import write_jsonl

from inhouse import recipe as recipe_mod
from inhouse.adapters.load import load_chat_model
from inhouse.data.qa import QAItem
from inhouse.data.raft import Located, RaftConfig, build_raft, heldout_documents, write_raft
from inhouse.events import Events
from inhouse.generation import GenerationConfig
from inhouse.rag.answer import find_quote, quoted_spans
from inhouse.rag.chunk import Chunk
from inhouse.train.sft import train

LETTERS = "BCEFGHJKLMNOPRTUVWXZ"  # capitals that occur nowhere else in the prompt (not Y, D, A, I, S, Q)
DIGITS = "0456789"  # 1-3 are in the prompt's [1] [2] [3]
HELDOUT = 0.12
STEPS = 400


def toy_kb(root, n_code: int = 500, n_filler: int = 1000, seed: int = 0) -> tuple[object, object, set[str]]:
    """`n_code` documents with a code, `n_filler` without; one question per code document. The held-out
    documents (known in advance: the split is `heldout_documents`, seeded) get codes of their own, each
    once; training documents share the other codes."""
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < n_code + n_filler:
        names.add("".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3)))
    names_ = sorted(names)
    rng.shuffle(names_)
    coded, fillers = names_[:n_code], names_[n_code:]
    held = heldout_documents([Located(QAItem("q", "a", "", f"{n}.txt"), Chunk(f"{n}.txt", n, "", 0, 0, "", ""))
                              for n in coded], HELDOUT, 0)
    codes = [a + b for a in LETTERS for b in DIGITS]
    rng.shuffle(codes)
    exam, common = codes[:len(held)], codes[len(held):]
    docs = root / "docs"
    docs.mkdir()
    questions = []
    for name in coded:
        path = f"{name}.txt"
        code = exam.pop() if path in held else rng.choice(common)
        (docs / path).write_text(f"{name} code {code}\n", encoding="utf-8")
        questions.append({"question": f"Code of {name}?", "answer": f"{code}.", "doc_path": path,
                          "quote": f"code {code}"})
    for name in fillers:
        colour = rng.choice(["blue", "red", "green", "grey"])
        (docs / f"{name}.txt").write_text(f"{name} is {colour}\n", encoding="utf-8")
    return docs, write_jsonl(root / "qa.jsonl", questions), held


def quotes_oracle(answer: str, example) -> bool:
    """A quote line of the answer occurs word for word in the oracle chunk and holds the oracle's code."""
    oracle = example.passages[example.oracle - 1]
    return any(code_of(example) in q and find_quote(oracle.text, q) for _, q in quoted_spans(answer))


def code_of(example) -> str:
    return example.item.answer.rstrip(".")


def greedy_rate(model, examples) -> float:
    answers = [c.text for c in model.complete_batch([list(e.messages[:2]) for e in examples], max_new_tokens=24)]
    return sum(quotes_oracle(a, e) for a, e in zip(answers, examples)) / len(examples)


def quote_share(model, example, rivals: list[str]) -> float:
    """How much of the probability the model gives to this answer, quoting a code, goes to the oracle's code
    rather than to `rivals` (codes of other held-out documents): the share of sampled answers of this form
    that quote the oracle. Chance is 1 / (1 + len(rivals))."""
    import torch

    target = example.messages[-1]["content"]
    prompt = model.prompt_ids(list(example.messages[:2]), GenerationConfig())
    rows = [prompt + model.tokenizer(target.replace(code_of(example), c), add_special_tokens=False)["input_ids"]
            for c in [code_of(example), *rivals]]
    ids = torch.tensor(rows, device=model.model.device)
    with torch.no_grad():
        logp = torch.log_softmax(model.model(input_ids=ids).logits[:, len(prompt) - 1:-1].float(), -1)
    scores = logp.gather(-1, ids[:, len(prompt):, None]).sum((1, 2))
    return torch.softmax(scores, 0)[0].item()


def mean_share(model, examples, n_rivals: int = 9) -> float:
    codes = [code_of(e) for e in examples]
    rng = random.Random(0)
    shares = [quote_share(model, e, rng.sample([c for c in codes if c != code_of(e)], n_rivals)) for e in examples]
    return sum(shares) / len(shares)


@pytest.mark.slow
def test_a_raft_trained_model_quotes_the_heldout_oracle_and_the_base_does_not(tmp_path, tiny_dir, home):
    from inhouse.rag.index import index

    clock = time.perf_counter()
    docs, qa, held = toy_kb(tmp_path)
    index(docs, tmp_path / "kb", progress=False)
    # One distractor, random: usually a document without a code (two thirds of the knowledge base)
    data = build_raft(RaftConfig(kb=str(tmp_path / "kb"), questions=qa, distractors=1, random_distractors=2,
                                 heldout_fraction=HELDOUT))
    folder = write_raft(data, tmp_path / "raft")
    assert set(data.report.documents["heldout"]) == held
    heldout = [e for e in data.validation if e.oracle]
    trained_text = " ".join(p.text for e in data.train for p in e.passages)
    assert len(heldout) >= 40 and not any(code_of(e) in trained_text for e in heldout)
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=folder / "train.jsonl", validation_fraction=0,
                              method="full", max_steps=STEPS, batch_size=16, learning_rate=3e-3,
                              lr_scheduler="constant", max_seq_length=1024, output_name="raft-tiny")
    train(recipe, events=Events())
    tuned, base = load_chat_model("raft-tiny"), load_chat_model(str(tiny_dir))
    shares = mean_share(tuned, heldout), mean_share(base, heldout)
    greedy = greedy_rate(tuned, heldout), greedy_rate(base, heldout)
    print(f"held-out oracle quoted, share of answers (chance 0.10): tuned {shares[0]:.2f}, base {shares[1]:.2f}; "
          f"greedy: tuned {greedy[0]:.2f}, base {greedy[1]:.2f}; {len(heldout)} questions, "
          f"{time.perf_counter() - clock:.0f} s")
    assert greedy[1] == 0.0
    assert shares[0] >= 0.25 and shares[0] >= 2 * shares[1]
