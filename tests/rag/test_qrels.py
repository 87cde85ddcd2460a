"""Qrels and query parsers on small inline samples of each format, and on the real Cranfield files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inhouse.errors import InhouseError
from inhouse.rag.qrels import (
    cranfield_gain, parse_smart_docs, parse_smart_queries, read_cranfield, read_qrels, read_queries,
    write_collection, write_cranfield_folder,
)

CRANFIELD = Path(__file__).parents[2].parent / "shared" / "data" / "cranfield"
needs_cranfield = pytest.mark.skipif(not (CRANFIELD / "cranqrel").is_file(), reason="no ../shared/data/cranfield")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- qrels ------------------------------------------------------------------------------------


def test_trec_qrels(tmp_path):
    path = write(tmp_path, "q.qrels", "1 0 doc-a 1\n1 0 doc-b 0\n\n2 Q0 doc-c 2\n2 0 doc-d -1\n")
    assert read_qrels(path) == {"1": {"doc-a": 1, "doc-b": 0}, "2": {"doc-c": 2, "doc-d": 0}}


def test_cranfield_qrels_codes_become_gains(tmp_path):
    # code 1 (complete answer) is the best: gain 4; code 4 gain 1; -1 judged not relevant: gain 0
    path = write(tmp_path, "cranqrel", "1 184 2 \n1 29 -1\n1 12 4\n2 7 1\n\n")
    assert read_qrels(path) == {"1": {"184": 3, "29": 0, "12": 1}, "2": {"7": 4}}
    assert [cranfield_gain(c) for c in (1, 2, 3, 4, 5, -1)] == [4, 3, 2, 1, 0, 0]


def test_qrels_mixed_columns_name_the_line(tmp_path):
    path = write(tmp_path, "bad.qrels", "1 0 a 1\n1 0 b 1\n1 c 1\n")
    with pytest.raises(InhouseError, match=r"bad\.qrels:3: expected 'qid 0 docid rel' \(TREC qrels\)") as e:
        read_qrels(path)
    assert "\n" not in str(e.value)


def test_qrels_bad_grade_and_shape(tmp_path):
    with pytest.raises(InhouseError, match=r"x\.qrels:2: relevance must be a whole number"):
        read_qrels(write(tmp_path, "x.qrels", "1 0 a 1\n1 0 b yes\n"))
    with pytest.raises(InhouseError, match=r"y\.qrels:1: expected .*TREC.* or .*Cranfield"):
        read_qrels(write(tmp_path, "y.qrels", "1 a\n"))


def test_missing_file():
    with pytest.raises(InhouseError, match="no such file"):
        read_qrels("/nonexistent/qrels.txt")


# --- queries ----------------------------------------------------------------------------------


def test_tsv_and_space_queries(tmp_path):
    path = write(tmp_path, "q.tsv", "q1\twhat is   lift ?\n\nq2\tdrag\tcoefficient\nq3 heat flux\n")
    assert read_queries(path) == {"q1": "what is lift ?", "q2": "drag coefficient", "q3": "heat flux"}


def test_jsonl_and_json_queries(tmp_path):
    rows = [{"id": 1, "text": "wing flutter"}, {"_id": "b", "query": "shock waves"}]
    jsonl = write(tmp_path, "q.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert read_queries(jsonl) == {"1": "wing flutter", "b": "shock waves"}
    assert read_queries(write(tmp_path, "q.json", json.dumps(rows, indent=1))) == read_queries(jsonl)


def test_trec_topics(tmp_path):
    text = ("<top>\n<num> Number: 301\n<title> International Organized Crime\n\n<desc> Description:\nx\n</top>\n"
            "<top>\n<num> 302\n<title> Poliomyelitis\n</top>\n")
    assert read_queries(write(tmp_path, "topics.txt", text)) == {
        "301": "International Organized Crime", "302": "Poliomyelitis"}


def test_query_errors_name_file_and_line(tmp_path):
    with pytest.raises(InhouseError, match=r"q\.jsonl:2: invalid JSON"):
        read_queries(write(tmp_path, "q.jsonl", '{"id": 1, "text": "a"}\n{"id": 2,\n'))
    with pytest.raises(InhouseError, match=r"d\.tsv:2: query id q1 appears twice"):
        read_queries(write(tmp_path, "d.tsv", "q1\ta\nq1\tb\n"))
    with pytest.raises(InhouseError, match=r"e\.tsv:1: query needs an id and a text"):
        read_queries(write(tmp_path, "e.tsv", "lonely\n"))
    with pytest.raises(InhouseError, match=r"f\.jsonl:2: expected an object"):
        read_queries(write(tmp_path, "f.jsonl", '{"id": 1, "text": "a"}\n[1, 2]\n'))
    with pytest.raises(InhouseError, match=r"g\.json \(item 1\): query needs an id and a text"):
        read_queries(write(tmp_path, "g.json", '[{"id": 1, "text": "a"}, {"id": 2}]'))


# --- SMART (Cranfield) ------------------------------------------------------------------------

SMART_QUERIES = """.I 001
.W
what similarity laws must be obeyed
when building models .
.I 002
.W
structural problems .
.I 004
.W
heat conduction in slabs .
"""

SMART_DOCS = """.I 1
.T
a wing in a
slipstream .
.A
brenckman,m.
.B
j. ae. scs. 25, 1958, 324.
.W
a wing in a
slipstream .
  an experimental study of a wing
was made .
.I 2
.T
flat plate .
.A
.B
.W
.I 3
.T
.W
.I 4
.T
shock .
.W
first part .
.W
second part .
"""


def test_smart_queries_renumbered_in_file_order(tmp_path):
    # .I 001, 002, 004 -> 1, 2, 3: cranqrel numbers queries by position, not by .I
    path = write(tmp_path, "cran.qry", SMART_QUERIES)
    assert read_queries(path) == {"1": "what similarity laws must be obeyed when building models .",
                                  "2": "structural problems .", "3": "heat conduction in slabs ."}
    assert list(parse_smart_queries(SMART_QUERIES, renumber=False)) == ["1", "2", "4"]


def test_smart_docs_fields():
    docs = parse_smart_docs(SMART_DOCS)
    assert [d.id for d in docs] == ["1", "2", "3", "4"]
    assert docs[0].title == "a wing in a slipstream ." and docs[0].authors == "brenckman,m."
    # the indented line opens a paragraph; wrapped lines are joined
    assert docs[0].text == "a wing in a slipstream .\n\nan experimental study of a wing was made ."
    assert docs[1].text == "" and docs[2].title == ""
    assert docs[3].text == "first part . second part ."  # a repeated .W field is appended


def test_smart_errors():
    with pytest.raises(InhouseError, match=r"c\.all:1: text outside a '\.T/\.A/\.B/\.W' field"):
        parse_smart_docs("hello\n.I 1\n", "c.all")
    with pytest.raises(InhouseError, match=r"c\.all:3: document id 1 appears twice"):
        parse_smart_docs(".I 1\n.T\n.I 1\n", "c.all")


def test_write_collection(tmp_path):
    paths = write_collection(parse_smart_docs(SMART_DOCS), tmp_path / "out")
    # doc 3 has neither title nor text: nothing to find, so no file
    assert [p.name for p in paths] == ["1.txt", "2.txt", "4.txt"]
    first = paths[0].read_text(encoding="utf-8")
    assert first.splitlines()[0] == "a wing in a slipstream ."  # title as the first line
    assert first.endswith("was made .\n")
    assert paths[1].read_text(encoding="utf-8") == "flat plate .\n"
    no_title = write_collection(parse_smart_docs(SMART_DOCS), tmp_path / "nt", title=False)
    assert no_title[0].read_text(encoding="utf-8").startswith("a wing in a slipstream .\n\nan experimental")
    assert no_title[1].read_text(encoding="utf-8") == "flat plate .\n"  # empty abstract keeps its title


@needs_cranfield
def test_real_cranfield(tmp_path):
    c = read_cranfield(CRANFIELD)
    assert len(c.docs) == 1400 and [d.id for d in c.docs[:3]] == ["1", "2", "3"]
    assert len(c.queries) == 225 and set(c.queries) == {str(i) for i in range(1, 226)}
    # the 3rd query is the one written as `.I 004`
    assert c.queries["3"].startswith("what problems of heat conduction in composite slabs")
    assert set(c.qrels) == set(c.queries)
    judgements = [g for j in c.qrels.values() for g in j.values()]
    # 1,837 judgement lines: 1,612 with codes 1-4 (128 + 387 + 734 + 363), 225 with -1
    assert len(judgements) == 1837 and sum(g > 0 for g in judgements) == 1612
    assert c.qrels["1"]["184"] == 3 and c.qrels["1"]["486"] == 0  # `1 184 2`, `1 486 -1`
    paths = write_cranfield_folder(CRANFIELD, tmp_path / "cran")
    assert len(paths) == 1398  # 471 and 995 are empty records
    assert (tmp_path / "cran" / "1.txt").read_text().startswith("experimental investigation of the aerodynamics")


def test_classic_judgement_layouts_are_told_apart(tmp_path):
    # CISI / CACM list relevant pairs with constant trailing columns; others give a score after the relevance
    pairs = write(tmp_path, "cisi.rel", "    1     28 0 0.000000\n    1     35 0 0.000000\n    2     29 0 0.000000\n")
    assert read_qrels(pairs) == {"1": {"28": 1, "35": 1}, "2": {"29": 1}}
    scored = write(tmp_path, "s.qrels", "1 a 2 0.9\n1 b 0 0.1\n2 c 1 0.5\n")
    assert read_qrels(scored) == {"1": {"a": 2, "b": 0}, "2": {"c": 1}}
    beir = write(tmp_path, "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n")
    assert read_qrels(beir) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}


def test_queries_with_several_text_fields_use_them_all(tmp_path):
    path = write(tmp_path, "q.jsonl", '{"_id": "1", "title": "Lamp returns", "text": "How long do refunds take?"}\n'
                                      '{"id": "2", "text": "Shipping from Leeds"}\n')
    assert read_queries(path) == {"1": "Lamp returns. How long do refunds take?", "2": "Shipping from Leeds"}
