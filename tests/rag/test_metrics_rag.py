"""Retrieval metrics against values worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from inhouse.rag.metrics import doc_key, evaluate_kb, evaluate_run, format_metrics, mrr, ndcg_at_k, recall_at_k

# One query used throughout: relevant docs d1, d2, d7; the system ranks d3 d1 d5 d2 d9.
RANKED = ["d3", "d1", "d5", "d2", "d9"]
RELEVANT = {"d1", "d2", "d7"}


def test_recall_at_k():
    # top 1 = {d3}: 0 of 3 relevant; top 2 adds d1: 1/3; top 5 has d1, d2: 2/3; d7 never retrieved.
    assert recall_at_k(RANKED, RELEVANT, 1) == 0.0
    assert recall_at_k(RANKED, RELEVANT, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, RELEVANT, 100) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, set(), 5) == 0.0  # undefined -> 0, and evaluate_run skips such queries


def test_mrr():
    # first relevant doc (d1) is at rank 2 -> 1/2
    assert mrr(RANKED, RELEVANT) == 0.5
    assert mrr(RANKED, RELEVANT, k=1) == 0.0  # cut at rank 1: d3 only
    assert mrr(["x", "y"], {"z"}) == 0.0


def test_ndcg_binary():
    # gains by rank: 0, 1, 0, 1, 0
    # DCG  = 1/log2(3) + 1/log2(5) = 0.630930 + 0.430677 = 1.061606
    # ideal: the 3 judged relevant docs at ranks 1..3 = 1/log2(2) + 1/log2(3) + 1/log2(4)
    #      = 1 + 0.630930 + 0.5 = 2.130930
    # nDCG = 1.061606 / 2.130930 = 0.498189
    assert ndcg_at_k(RANKED, dict.fromkeys(RELEVANT, 1), 10) == pytest.approx(0.498189, abs=1e-6)
    assert ndcg_at_k(RANKED, RELEVANT, 10) == pytest.approx(0.498189, abs=1e-6)  # a set works too
    # cut at 2: DCG = 1/log2(3) = 0.630930; ideal (2 slots) = 1 + 0.630930 = 1.630930 -> 0.386853
    assert ndcg_at_k(RANKED, RELEVANT, 2) == pytest.approx(0.630930 / 1.630930, abs=1e-6)
    assert ndcg_at_k(["d1", "d2", "d7"], RELEVANT, 10) == pytest.approx(1.0)


def test_ndcg_binary_ignores_grade_and_non_relevant():
    # binary: grades 3 and 1 both count as 1; a judged 0 is not relevant (not in the ideal either)
    judged = {"d1": 3, "d2": 1, "d7": 2, "d3": 0}
    assert ndcg_at_k(RANKED, judged, 10) == pytest.approx(0.498189, abs=1e-6)


def test_ndcg_graded():
    # gains d1=3, d2=1, d7=2; by rank: 0, 3, 0, 1, 0
    # DCG   = 3/log2(3) + 1/log2(5) = 1.892789 + 0.430677 = 2.323466
    # ideal = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.261860 + 0.5 = 4.761860
    # nDCG  = 2.323466 / 4.761860 = 0.487932
    judged = {"d1": 3, "d2": 1, "d7": 2}
    assert ndcg_at_k(RANKED, judged, 10, graded=True) == pytest.approx(0.487932, abs=1e-6)


def test_duplicates_count_once():
    # two chunks of d1 then d2: d2 is the 2nd document, not the 3rd -> MRR 1/2, not 1/3
    assert mrr(["d1", "d1", "d2"], {"d2"}) == 0.5
    # and d2 retrieved twice gains once: DCG = 1/log2(2) = 1 = ideal
    assert ndcg_at_k(["d2", "d2"], {"d2"}, 10) == 1.0
    assert recall_at_k(["d1", "d1", "d2"], {"d2"}, 2) == 1.0


def test_evaluate_run_means_and_skips():
    run = {"q1": RANKED, "q2": ["x", "y"], "q3": ["z"], "q4": ["a"]}
    qrels = {"q1": dict.fromkeys(RELEVANT, 1), "q2": {"y": 1}, "q3": {"z": 0}, "q5": {"b": 1}}
    out = evaluate_run(run, qrels, ks=(5, 10))
    # scored: q1, q2 and q5 (judged, absent from the run -> all zeros); q3 (no relevant) and
    # q4 (unjudged) are skipped.
    assert out["queries"] == 3 and out["skipped"] == 2 and out["skipped_ids"] == ["q3", "q4"]
    # recall@5: q1 2/3, q2 1 (y at rank 2), q5 0 -> (0.666667 + 1 + 0) / 3 = 0.555556
    assert out["recall@5"] == pytest.approx((2 / 3 + 1) / 3)
    # MRR: q1 1/2, q2 1/2, q5 0 -> 1/3
    assert out["mrr"] == pytest.approx(1 / 3)
    # nDCG@10: q1 0.498189; q2 y at rank 2 = 1/log2(3) = 0.630930 over ideal 1; q5 0
    assert out["ndcg@10"] == pytest.approx((0.498189 + 1 / math.log2(3)) / 3, abs=1e-6)
    assert "queries    3 scored, 2 skipped" in format_metrics(out)


def test_evaluate_run_per_query():
    out = evaluate_run({"q": ["a"]}, {"q": {"a": 1}}, ks=(1,), with_per_query=True)
    assert out["per_query"] == {"q": {"recall@1": 1.0, "ndcg@10": 1.0, "mrr": 1.0}}


def test_doc_key_matches_qrels_spelling():
    assert doc_key("/kb/root/184.txt", {"184"}) == "184"
    assert doc_key("/kb/root/184.txt", {"184.txt"}) == "184.txt"
    assert doc_key("manuals/a.pdf", {"manuals/a.pdf"}) == "manuals/a.pdf"
    assert doc_key("manuals/b.pdf", set()) == "b"


def test_evaluate_kb_collapses_chunks_to_documents():
    calls = []

    def retrieve(kb, query, k, **kw):
        calls.append((kb, query, k, kw))
        hit = lambda p: SimpleNamespace(doc_path=p)  # noqa: E731
        # two chunks of 7.txt before 3.txt: 3 is the 2nd document
        return [hit("root/7.txt"), hit("root/7.txt"), hit("root/3.txt")] if query == "first" else []

    queries = {"1": "first", "2": "second", "9": "not judged"}
    qrels = {"1": {"3": 1}, "2": {"5": 1}, "4": {"6": 1}}
    out = evaluate_kb("kb", queries, qrels, ks=(1, 2), retrieve=retrieve, mode="bm25")
    # q1: 3 at document rank 2 -> recall@1 0, recall@2 1, MRR 1/2; q2 finds nothing; q4 has no text
    assert out["queries"] == 2 and out["missing_queries"] == ["4"]
    assert out["recall@2"] == pytest.approx(0.5) and out["mrr"] == pytest.approx(0.25)
    assert [c[1] for c in calls] == ["first", "second"]  # unjudged query 9 never searched
    assert calls[0][2] == 3 * 2 and calls[0][3] == {"mode": "bm25"}  # depth x k chunks asked for


def test_ids_that_never_match_are_an_error_not_a_table_of_zeros():
    from types import SimpleNamespace

    from inhouse.errors import InhouseError
    from inhouse.rag.metrics import evaluate_kb

    def retrieve(kb, text, k=10, **kw):
        return [SimpleNamespace(doc_path="docs/unrelated-7.txt")]

    with pytest.raises(InhouseError, match=r"no query id .*queries: q1, q2.*qrels: 1, 2"):
        evaluate_kb("kb", {"q1": "a", "q2": "b"}, {"1": {"d1": 1}, "2": {"d2": 1}}, retrieve=retrieve)
    with pytest.raises(InhouseError, match=r"no retrieved document matches.*judged: d1.*retrieved: unrelated-7"):
        evaluate_kb("kb", {"1": "a"}, {"1": {"d1": 1}}, retrieve=retrieve)


def test_rag_eval_cli_prints_time_and_exits_1_on_mismatch(tmp_path):
    from helpers import run_cli

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "d1.txt").write_text("Refunds take five working days.", encoding="utf-8")
    (docs / "d2.txt").write_text("Orders ship from Leeds.", encoding="utf-8")
    env = {"INHOUSE_HOME": str(tmp_path / "home")}
    code, out, err = run_cli("rag", "index", docs, "--kb", "k", env=env)
    assert code == 0 and "documents/s" in out and "chunks/s" in out, out + err
    (tmp_path / "q.tsv").write_text("1\thow long do refunds take\n", encoding="utf-8")
    (tmp_path / "good.qrels").write_text("1 0 d1 1\n", encoding="utf-8")
    (tmp_path / "bad.qrels").write_text("9 0 d1 1\n", encoding="utf-8")
    code, out, err = run_cli("rag", "eval", "--kb", "k", "--queries", tmp_path / "q.tsv", "--qrels",
                             tmp_path / "good.qrels", env=env)
    assert code == 0 and "queries/s" in out and "ndcg@10" in out, out + err
    code, out, err = run_cli("rag", "eval", "--kb", "k", "--queries", tmp_path / "q.tsv", "--qrels",
                             tmp_path / "bad.qrels", env=env)
    assert code == 1 and "no query id" in err and "Traceback" not in err
