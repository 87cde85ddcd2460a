"""`inhouse eval ADAPTER --kb NAME --data qa.jsonl`: closed-book vs retrieval, base vs tuned.

The metric functions on hand-made answers; the four conditions on a real knowledge base (MiniLM) with a
scripted model whose every answer is known, so every number of the table is; and the command end to end
with a tiny adapter on builtin:tiny.
"""

from __future__ import annotations

import contextlib
import json
import re
from types import SimpleNamespace

import pytest
from helpers import chat, run_cli, write_jsonl

from inhouse.data.qa import QAItem
from inhouse.errors import InvalidInputError
from inhouse.eval.config import EvalConfig
from inhouse.eval.rag_eval import (
    CITATION_KEYS, CONDITIONS, Questions, cited_docs, evaluate_rag, load_questions, oracle_retrieved,
    quote_verdicts, refuses, retrieval_metrics, score_condition, scored_text, source_verdicts,
)
from inhouse.rag.answer import REFUSAL, Answer, Citation, Grounding, quoted_answer
from inhouse.rag.chunk import Hit

DOCS = {
    "pumps.md": "# Pumps\n\nThe P-200 pump runs at 3,000 rpm. Its seals are replaced every 6 months. "
                "Never run it dry.\n",
    "valves.md": "# Valves\n\nValve V-7 opens at 4 bar. It is tested weekly by the night shift.\n",
    "holiday.md": "# Leave\n\nEmployees get twenty-five days of paid holiday each year. Unused days expire in March.\n",
}
# question -> (reference answer, the sentence of the oracle document it rests on)
FACTS = {
    "How often are the P-200 pump seals replaced?": ("Every 6 months.", "Its seals are replaced every 6 months."),
    "At what pressure does valve V-7 open?": ("At 4 bar.", "Valve V-7 opens at 4 bar."),
    "How many days of paid holiday do employees get?": ("Twenty-five days.",
                                                        "Employees get twenty-five days of paid holiday each year."),
}
OFF_TOPIC = ["What is the best recipe for chocolate cake?", "Who won the football world cup in 1998?"]
ON_TOPIC_UNANSWERABLE = "What is the maximum operating temperature of the P-200 pump?"


# --- metric functions on hand-made answers ---------------------------------------------------------


def hit(path: str, n: int = 0) -> Hit:
    text = DOCS[path]
    return Hit(doc_path=path, chunk_id=f"{path}#{n}", text=text, start=0, end=len(text), heading_path="", title="")


HITS = [hit("pumps.md"), hit("valves.md")]


def citation(n: int, path: str) -> Citation:
    return Citation(n, path, "q", 0, 1)


def test_a_quote_counts_only_when_it_is_in_the_chunk_it_names():
    text = quoted_answer("Every 6 months [1].", [(1, "Its seals are replaced\nevery 6 months.")])
    assert quote_verdicts(text, HITS) == [True]  # whitespace may differ, words may not
    assert quote_verdicts('Six months [1].\n\n[1] "Its seals are replaced every 7 months."', HITS) == [False]
    assert quote_verdicts('4 bar [1].\n\n[1] "Valve V-7 opens at 4 bar."', HITS) == [False]  # it is in [2]
    assert quote_verdicts('4 bar [3].\n\n[3] "Valve V-7 opens at 4 bar."', HITS) == [False]  # no source 3
    assert quote_verdicts("Every 6 months [1].", HITS) == []  # no quote line: nothing to check


def test_cited_source_numbers_must_exist_once_per_answer():
    assert source_verdicts("a [1] b [3] c [1][2]", 2) == [True, False, True]
    assert source_verdicts("no citation", 2) == []


def test_cited_documents_exclude_sources_only_consulted():
    cited = Answer("x [2]", [citation(2, "valves.md")], hits=HITS)
    consulted = Answer("x", [citation(1, "pumps.md"), citation(2, "valves.md")], hits=HITS, consulted_only=True)
    assert cited_docs(cited) == {"valves.md"} and cited_docs(consulted) == set()


def test_refusals_and_what_em_f1_score():
    assert refuses(REFUSAL) and refuses(f"Sorry. {REFUSAL.upper()}") and refuses("I don\u2019t know.")
    assert not refuses("Every 6 months.") and refuses("no idea", ["no idea"])
    assert scored_text('Every 6 months [1][2].\n\n[1] "Its seals are replaced every 6 months."') == "Every 6 months ."
    assert scored_text(REFUSAL) == ""  # a refusal answers nothing: F1 0 even if it shares words with the reference


def test_oracle_retrieved_by_chunk_id_else_by_document():
    by_chunk = QAItem("q", "a", "f:1", chunk_id="valves.md#0")
    by_doc = QAItem("q", "a", "f:1", doc_path="valves.md")
    assert oracle_retrieved(by_chunk, HITS, 2) and not oracle_retrieved(by_chunk, HITS, 1)
    assert not oracle_retrieved(by_chunk, [hit("valves.md", 1)], 2)  # the same document, another chunk
    assert oracle_retrieved(by_doc, [hit("valves.md", 1)], 2) and not oracle_retrieved(by_doc, HITS[:1], 2)


def test_a_condition_scores_answers_citations_and_refusals():
    items = [QAItem("seals?", "Every 6 months.", "f:1", doc_path="pumps.md"),
             QAItem("valve?", "4 bar", "f:2", doc_path="valves.md"),
             QAItem("cake?", "", "f:3", answerable=False), QAItem("tea?", "", "f:4", answerable=False)]
    questions = Questions(items, store=None, oracles=["pumps.md", "valves.md", None, None])
    good = 'Every 6 months [1].\n\n[1] "Its seals are replaced every 6 months."'
    answers = [Answer(good, [citation(1, "pumps.md")], hits=HITS),
               Answer('5 bar [1][7].\n\n[1] "Valve V-7 opens at 5 bar."', [citation(1, "pumps.md")], hits=HITS),
               Answer(REFUSAL, refused=True, hits=HITS), Answer("Use flour.", hits=HITS)]
    row = score_condition(questions, answers, ["i don't know"], rag=True)
    assert row["exact_match"] == 0.5 and row["f1"] == pytest.approx((1 + 0.5) / 2)
    assert row["citation_precision"] == 0.5 and row["quote_lines"] == 2  # the second quote is not in source 1
    assert row["valid_citations"] == pytest.approx(2 / 3)  # [1], [1], [7]: source 7 was never shown
    assert row["citation_recall"] == 0.5  # the valve answer cites the pumps document
    assert row["refusal_rate"] == 0.5 and row["false_refusal_rate"] == 0.0
    closed = score_condition(questions, [Answer("Every 6 months."), Answer("I don't know.")] + answers[2:],
                             ["i don't know"], rag=False)
    assert closed["exact_match"] == 0.5 and closed["false_refusal_rate"] == 0.5
    assert all(closed[k] is None for k in CITATION_KEYS)  # closed-book answers have no sources


def test_retrieval_recall_and_the_gate_are_counted_per_kind_of_question():
    items = [QAItem("a", "x", "f:1", doc_path="valves.md"), QAItem("b", "y", "f:2", doc_path="holiday.md"),
             QAItem("c", "", "f:3", answerable=False)]
    groundings = [Grounding("a", HITS, 0.6, []), Grounding("b", HITS, 0.1, None), Grounding("c", HITS, 0.1, None)]
    got = retrieval_metrics(Questions(items, None, ["valves.md", "holiday.md", None]), groundings, k=2)
    assert got == {"k": 2, "recall@2": 0.5, "n_answerable": 2, "gated_answerable": 1, "gated_unanswerable": 1,
                   "n_unanswerable": 1}


# --- the four conditions on a real knowledge base -----------------------------------------------------


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    for name, text in DOCS.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def kb(docs, tmp_path_factory):
    from inhouse.rag.index import index

    folder = tmp_path_factory.mktemp("kbs") / "handbook"
    index(docs, folder, progress=False)
    return folder


def valve_chunk(kb) -> str:
    from inhouse.rag.store import open_kb

    [chunk] = open_kb(kb).chunks({"doc_path": "valves.md"})
    return chunk.chunk_id


def qa_file(path, kb):
    """Answerable questions by doc_path and by chunk_id, off-topic ones (the gate refuses them) and an
    on-topic one the documents do not answer (the model must refuse it)."""
    (seals, (a1, q1)), (valve, (a2, q2)), (holiday, (a3, q3)) = FACTS.items()
    rows = [{"question": seals, "answer": a1, "doc_path": "pumps.md", "quote": q1},
            {"question": valve, "answer": a2, "chunk_id": valve_chunk(kb)},
            {"question": holiday, "answer": a3, "doc_path": "holiday.md", "topic": "HR"}]
    rows += [{"question": q, "answerable": False} for q in [*OFF_TOPIC, ON_TOPIC_UNANSWERABLE]]
    return write_jsonl(path, rows)


class Switch:
    """The model side of PEFT's `disable_adapter()`: the scripted answers read `on`."""

    on = True

    @contextlib.contextmanager
    def disable_adapter(self):
        self.on = False
        try:
            yield
        finally:
            self.on = True


class ScriptedChat:
    """A ChatModel whose answers are known. Closed-book, the base says it does not know and the tuned model
    answers from memory (anything, when the documents do not have it). With sources, the tuned model quotes
    the oracle sentence from the source that holds it and refuses otherwise; the base cites the right source
    but invents its quote and a source [9], and answers what it cannot know."""

    name = "scripted"

    def __init__(self):
        self.model, self.asked = Switch(), []

    def complete_batch(self, conversations, config=None):
        assert len(conversations) <= 2  # --batch-size
        return [SimpleNamespace(text=self.answer(m)) for m in conversations]

    def answer(self, messages):
        user = messages[-1]["content"]
        question = user.split("Question: ")[-1] if user.startswith("Sources:") else user
        self.asked.append((self.model.on, user.startswith("Sources:"), question))
        ref, quote = FACTS.get(question, ("Paris.", None))
        if not user.startswith("Sources:"):
            return ref if self.model.on else "I don't know."
        if quote is None:
            return REFUSAL if self.model.on else "About 80 degrees."
        n = int(re.findall(r"^\[(\d+)\] ", user[: user.index(quote)], re.M)[-1])
        if self.model.on:
            return quoted_answer(f"{ref} [{n}]", [(n, quote)])
        return f'{ref} [{n}][9]\n\n[{n}] "It was written somewhere."'


def test_the_four_conditions_measure_what_ask_gives(tmp_path, kb):
    config = EvalConfig(data=qa_file(tmp_path / "qa.jsonl", kb), search={"kb": str(kb), "k": 2}, batch_size=2)
    model = ScriptedChat()
    result = evaluate_rag(model, load_questions(config), config)
    rows = result.conditions
    assert list(rows) == list(CONDITIONS)
    assert {k: rows["closed_book_base"][k] for k in ("exact_match", "refusal_rate", "false_refusal_rate")} == \
        {"exact_match": 0.0, "refusal_rate": 1.0, "false_refusal_rate": 1.0}
    assert {k: rows["closed_book_tuned"][k] for k in ("exact_match", "f1", "refusal_rate", "false_refusal_rate")} == \
        {"exact_match": 1.0, "f1": 1.0, "refusal_rate": 0.0, "false_refusal_rate": 0.0}
    assert all(rows[c][k] is None for c in ("closed_book_base", "closed_book_tuned") for k in CITATION_KEYS)
    assert rows["rag_tuned"] == {"n_answerable": 3, "n_unanswerable": 3, "exact_match": 1.0, "f1": 1.0,
                                 "refusal_rate": 1.0, "false_refusal_rate": 0.0, "citation_precision": 1.0,
                                 "quote_lines": 3, "valid_citations": 1.0, "citation_recall": 1.0}
    assert rows["rag_base"] == {"n_answerable": 3, "n_unanswerable": 3, "exact_match": 1.0, "f1": 1.0,
                                "refusal_rate": pytest.approx(2 / 3), "false_refusal_rate": 0.0,
                                "citation_precision": 0.0, "quote_lines": 3, "valid_citations": 0.5,
                                "citation_recall": 1.0}
    assert result.retrieval == {"k": 2, "recall@2": 1.0, "n_answerable": 3, "gated_answerable": 0,
                                "gated_unanswerable": 2, "n_unanswerable": 3}
    # the relevance gate refused the off-topic questions without a model call, in both RAG conditions
    rag_asked = [(on, q) for on, rag, q in model.asked if rag]
    assert sorted(rag_asked) == sorted((on, q) for on in (False, True) for q in [*FACTS, ON_TOPIC_UNANSWERABLE])
    assert len([1 for _, rag, _ in model.asked if not rag]) == 2 * 6  # closed-book: every question, both sides
    assert result.closed_book("tuned") == [a for a, _ in FACTS.values()]
    x = result.examples[1]
    assert x["oracle"] == "valves.md" and x["oracle_retrieved"] and not x["gated"] and x["retrieved"][0] == "valves.md"
    assert result.examples[3]["gated"] and result.examples[3]["refused"]["rag_base"]


def test_oracles_the_knowledge_base_does_not_hold_are_named_before_any_model_loads(tmp_path, kb):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a", "doc_path": "pumps.md"},
                                               {"question": "q", "answer": "a", "doc_path": "manual/pumps.md"},
                                               {"question": "q", "answer": "a", "chunk_id": "0123456789abcdef"}])
    with pytest.raises(InvalidInputError) as got:
        load_questions(EvalConfig(data=data, search={"kb": str(kb)}))
    lines = str(got.value).splitlines()
    assert len(lines) == 2 and "qa.jsonl:2: " in lines[0] and "[doc_path]" in lines[0]
    assert "qa.jsonl:3: " in lines[1] and "[chunk_id]" in lines[1] and "0123456789abcdef" in lines[1]


# --- the command --------------------------------------------------------------------------------------


def fake_adapter(tmp_path):
    """Enough of an adapter folder for the name to resolve: these runs must fail before any model loads."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_a_bad_qa_line_is_one_line_naming_file_line_and_field(tmp_path, kb, home):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "How often?", "answer": "Often.", "doc_path": "pumps.md"},
                                               {"question": "How much?", "doc_path": "pumps.md"}])
    code, out, err = run_cli("eval", fake_adapter(tmp_path), "--kb", kb, "--data", data, "--out", tmp_path / "r")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "qa.jsonl:2" in err and "[answer]" in err
    assert not (tmp_path / "r").exists()


def test_a_missing_knowledge_base_is_one_line(tmp_path, home):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a", "doc_path": "x.md"}])
    code, out, err = run_cli("eval", fake_adapter(tmp_path), "--kb", "nope", "--data", data, "--out", tmp_path / "r")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "no knowledge base" in err and "inhouse rag index" in err and not (tmp_path / "r").exists()


def test_search_flags_without_kb_are_refused(tmp_path):
    code, _, err = run_cli("eval", "x", "--data", tmp_path / "qa.jsonl", "-k", "3")
    assert code == 1 and "--kb" in err and len(err.strip().splitlines()) == 1


def test_eval_with_kb_end_to_end_writes_the_table(tmp_path, docs, tiny_dir, home):
    from inhouse import recipe as recipe_mod
    from inhouse.events import Events
    from inhouse.rag.index import index
    from inhouse.train.sft import train

    index(docs, "handbook", progress=False)
    train_data = write_jsonl(tmp_path / "train.jsonl", [chat(q, a) for q, (a, _) in FACTS.items()])
    train(recipe_mod.build(base_model=str(tiny_dir), train_file=train_data, validation_fraction=0, max_steps=1,
                           output_name="facts"), events=Events())
    data = qa_file(tmp_path / "qa.jsonl", home / "kb" / "handbook")
    code, out, err = run_cli("eval", "facts", "--kb", "handbook", "--data", data, "-k", "2", "--max-new-tokens", "8",
                             "--out", tmp_path / "r")
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("condition"))
    assert header.split() == ["condition", "EM", "F1", "cite", "prec", "quotes", "valid", "cites", "cite", "recall",
                              "refused", "unans.", "refused", "ans."]
    for label in CONDITIONS.values():
        row = next(line for line in out.splitlines() if line.startswith(label + " "))
        cells = row.split()[len(label.split()):]
        assert len(cells) == 8 and all(re.fullmatch(r"\d\.\d{4}", c) for c in cells[:2] + cells[6:])
        citations = cells[2:6]  # cite prec, quotes, valid cites, cite recall
        if label.startswith("closed-book"):
            assert citations == ["\u2014"] * 4  # no sources, no citations
        else:
            assert citations[1].isdigit() and re.fullmatch(r"\d\.\d{4}", citations[3])
    assert "recall@2 of the oracle 1.0000 over 3 answerable questions" in out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    rag = report["rag"]
    assert list(rag["conditions"]) == list(CONDITIONS) and len(rag["examples"]) == 6
    # the random model answers anything; the gate still refuses the off-topic questions for it
    assert rag["retrieval"]["gated_unanswerable"] == 2 and rag["conditions"]["rag_tuned"]["refusal_rate"] >= 2 / 3
    assert report["n"] == 3 and report["base"]["n"] == 3  # the rest of the evaluation: the answerable questions
    assert report["config"]["search"]["kb"] == "handbook" and "forgetting" in report
    html = (tmp_path / "r" / "report.html").read_text()
    table = html[html.index("<table id=rag>"):]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 5 and all(label in table for label in CONDITIONS.values())
    assert "F1 and citations per condition" in html and "Forgetting check" in html
    from inhouse.adapters import registry

    [recorded] = registry.lineage(registry.resolve("facts")).evaluations
    assert list(recorded["rag"]["conditions"]) == list(CONDITIONS)
