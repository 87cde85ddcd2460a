"""tune_embedder: pairs from a QA file or from chunks, in-batch-negative training with the real MiniLM, the
embedder library with lineage, re-indexing and searching with a tuned embedder, one-line errors."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import write_jsonl

from inhouse import paths
from inhouse.data.qa import QAItem
from inhouse.errors import ConflictError, InhouseError, NotFoundError
from inhouse.events import Events, Stopped
from inhouse.rag.config import TuneConfig
from inhouse.rag.embed import load_embedder, resolve_embedder
from inhouse.rag.index import index
from inhouse.rag.pairs import doc_title, qa_pairs, synthetic_pairs
from inhouse.rag.search import search
from inhouse.rag.store import open_kb
from inhouse.rag.tune import passage_of, read_lineage, tune_embedder

# Six short documents, and a code for each that only this company uses: stock MiniLM cannot know that
# "KX-41" means the delivery rules, so it ranks the documents for such a question close to at random.
DOCS = {
    "shipping.txt": ("Delivery times", "Parcels leave the warehouse within two working days. Most of Europe is "
                     "reached within a week. A tracking link arrives by email once the carrier has the parcel."),
    "refunds.txt": ("Money back", "Money for returned items goes back to the original card. It arrives within "
                    "five days of the return reaching us. Shipping costs are refunded for faulty items only."),
    "warranty.txt": ("Lamp warranty", "Every lamp is covered against electrical faults for two years. The cover "
                     "starts on the date of purchase. Broken glass is not covered by the warranty."),
    "gifts.txt": ("Gift orders", "Gift orders come wrapped in recycled paper with a handwritten card. No price "
                  "is printed on the slip. A gift can be sent to another address than the buyer's."),
    "cleaning.txt": ("Caring for shades", "Linen shades should be dusted with a soft brush. They must never go "
                     "into a washing machine. Stains come out with a damp cloth and a little soap."),
    "hours.txt": ("Shop hours", "The shop in Leeds opens at nine in the morning. It closes at half past five. "
                  "It stays shut on Sundays and on public holidays."),
}
CODES = {"shipping.txt": "KX-41", "refunds.txt": "PL-07", "warranty.txt": "RM-93", "gifts.txt": "TZ-15",
         "cleaning.txt": "WB-62", "hours.txt": "HD-28"}
FAST = TuneConfig(epochs=10, learning_rate=1e-4, batch_size=6, validation_fraction=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A knowledge base of DOCS, a QA file naming each document by its code, and the embedder tuned on it."""
    tmp = tmp_path_factory.mktemp("tune")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INHOUSE_HOME", str(tmp / "home"))
        root = tmp / "docs"
        root.mkdir()
        for name, (title, body) in DOCS.items():
            (root / name).write_text(f"{title}\n\n{body}\n", encoding="utf-8")
        index(root, "shop", progress=False)
        qa = write_jsonl(tmp / "qa.jsonl", [{"question": f"What does rule {code} say?", "doc_path": doc}
                                            for doc, code in CODES.items()])
        stock = top_docs("shop")
        tuned = tune_embedder("shop", pairs_file=qa, name="shop-codes", config=FAST)
        yield SimpleNamespace(root=root, qa=qa, stock=stock, tuned=tuned, tmp=tmp, mp=mp)


@pytest.fixture
def home(setup, monkeypatch):
    monkeypatch.setenv("INHOUSE_HOME", str(setup.tmp / "home"))
    return setup.tmp / "home"


def top_docs(kb):
    """The best document for a question worded unlike the training questions, per code."""
    return {doc: search(kb, f"Tell me about {code}.", k=1, mode="vector")[0].doc_path for doc, code in CODES.items()}


def test_tuning_fixes_what_stock_minilm_confuses(setup, home):
    index(setup.root, "shop-tuned", embedder="shop-codes", progress=False)
    tuned = top_docs("shop-tuned")
    right = lambda found: sum(found[doc] == doc for doc in CODES)  # noqa: E731
    assert right(setup.stock) <= 2, setup.stock  # the constructed case really confuses the stock model
    assert right(tuned) >= 5, tuned


def test_tuned_embedder_is_saved_with_lineage_and_loads_by_name(setup, home):
    path = paths.embedders() / "shop-codes"
    assert setup.tuned.path == path and (path / "model.safetensors").is_file()
    lineage = read_lineage(path)
    assert lineage.base_embedder == "all-MiniLM-L6-v2" and lineage.knowledge_base["name"] == "shop"
    assert lineage.pairs["source"] == "questions" and lineage.pairs["counts"] == {"qa": 6}
    assert len(lineage.pairs["file_sha256"]) == 64 and len(lineage.pairs["sha256"]) == 64
    assert lineage.config["learning_rate"] == 1e-4 and lineage.metrics["steps"] == 10
    assert lineage.metrics["negatives"] == "all"  # a QA file's pairs: every in-batch negative counts
    assert lineage.versions["sentence-transformers"] and lineage.finished_at
    assert resolve_embedder("shop-codes") == ("shop-codes", path)
    assert load_embedder("shop-codes", device="cpu").name == "shop-codes"
    assert not list(paths.embedders().glob(".*staging*"))


def test_another_embedder_needs_reindex_which_swaps_the_whole_index(setup, home, backend):
    """In LanceDB through a staging folder, in PostgreSQL in the commit's transaction: the same result."""
    name = f"shop-re-{'pg' if backend else 'lance'}"
    with pytest.raises(ConflictError, match="--reindex"):
        index(setup.root, "shop", embedder="shop-codes", progress=False)
    index(setup.root, name, progress=False, store=backend)
    report = index(setup.root, name, embedder="shop-codes", reindex=True, progress=False)
    meta = open_kb(name).meta()
    assert meta["embedder_name"] == "shop-codes" and sorted(report.added) == sorted(DOCS)
    assert search(name, "Tell me about KX-41.", k=1, mode="vector")[0].doc_path == "shipping.txt"
    assert search(name, "refund", k=1, mode="hybrid")  # search reloads the tuned embedder by its name
    again = index(setup.root, name, progress=False)  # incremental runs keep the tuned embedder
    assert again.unchanged == len(DOCS) and again.chunks_written == 0
    fewer = setup.tmp / f"fewer-{name}"
    fewer.mkdir()
    for doc in ("shipping.txt", "hours.txt"):
        (fewer / doc).write_text((setup.root / doc).read_text(encoding="utf-8"), encoding="utf-8")
    index(fewer, name, reindex=True, progress=False)  # a rebuild keeps nothing of the old index
    assert {c.doc_path for c in open_kb(name).chunks()} == {"shipping.txt", "hours.txt"}
    assert open_kb(name).count() == len({c.chunk_id for c in open_kb(name).chunks()})
    assert not [p for p in paths.kbs().iterdir() if p.name.startswith(".")]


def test_a_failed_rebuild_leaves_the_old_index(setup, home, monkeypatch, backend):
    from inhouse.rag import index as index_mod

    name = f"shop-keep-{'pg' if backend else 'lance'}"
    index(setup.root, name, progress=False, store=backend)
    before, count = open_kb(name).meta(), open_kb(name).count()
    monkeypatch.setattr(index_mod, "_flush", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError, match="disk full"):
        index(setup.root, name, embedder="shop-codes", reindex=True, progress=False)
    assert open_kb(name).meta() == before and open_kb(name).count() == count
    assert search(name, "refund", k=1, mode="vector")


class Doubled:
    """MiniLM's vectors written twice (768-d, unit length still): an embedder of another dimension."""

    def __init__(self, base):
        self.base, self.name, self.dim = base, "minilm-doubled", 2 * base.dim
        self.tokenizer, self.max_tokens = base.tokenizer, base.max_tokens

    def embed(self, texts, batch_size=64):
        return np.hstack([self.base.embed(texts, batch_size)] * 2) / np.sqrt(2)


def test_a_rebuild_may_change_the_dimension_and_a_failed_one_keeps_the_old(setup, home, monkeypatch, backend):
    """In PostgreSQL the vector column's dimension is fixed: the rebuild fills a new table and swaps it in."""
    from inhouse.rag import index as index_mod

    name, doubled = f"shop-dim-{'pg' if backend else 'lance'}", Doubled(load_embedder(device="cpu"))
    index(setup.root, name, progress=False, store=backend)
    before, count = open_kb(name).meta(), open_kb(name).count()
    with monkeypatch.context() as mp:
        mp.setattr(index_mod, "_flush", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
        with pytest.raises(RuntimeError, match="disk full"):
            index(setup.root, name, embedder=doubled, reindex=True, progress=False)
    assert open_kb(name).meta() == before and search(name, "refund", k=1, mode="vector")
    index(setup.root, name, embedder=doubled, reindex=True, progress=False)
    meta = open_kb(name).meta()
    assert (meta["embedder_name"], meta["dim"], open_kb(name).count()) == ("minilm-doubled", 768, count)
    for mode in ("vector", "bm25", "hybrid"):
        assert search(name, "When does the shop open on Sundays?", k=1, mode=mode, embedder=doubled)[0].doc_path \
            == "hours.txt"
    assert index(setup.root, name, embedder=doubled, progress=False).unchanged == len(DOCS)
    index(setup.root, name, embedder="all-MiniLM-L6-v2", reindex=True, progress=False)  # and back
    assert open_kb(name).meta()["dim"] == 384 and search(name, "refund", k=1, mode="vector")[0].doc_path == "refunds.txt"


def test_an_existing_name_is_refused_unless_overwrite(setup, home):
    with pytest.raises(ConflictError, match="--overwrite"):
        tune_embedder("shop", pairs_file=setup.qa, name="shop-codes", config=FAST)


def test_a_stop_request_publishes_nothing(setup, home):
    class StopAtOnce(Events):
        def should_stop(self):
            return True

    with pytest.raises(Stopped):
        tune_embedder("shop", pairs_file=setup.qa, name="stopped", config=FAST, events=StopAtOnce())
    assert not (paths.embedders() / "stopped").exists()


def test_synthetic_pairs_from_the_knowledge_base_train_and_report_held_out_scores(setup, home):
    config = TuneConfig(epochs=1, batch_size=4, validation_fraction=0.5, seed=3)
    tuned = tune_embedder("shop", name="shop-synthetic", config=config)
    pairs = tuned.lineage.pairs
    assert pairs["source"] == "chunks" and pairs["counts"] == {"title": 6, "sentence": 6}
    assert pairs["held_out"] >= 2 and pairs["train"] + pairs["held_out"] == 12
    assert tuned.lineage.metrics["negatives"] == "guided"  # pseudo-queries: the base model guides the negatives
    held = tuned.lineage.metrics["held_out"]
    assert set(held["before"]) == set(held["after"]) == {"accuracy@1", "mrr@10"}


def test_synthetic_pairs_cut_the_query_out_of_its_passage():
    text = ("Vibration of aircraft engines .\n\nvibration of aircraft engines . Vibration in an airframe comes "
            "from the engine mounts. It travels through the wing spar to the cabin floor. Rubber mounts absorb "
            "most of it below two hundred hertz.\n")
    chunk = SimpleNamespace(doc_path="docs/17.txt", chunk_id="c1", text=text, start=0, heading_path="", title="17")
    pairs = {p.kind: p for p in synthetic_pairs([chunk], seed=0)}
    assert pairs["title"].query == "Vibration of aircraft engines ."  # the title line, not the file name
    assert "aircraft engines" not in pairs["title"].passage  # nor its restatement in the abstract
    assert pairs["sentence"].query not in pairs["sentence"].passage
    assert pairs["sentence"].query != pairs["title"].query and "engine mounts" in pairs["title"].passage
    assert synthetic_pairs([chunk], seed=0) == synthetic_pairs([chunk], seed=0)


def test_a_heading_path_or_a_real_title_is_the_query():
    section = SimpleNamespace(doc_path="hr/leave.md", chunk_id="c2", start=40, title="Staff handbook",
                              heading_path="Staff handbook > Paid leave", text="Employees get twenty-five days of "
                              "paid holiday each year. Unused days carry over until March. Ask your manager first.")
    assert synthetic_pairs([section], kinds=["title"])[0].query == "Staff handbook: Paid leave"
    wrapped = SimpleNamespace(doc_path="a.txt", start=0, title="a", text="This paragraph is wrapped\nby hand and "
                              "has no title line at all.\n\nSecond paragraph.")
    assert doc_title([wrapped]) is None


@pytest.mark.parametrize("line,field", [
    ({"passage": "Some text."}, "question"),
    ({"question": "   ", "passage": "Some text."}, "question"),
    ({"question": "Why?"}, "doc_path"),
    ({"question": "Why?", "text": ""}, "doc_path"),
    ({"question": "Why?", "passage": ["a", "list"]}, "passage"),
    ({"question": "Why?", "chunk_id": "no-such-chunk"}, "chunk_id"),
    ({"question": "Why?", "doc_path": "nope.txt"}, "doc_path"),
])
def test_a_bad_qa_line_is_one_error_naming_file_line_and_field(tmp_path, line, field):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "Fine?", "passage": "Yes."}) + "\n" + json.dumps(line) + "\n",
                    encoding="utf-8")
    with pytest.raises(InhouseError) as error:
        qa_pairs(path, lambda item: None)
    message = str(error.value)
    assert message.startswith(f"{path}:2: invalid_value [{field}]: ") and "\n" not in message


def test_qa_files_of_the_project_format_read_as_pairs(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": "How long do refunds take?", "answer": "Five days.", "doc_path": "refunds.txt", "id": 1},
        {"question": "Who won the cup?", "answerable": False},  # no passage: left out
        {"question": "Is glass covered?", "text": "Broken glass is not covered."},
        "[not an object]",
    ])
    with pytest.raises(InhouseError, match=f"{path}:4: invalid_line: "):
        qa_pairs(path, lambda item: "found")
    path.write_text("".join(line for line in path.read_text().splitlines(True)[:3]))
    pairs = qa_pairs(path, lambda item: f"passage of {item.doc_path}")
    assert [(p.query, p.passage, p.origin) for p in pairs] == [
        ("How long do refunds take?", "passage of refunds.txt", f"{path}:1"),
        ("Is glass covered?", "Broken glass is not covered.", f"{path}:3")]


def test_invalid_json_in_a_qa_file_names_the_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "a", "passage": "b"}\n{not json\n', encoding="utf-8")
    with pytest.raises(InhouseError, match=f"{path}:2"):
        qa_pairs(path, lambda item: None)


def test_qa_lines_find_their_passage_by_chunk_id_or_document(setup, home):
    store = open_kb("shop")
    hit = search("shop", "tracking link email", k=1, mode="bm25")[0]
    item = lambda **kw: QAItem(**{"question": "x", "answer": "", "where": "qa.jsonl:1", **kw})  # noqa: E731
    assert passage_of(store, item(chunk_id=hit.chunk_id)) == hit.text
    assert "Leeds" in passage_of(store, item(question="when does it open", doc_path="hours.txt"))
    assert "Leeds" in passage_of(store, item(doc_path="hours.txt", quote="It closes at  half past five."))
    assert passage_of(store, item(doc_path="nope.txt")) is None
    with pytest.raises(NotFoundError):
        tune_embedder("no-such-kb", config=FAST)


def test_the_cli_reports_a_bad_qa_line_in_one_line(setup, home, tmp_path):
    from helpers import run_cli

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "ok", "doc_path": "hours.txt"}, {"question": "x"}])
    code, out, err = run_cli("rag", "tune-embedder", "--kb", "shop", "--questions", bad, "--out", "never")
    assert code == 1 and err.strip() == f"error: {bad}:2: invalid_value [doc_path]: an answerable question needs " \
        "the document (doc_path) or chunk (chunk_id) its answer comes from, or the passage itself (passage)"
    assert not (paths.embedders() / "never").exists()


def test_held_out_scores_rank_each_question_against_other_chunks_only():
    import numpy as np

    from inhouse.rag.pairs import Pair
    from inhouse.rag.tune import retrieval_scores

    vectors = {"q-title": [1, 0], "q-sentence": [1, 0.1], "chunk a less title": [0.9, 0.1],
               "chunk a less sentence": [1, 0], "q-b": [0, 1], "chunk b": [0.6, 0.8]}

    class Fixed:
        def encode(self, texts, **_):
            rows = np.array([vectors[t] for t in texts], dtype=float)
            return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    pairs = [Pair("q-title", "chunk a less title", "title", "a"), Pair("q-sentence", "chunk a less sentence",
             "sentence", "a"), Pair("q-b", "chunk b", "title", "b")]
    # q-title scores chunk a's other passage higher than its own: the same chunk, so no rival
    assert retrieval_scores(Fixed(), pairs) == {"accuracy@1": 1.0, "mrr@10": 1.0}
    pairs[1] = Pair("q-sentence", "chunk a less sentence", "sentence", "c")  # from other chunks, they are rivals
    assert retrieval_scores(Fixed(), pairs) == {"accuracy@1": 0.3333, "mrr@10": 0.6667}  # both first two rank 2nd
