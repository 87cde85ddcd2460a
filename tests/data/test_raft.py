"""RAFT data on a small synthetic knowledge base indexed with the real embedder: the mix, the prompt `ask`
builds, quotes that occur in their oracle chunk, the split by document, and every dropped question."""

from __future__ import annotations

import json
from dataclasses import asdict, fields

import pytest
from helpers import run_cli, write_jsonl

from inhouse.data.formats import load_dataset
from inhouse.data.qa import load_qa
from inhouse.data.raft import (RaftConfig, build_raft, generate_questions, heldout_documents, parse_generated,
                               write_raft)
from inhouse.errors import InhouseError
from inhouse.events import Events, Stopped
from inhouse.rag.answer import REFUSAL, build_messages, content_words, find_quote, ground, quoted_answer, quoted_spans
from inhouse.rag.chunk import Hit
from inhouse.rag.config import SearchConfig
from inhouse.rag.search import search
from inhouse.rag.store import open_kb

PUMPS = [("Zorvan", "Kestrel Bay"), ("Petrel", "Port Ulme"), ("Quillon", "Dravik"), ("Marrow", "Sorrento"),
         ("Oberon", "Halden"), ("Vanta", "Ostrava"), ("Lumen", "Maribor"), ("Arbor", "Tromso"),
         ("Cobalt", "Lisbon"), ("Delta", "Aarhus")]
# The seal fact is written twice, in two sections: two chunks hold the quote (one starting it in lower case).
MANUAL = ("# Service manual\n\n## Seals\n\nThe Hydra seal is replaced every 14 months.\n\n"
          "## Reminders\n\nRemember: the Hydra seal is replaced every 14 months. Keep the logbook signed.\n")


def pump_doc(i: int, name: str, city: str) -> str:
    return (f"# The {name} pump\n\nThe {name} pump runs at {1000 + 137 * i} rpm. Its filter is changed every "
            f"{3 + i} weeks. It is made in {city}.\n")


def pump_questions(i: int, name: str, city: str) -> list[dict]:
    path = f"{name.lower()}.md"
    return [{"question": f"How fast does the {name} pump run?", "answer": f"{1000 + 137 * i} rpm.", "doc_path": path},
            {"question": f"How often is the {name} filter changed?", "answer": f"Every {3 + i} weeks.",
             "doc_path": path, "quote": f"Its filter is changed every {3 + i} weeks."},
            {"question": f"Where is the {name} pump made?", "answer": f"In {city}.", "doc_path": path}]


QUESTIONS = [q for i, (name, city) in enumerate(PUMPS) for q in pump_questions(i, name, city)] + [
    {"question": "How often is the Hydra seal replaced?", "answer": "Every 14 months.", "doc_path": "manual.md",
     "quote": "The Hydra seal is replaced every 14 months."},
    {"question": "Who won the 1998 football cup?", "answerable": False}]


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    from inhouse.rag.index import index

    root = tmp_path_factory.mktemp("raft")
    docs = root / "docs"
    docs.mkdir()
    for i, (name, city) in enumerate(PUMPS):
        (docs / f"{name.lower()}.md").write_text(pump_doc(i, name, city), encoding="utf-8")
    (docs / "manual.md").write_text(MANUAL, encoding="utf-8")
    index(docs, root / "kb", progress=False)
    return root / "kb"


@pytest.fixture(scope="module")
def qa(kb):
    return write_jsonl(kb.parent / "qa.jsonl", QUESTIONS)


@pytest.fixture(scope="module")
def built(kb, qa):
    return build_raft(RaftConfig(kb=str(kb), questions=qa))


def oracle_of(example):
    return example.passages[example.oracle - 1]


def test_the_mix_is_exact_and_every_example_shows_the_same_number_of_sources(built):
    config = RaftConfig(kb="x", questions="q")
    for split in (built.train, built.validation):
        answerable = [e for e in split if e.item.answerable]
        assert sum(e.oracle is not None for e in split) == round(config.oracle_fraction * len(answerable))
        assert {len(e.passages) for e in split} == {config.distractors + 1}
        assert all(len({p.chunk_id for p in e.passages}) == len(e.passages) for e in split)
    report = built.report
    assert report.splits["train"]["with_oracle"] + report.splits["train"]["without_oracle"] == len(
        [e for e in built.train if e.item.answerable])
    assert report.distractors["train"] == {3: report.splits["train"]["with_oracle"],
                                           4: len(built.train) - report.splits["train"]["with_oracle"]}
    # the oracle sits at every position, not always at one a model could learn
    assert len({e.oracle for e in built.train if e.oracle}) == 4


def test_no_heldout_document_appears_in_training(built):
    held = set(built.report.documents["heldout"])
    assert len(held) == round(0.2 * 11)
    assert not {p.doc_path for e in built.train for p in e.passages} & held
    assert {oracle_of(e).doc_path for e in built.validation if e.oracle} <= held
    assert {q.doc_path for q in built.heldout if q.answerable} <= held
    asked = {q["question"] for q in QUESTIONS if q.get("doc_path") in held}
    assert asked <= {q.question for q in built.heldout}
    assert asked == {e.item.question for e in built.validation if e.item.answerable}


def test_every_target_quotes_its_oracle_word_for_word_and_refusals_are_exact(built):
    for e in built.train + built.validation:
        answer = e.messages[-1]["content"]
        if e.oracle is None:
            assert answer == REFUSAL
            continue
        oracle = oracle_of(e)
        assert oracle.doc_path == e.item.doc_path
        [(n, quote)] = quoted_spans(answer)
        assert n == e.oracle and find_quote(oracle.text, quote)
        assert f"[{n}]" in answer.split("\n")[0]
        if e.item.quote:
            assert quote == e.item.quote
        else:  # the one sentence the answer rests on
            assert content_words(e.item.answer) <= content_words(quote) and quote.count(".") == 1


def test_a_distractor_never_holds_the_answer(built, kb):
    """Not the oracle, nor another chunk with the quote: the manual says the seal fact in two chunks."""
    assert open_kb(kb).count({"doc_path": "manual.md"}) >= 2  # else this test would mean nothing
    for e in built.train + built.validation:
        if e.item.answerable:
            others = [p for n, p in enumerate(e.passages, 1) if n != e.oracle]
            assert e.quote and all(find_quote(p.text.lower(), e.quote.lower()) is None for p in others)
            assert e.item.doc_path != "manual.md" or all("Hydra" not in p.text for p in others)


def test_hard_negatives_come_from_hybrid_search(built, kb):
    """With one random distractor of three, the two best other hits of a search for the question are there."""
    held = built.report.documents["heldout"]
    where = "doc_path NOT IN (" + ", ".join(f"'{d}'" for d in held) + ")"
    for e in built.train[:8]:
        hits = [h for h in search(kb, e.item.question, k=12, where=where) if h.doc_path != e.item.doc_path]
        assert {h.chunk_id for h in hits[:2]} <= {p.chunk_id for p in e.passages}, e.item.question


def test_the_prompt_is_the_one_ask_builds(built, kb):
    for e in built.train[:5] + built.validation[:3]:
        hits = [Hit(**{f.name: getattr(p, f.name) for f in fields(p)}, score=1.0) for p in e.passages]
        grounding = ground(e.item.question, SearchConfig(kb=str(kb), k=len(hits)),
                           retrieve=lambda kb_, q, k=5, **kw: hits[:k])
        assert list(e.messages[:2]) == grounding.messages == build_messages(e.item.question, e.passages)
        assert [m["role"] for m in e.messages] == ["system", "user", "assistant"]


def test_the_same_seed_gives_the_same_data_and_another_seed_another_draw(kb, qa, built):
    again = build_raft(RaftConfig(kb=str(kb), questions=qa))
    assert [e.record() for e in again.train] == [e.record() for e in built.train]
    other = build_raft(RaftConfig(kb=str(kb), questions=qa, seed=1, distractors=1))
    assert [e.record() for e in other.train] != [e.record() for e in built.train]
    assert {len(e.passages) for e in other.train} == {2}


def test_written_files_read_back_with_the_projects_own_readers(built, qa, tmp_path):
    folder = write_raft(built, tmp_path / "raft")
    loaded = load_dataset(folder / "train.jsonl")
    assert not loaded.problems and len(loaded.conversations) == len(built.train)
    assert len(load_dataset(folder / "validation.jsonl").conversations) == len(built.validation)
    heldout = load_qa(folder / "heldout.jsonl")
    assert [q.question for q in heldout] == [q.question for q in built.heldout]
    assert all(q.quote for q in heldout if q.answerable)  # the exact words found in the oracle chunk
    report = json.loads((folder / "report.json").read_text())
    assert report["questions_read"] == len(QUESTIONS) and report["used"] == len(QUESTIONS)
    assert report["documents"]["heldout"] == built.report.documents["heldout"]
    assert report["dropped"] == []


def test_questions_that_cannot_be_placed_are_dropped_and_reported_with_their_line(kb, tmp_path):
    chunk = next(open_kb(kb).chunks({"doc_path": "zorvan.md"}))
    path = write_jsonl(tmp_path / "qa.jsonl", [
        QUESTIONS[0],
        {"question": "q2", "answer": "a", "doc_path": "zorvn.md"},
        {"question": "q3", "answer": "a", "doc_path": "zorvan.md", "quote": "not a sentence of it"},
        {"question": "q4", "answer": "a", "chunk_id": "0123456789abcdef"},
        {"question": "q5", "answer": "Purple elephants.", "doc_path": "petrel.md"},
        {"question": "q6", "answer": "It runs fast.", "chunk_id": chunk.chunk_id, "quote": "Its filter is"},
        {"question": "q7", "answer": "x\n[2] \"The Zorvan pump\"\nmore.", "doc_path": "zorvan.md",
         "quote": "The Zorvan pump"},
    ])
    data = build_raft(RaftConfig(kb=str(kb), questions=path, heldout_fraction=0))
    dropped = {d["where"].rsplit(":", 1)[1]: d["reason"] for d in data.report.dropped}
    assert set(dropped) == {"2", "3", "4", "5", "7"}
    assert "'zorvn.md' is not in the knowledge base (did you mean 'zorvan.md'?)" in dropped["2"]
    assert "the quote is in no chunk of zorvan.md" in dropped["3"]
    assert "chunk_id '0123456789abcdef' is not in the knowledge base" in dropped["4"]
    assert "shares no word" in dropped["5"]
    assert "quote line of its own" in dropped["7"]
    assert data.report.used == 2 and len(data.train) == 2 and not data.heldout
    by_chunk = next(e for e in data.train if e.item.question == "q6")
    assert by_chunk.oracle is None or oracle_of(by_chunk).chunk_id == chunk.chunk_id


def test_a_bad_line_fails_the_command_in_one_line_and_writes_nothing(kb, tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [QUESTIONS[0], {"question": "q", "doc_path": "zorvan.md"}])
    code, out, err = run_cli("data", "raft", "--kb", kb, "--questions", path, "--out", tmp_path / "out")
    assert code == 1 and err.strip().count("\n") == 0
    assert f"{path}:2: invalid_value [answer]" in err
    assert not (tmp_path / "out").exists()


def test_the_command_writes_a_folder_and_replaces_it_only_with_overwrite(kb, qa, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli("data", "raft", "--kb", kb, "--questions", qa, "--out", out, "--distractors", "2")
    assert code == 0, err
    assert f"{len(QUESTIONS)} questions read" in stdout and f"written to {out}" in stdout
    assert {p.name for p in out.iterdir()} >= {"train.jsonl", "validation.jsonl", "heldout.jsonl", "report.json"}
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert len(first["messages"]) == 3 and first["metadata"]["question_at"].startswith(str(qa))
    code, _, err = run_cli("data", "raft", "--kb", kb, "--questions", qa, "--out", out)
    assert code == 1 and "--overwrite" in err
    code, _, err = run_cli("data", "raft", "--kb", kb, "--questions", qa, "--out", out, "--overwrite")
    assert code == 0, err
    code, _, err = run_cli("data", "raft", "--kb", kb, "--questions", qa, "--out", kb / "inside")
    assert code == 1 and "inside the input" in err


@pytest.mark.parametrize("args, needle", [
    ([], "--questions QA.jsonl, or --generate N --teacher MODEL"),
    (["--generate", "3"], "go together"),
    (["--questions", "q.jsonl", "--oracle-fraction", "1.5"], "--oracle-fraction"),
    (["--questions", "q.jsonl", "--heldout-fraction", "1"], "--heldout-fraction"),
])
def test_option_errors_are_one_line(kb, tmp_path, args, needle):
    code, _, err = run_cli("data", "raft", "--kb", kb, "--out", tmp_path / "o", *args)
    assert code == 1 and needle in err and err.strip().count("\n") == 0


def test_an_unknown_knowledge_base_is_one_line(qa, tmp_path, home):
    code, _, err = run_cli("data", "raft", "--kb", "nope", "--questions", qa, "--out", tmp_path / "o")
    assert code == 1 and "no knowledge base" in err and not (tmp_path / "o").exists()


class StopAfter(Events):
    def __init__(self, n):
        self.n = n

    def should_stop(self):
        self.n -= 1
        return self.n < 0


def test_a_stop_request_stops_the_build(kb, qa):
    with pytest.raises(Stopped, match="nothing was written"):
        build_raft(RaftConfig(kb=str(kb), questions=qa), StopAfter(5))


def test_heldout_documents_are_a_seeded_share_never_all():
    from inhouse.data.raft import Located
    from inhouse.data.qa import QAItem
    from inhouse.rag.chunk import Chunk

    def located(doc):
        return Located(QAItem("q", "a", "f:1", doc), Chunk(doc, doc, "t", 0, 1, "", ""), "t")

    docs = [located(f"d{i}.md") for i in range(10)]
    assert len(heldout_documents(docs, 0.2, 0)) == 2
    assert heldout_documents(docs, 0.2, 0) == heldout_documents(docs, 0.2, 0) != heldout_documents(docs, 0.2, 1)
    assert heldout_documents(docs[:2], 0.2, 0) and len(heldout_documents(docs[:2], 0.9, 0)) == 1
    assert heldout_documents(docs[:1], 0.5, 0) == set() and heldout_documents(docs, 0, 0) == set()


class StubTeacher:
    """Writes a usable question for the Zorvan chunk, and unusable replies for the others."""

    def __init__(self):
        self.calls = 0

    def reply(self, messages, config=None):
        self.calls += 1
        passage = messages[-1]["content"]
        if "Zorvan" in passage:
            return ('Sure! {"question": "What speed?", "answer": "1000 rpm.", '
                    '"quote": "The Zorvan pump runs at\\n1000 rpm."}')
        if "Petrel" in passage:
            return '{"question": "Where?", "answer": "Port Ulme.", "quote": "It is made in Port Ulm."}'
        if "Quillon" in passage:
            return '{"question": "", "answer": "x", "quote": "It is made in Dravik."}'
        return "I think the pump is nice."


def test_a_teachers_questions_are_kept_only_when_the_quote_is_in_the_chunk(kb, qa):
    teacher, n = StubTeacher(), open_kb(kb).count()
    made, rejected = generate_questions(open_kb(kb), teacher, n)
    assert teacher.calls == n and len(made) == 1 and len(rejected) == n - 1
    [item] = made
    assert item.quote == "The Zorvan pump runs at 1000 rpm." and item.doc_path == "zorvan.md" and item.chunk_id
    reasons = [r["reason"] for r in rejected]
    assert sum("the quote is not in the chunk: 'It is made in Port Ulm.'" in r for r in reasons) == 1
    assert sum("the reply has no question" in r for r in reasons) == 1
    assert sum("not a JSON object" in r for r in reasons) == n - 3
    assert all(r["where"].startswith("teacher:") for r in rejected)
    data = build_raft(RaftConfig(kb=str(kb), generate=n, teacher="stub", heldout_fraction=0), teacher=StubTeacher())
    assert data.report.generated == {"asked": n, "kept": 1, "rejected": n - 1} and len(data.report.dropped) == n - 1
    [example] = data.train
    assert oracle_of(example).doc_path == "zorvan.md"


def test_parse_generated_reads_fenced_json_and_refuses_the_rest():
    from inhouse.rag.chunk import Chunk

    chunk = Chunk("a.md", "c1", "Seals last 6 months. Pumps run dry.", 0, 35, "", "")
    fenced = '```json\n{"question": "How long?", "answer": "6 months", "quote": "Seals last 6 months."}\n```'
    kept = parse_generated(fenced, chunk, "teacher:1")
    assert kept.quote == "Seals last 6 months." and kept.chunk_id == "c1"
    assert parse_generated('{"question": "q", "answer": "a"}', chunk, "t")[1] == "the reply has no quote"
    assert "not a JSON object" in parse_generated("{broken", chunk, "t")[1]


def test_a_tiny_teacher_is_asked_and_its_garbage_rejected_with_reasons(kb, qa, tiny_dir, tmp_path):
    """builtin:tiny is random: it writes no usable question, and each reply is reported, not dropped silently."""
    code, stdout, err = run_cli("data", "raft", "--kb", kb, "--questions", qa, "--generate", "2", "--teacher",
                                tiny_dir, "--out", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["generated"] == {"asked": 2, "kept": 0, "rejected": 2}
    assert [d["where"].split(" ")[0] for d in report["dropped"]] == ["teacher:1", "teacher:2"]
    assert "0 of 2 teacher questions kept" in stdout


def test_no_training_example_is_an_error_not_an_empty_folder(kb, tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a", "doc_path": "gone.md"}])
    data = build_raft(RaftConfig(kb=str(kb), questions=path))
    with pytest.raises(InhouseError, match="no training example: 1 question.*gone.md"):
        write_raft(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_quoted_answer_cites_before_the_closing_stop(built):
    e = next(e for e in built.train if e.oracle and e.item.quote)
    n = e.oracle
    expected = quoted_answer(e.item.answer.rstrip(".") + f" [{n}].", [(n, e.item.quote)])
    assert e.messages[-1]["content"] == expected
    assert asdict(built.report)["config"]["distractors"] == 3
