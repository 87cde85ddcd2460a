"""RAFT training data: questions answered from a passage hidden among distractors (Zhang et al., 2024).

Each example shows a question with its oracle chunk (the one the answer comes from) shuffled among
distractors: hard negatives (the question's top hybrid-search hits) and random chunks. The target
answers, cites the oracle by its number and quotes it word for word, in the citation format `inhouse
ask` reads; the prompt is `build_messages`, the very function `ask` prompts with. A share of the
examples (1 - oracle_fraction, exactly the rounded count) shows distractors only and is taught to say
`REFUSAL`, as are questions marked `"answerable": false`. An example without the oracle shows one
distractor more, so the number of sources never tells the model whether the answer is there.

A distractor never holds the answer: the oracle chunk and every chunk containing the quote, in any
letter case (an overlapping chunk of the same document, or a copy elsewhere), are left out of both kinds.

Held out by document: a seeded share of the documents with questions is held out; their questions
go to heldout.jsonl (the QA format, for the RAG evaluation) and validation.jsonl (RAFT examples, for
validation loss), and train.jsonl holds no chunk of theirs, neither as oracle nor as distractor.

Every question that is not used (its document or quote cannot be found, a teacher's reply that is not
usable) is reported with file:line and the reason; none is dropped silently.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from inhouse import atomic, outputs
from inhouse.data.qa import QAItem, load_qa
from inhouse.data.raft_config import RaftConfig
from inhouse.errors import InvalidInputError, did_you_mean
from inhouse.events import Events, Stopped
from inhouse.generation import GenerationConfig
from inhouse.rag.answer import (REFUSAL, ChatModel, build_messages, content_words, find_quote, quoted_answer,
                                quoted_spans, supporting_span)
from inhouse.rag.chunk import Chunk
from inhouse.rag.store import Store, open_kb, resolve_kb, sql_literal

OUTPUT_KIND = "RAFT data"
SEARCH_SLACK = 10  # hits asked for beyond the hard negatives wanted: some are the oracle or hold the quote
RANDOM_POOL = 1000  # chunks random distractors are drawn from (one seeded sample per split)
LOOKUP_BATCH = 500  # documents or chunk ids per query when reading the questions' chunks
TEACHER_PROMPT = (
    "You write exam questions about a passage. Write one question that the passage answers, its short "
    "answer, and the sentence of the passage that gives the answer, copied word for word. Reply with JSON "
    'only: {"question": "...", "answer": "...", "quote": "..."}'
)
TEACHER_GENERATION = GenerationConfig(max_new_tokens=256)


@dataclass(frozen=True)
class Located:
    """A question with the chunk its answer comes from and the exact words of that chunk it rests on;
    an unanswerable question has neither."""

    item: QAItem
    chunk: Chunk | None = None
    quote: str = ""


@dataclass(frozen=True)
class Example:
    """One RAFT example: `oracle` is the oracle's 1-based place among `passages`, None when it is absent;
    `quote` the exact words of the oracle chunk the answer rests on, shown or not ("" when unanswerable)."""

    item: QAItem
    passages: tuple[Chunk, ...]
    oracle: int | None
    messages: tuple[dict[str, str], ...]
    quote: str = ""

    def record(self) -> dict[str, Any]:
        """A chat JSONL line; `metadata` is a key the chat reader keeps as harmless metadata."""
        oracle = self.passages[self.oracle - 1] if self.oracle else None
        return {"messages": list(self.messages), "metadata": {
            "question_at": self.item.where, "oracle": self.oracle, "doc_path": oracle.doc_path if oracle else None,
            "chunk_ids": [p.chunk_id for p in self.passages]}}


@dataclass
class RaftReport:
    """What went in, what came out, and every question left out with its reason (`where`: file:line)."""

    kb: str
    config: dict[str, Any]
    questions_read: int = 0
    generated: dict[str, int] = field(default_factory=dict)
    used: int = 0
    dropped: list[dict[str, str]] = field(default_factory=list)
    documents: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    distractors: dict[str, dict[int, int]] = field(default_factory=dict)


@dataclass
class RaftData:
    train: list[Example]
    validation: list[Example]
    heldout: list[QAItem]
    report: RaftReport


def build_raft(config: RaftConfig, events: Events | None = None, teacher: ChatModel | None = None,
               embedder: Any = None) -> RaftData:
    """RAFT examples for the questions of `config` in memory; nothing is written (`write_raft` does).

    `teacher` answers `reply(messages, config)` (default: `config.teacher` loaded like `inhouse chat`
    loads a model); `embedder` defaults to the knowledge base's own."""
    events = events or Events()
    store = open_kb(config.kb)
    report = RaftReport(str(config.kb), config.model_dump(mode="json"))
    items = _questions(config, store, events, teacher, report)
    events.say(f"raft: finding the oracle chunk of {len(items)} questions")
    located = _locate_all(items, store, events, report)
    held = heldout_documents(located, config.heldout_fraction, config.seed)
    train_q, held_q = _partition(located, held, config)
    events.say(f"raft: {len(train_q)} training and {len(held_q)} held-out questions ({len(held)} held-out documents)")
    maker = _Maker(store, embedder, config, events)
    train = maker.examples(train_q, "train", exclude=held)
    validation = maker.examples(held_q, "validation", exclude=set())
    heldout = [replace(q.item, doc_path=q.chunk.doc_path, quote=q.quote) if q.chunk else q.item for q in held_q]
    _summarise(report, located, held, {"train": train, "validation": validation}, heldout)
    return RaftData(train, validation, heldout, report)


# --- questions -------------------------------------------------------------------------------


def _questions(config: RaftConfig, store: Store, events: Events, teacher: ChatModel | None,
               report: RaftReport) -> list[QAItem]:
    """The questions file's items (any bad line fails the run, one line each), then the teacher's."""
    items = load_qa(config.questions) if config.questions else []
    report.questions_read = len(items)
    if config.generate:
        events.say(f"raft: {config.teacher} writes questions for {config.generate} sampled chunks")
        teacher = teacher or _load_teacher(config.teacher)
        made, rejected = generate_questions(store, teacher, config.generate, config.seed, events)
        report.generated = {"asked": len(made) + len(rejected), "kept": len(made), "rejected": len(rejected)}
        report.dropped += rejected
        items += made
    return items


def _load_teacher(ref: str | None) -> ChatModel:
    from inhouse.adapters.load import load_chat_model

    return load_chat_model(str(ref))


def generate_questions(store: Store, teacher: ChatModel, n: int, seed: int = 0,
                       events: Events | None = None) -> tuple[list[QAItem], list[dict[str, str]]]:
    """A question, answer and quote written by `teacher` for each of `n` sampled chunks; a reply is kept
    only when it is the JSON asked for and its quote occurs in the chunk. Returns (kept, rejected)."""
    events = events or Events()
    chunks = store.sample(n, seed)
    kept, rejected = [], []
    for i, chunk in enumerate(chunks, 1):
        _check_stop(events)
        where = f"teacher:{i} ({chunk.doc_path}, chars {chunk.start}-{chunk.end})"
        messages = [{"role": "system", "content": TEACHER_PROMPT},
                    {"role": "user", "content": f"Passage:\n{chunk.text.strip()}"}]
        made = parse_generated(teacher.reply(messages, TEACHER_GENERATION), chunk, where)
        (kept if isinstance(made, QAItem) else rejected).append(made)
        events.log("progress", done=i, total=len(chunks), unit="chunks")
    return kept, [{"where": where, "reason": reason} for where, reason in rejected]


def parse_generated(reply: str, chunk: Chunk, where: str) -> QAItem | tuple[str, str]:
    """A teacher's reply as a question about `chunk`, or (where, why it was rejected)."""
    start, end = reply.find("{"), reply.rfind("}")
    try:
        value = json.loads(reply[start:end + 1]) if 0 <= start < end else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        return where, f"the reply is not a JSON object: {_excerpt(reply)}"
    text = {k: value.get(k) for k in ("question", "answer", "quote")}
    missing = [k for k, v in text.items() if not isinstance(v, str) or not v.strip()]
    if missing:
        return where, f"the reply has no {', '.join(missing)}"
    span = find_quote(chunk.text, text["quote"])
    if span is None:
        return where, f"the quote is not in the chunk: {_excerpt(text['quote'])}"
    return QAItem(text["question"].strip(), text["answer"].strip(), where, chunk.doc_path, chunk.chunk_id,
                  chunk.text[span[0]:span[1]])


def _excerpt(text: str | None, limit: int = 80) -> str:
    flat = " ".join((text or "").split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


# --- the oracle of each question -------------------------------------------------------------


def _locate_all(items: list[QAItem], store: Store, events: Events, report: RaftReport) -> list[Located]:
    finder = _Finder(store, items)
    located = []
    for i, item in enumerate(items, 1):
        _check_stop(events)
        found = finder.locate(item)
        found = _reads_back(found) if isinstance(found, Located) else found
        if isinstance(found, str):
            report.dropped.append({"where": item.where, "reason": found})
        else:
            located.append(found)
        events.log("progress", done=i, total=len(items), unit="questions located")
    report.used = len(located)
    return located


class _Finder:
    """Finds each question's oracle chunk and quote. The chunks of the documents and the chunk ids the
    questions name are read up front, LOOKUP_BATCH names per query, not one query per question."""

    def __init__(self, store: Store, items: list[QAItem]):
        self.store, self.by_doc, self.by_id = store, {}, {}
        wanted = [i for i in items if i.answerable]
        for c in self._read("chunk_id", {i.chunk_id for i in wanted if i.chunk_id}):
            self.by_id[c.chunk_id] = c
        for c in self._read("doc_path", {i.doc_path for i in wanted if i.doc_path and not i.chunk_id}):
            self.by_doc.setdefault(c.doc_path, []).append(c)
        for chunks in self.by_doc.values():
            chunks.sort(key=lambda c: c.start)

    def _read(self, key: str, values: set[str]) -> list[Chunk]:
        names = sorted(values)
        batches = (names[k:k + LOOKUP_BATCH] for k in range(0, len(names), LOOKUP_BATCH))
        return [c for batch in batches for c in self.store.chunks({key: batch})]

    def locate(self, item: QAItem) -> Located | str:
        """The question with its oracle, or why it has none."""
        if not item.answerable:
            return Located(item)
        if item.chunk_id:
            chunk = self.by_id.get(item.chunk_id)
            if chunk is None:
                return (f"chunk_id {item.chunk_id!r} is not in the knowledge base (re-indexed since the file was "
                        "written?)")
            return _with_quote(item, chunk) or f"the quote is not in chunk {item.chunk_id}: {_excerpt(item.quote)}"
        chunks = self.by_doc.get(str(item.doc_path))
        if not chunks:
            known = list(self.store.manifest())
            return f"doc_path {item.doc_path!r} is not in the knowledge base{did_you_mean(str(item.doc_path), known)}"
        return _in_document(item, chunks)


def _in_document(item: QAItem, chunks: list[Chunk]) -> Located | str:
    """The first chunk holding the quote; without one, the first holding the answer word for word, else
    the one sharing most words with it."""
    if item.quote:
        found = next((hit for c in chunks if (hit := _with_quote(item, c))), None)
        return found or f"the quote is in no chunk of {item.doc_path}: {_excerpt(item.quote)}"
    chunk = next((c for c in chunks if find_quote(c.text, item.answer)), None)
    if chunk is None:
        words = content_words(item.answer)
        chunk = max(chunks, key=lambda c: len(words & content_words(c.text)))
    return _with_quote(item, chunk) or f"the answer shares no word with any chunk of {item.doc_path}"


def _with_quote(item: QAItem, chunk: Chunk) -> Located | None:
    """The question with `chunk` as oracle and the exact words quoted from it: the given quote, or the
    sentence the answer rests on; None when the chunk does not hold them."""
    span = find_quote(chunk.text, item.quote) if item.quote else supporting_span(chunk.text, item.answer)
    return Located(item, chunk, chunk.text[span[0]:span[1]]) if span else None


def _reads_back(located: Located) -> Located | str:
    """The target must give back exactly its one quote, as `ask` reads quotes (an answer holding a line
    like `[3] "..."` would not)."""
    if located.chunk is None or quoted_spans(target(located, 1)) == [(1, " ".join(located.quote.split()))]:
        return located
    return "the answer holds a quote line of its own ([n] \"...\"): the target would not read back its quote"


def cite(answer: str, n: int) -> str:
    """`answer` citing source n before its closing punctuation: 'Every 6 months [2].'"""
    body, end = re.fullmatch(r"(.*?)([.!?]*)", answer.strip(), re.S).groups()
    return f"{body.rstrip()} [{n}]{end}"


def target(located: Located, n: int | None) -> str:
    """What the model should answer: the cited answer and the quote of source n, or the refusal."""
    if n is None or located.chunk is None:
        return REFUSAL
    return quoted_answer(cite(located.item.answer, n), [(n, located.quote)])


# --- held out by document ---------------------------------------------------------------------


def heldout_documents(located: list[Located], fraction: float, seed: int) -> set[str]:
    """A seeded round(fraction x documents) of the documents with an answerable question; at least one
    when the fraction is above 0, and never all of them."""
    docs = sorted({q.chunk.doc_path for q in located if q.chunk})
    count = min(len(docs) - 1, max(1, round(fraction * len(docs)))) if fraction > 0 else 0
    return set(random.Random(seed).sample(docs, max(0, count)))


def _partition(located: list[Located], held: set[str], config: RaftConfig) -> tuple[list[Located], list[Located]]:
    """Questions go where their document goes; an unanswerable one without a split document is held out
    by a seeded draw of the same share."""
    docs = {q.chunk.doc_path for q in located if q.chunk}

    def doc(q: Located) -> str | None:
        path = q.chunk.doc_path if q.chunk else q.item.doc_path
        return path if path in docs else None

    loose = [i for i, q in enumerate(located) if doc(q) is None]
    drawn = set(random.Random(f"{config.seed}:unanswerable").sample(loose, round(config.heldout_fraction * len(loose))))
    is_held = [doc(q) in held if doc(q) else i in drawn for i, q in enumerate(located)]
    return [q for q, h in zip(located, is_held) if not h], [q for q, h in zip(located, is_held) if h]


# --- examples ----------------------------------------------------------------------------------


class _Maker:
    """Builds the examples of one split: the oracle draw, distractors and passage order, all seeded."""

    def __init__(self, store: Store, embedder: Any, config: RaftConfig, events: Events):
        self.store, self._embedder, self.config, self.events = store, embedder, config, events

    @property
    def embedder(self) -> Any:
        """The knowledge base's own embedder, loaded at the first search (random distractors need none)."""
        if self._embedder is None:
            from inhouse.rag.embed import load_embedder

            self._embedder = load_embedder(self.store.meta()["embedder_name"])
        return self._embedder

    def examples(self, located: list[Located], split: str, exclude: set[str]) -> list[Example]:
        rng = random.Random(f"{self.config.seed}:{split}")
        answerable = [i for i, q in enumerate(located) if q.chunk]
        shown_oracle = set(rng.sample(answerable, round(self.config.oracle_fraction * len(answerable))))
        where = f"doc_path NOT IN ({', '.join(map(sql_literal, sorted(exclude)))})" if exclude else None
        pool = self.store.sample(RANDOM_POOL, self.config.seed, where) if located else []
        out = []
        for i, q in enumerate(located):
            _check_stop(self.events)
            out.append(self.example(q, i in shown_oracle, where, pool, rng))
            self.events.log("progress", done=i + 1, total=len(located), unit=f"{split} examples")
        return out

    def example(self, q: Located, with_oracle: bool, where: str | None, pool: list[Chunk],
                rng: random.Random) -> Example:
        n = self.config.distractors + (0 if with_oracle else 1)
        passages = self.distractors(q, n, where, pool, rng) + ([q.chunk] if with_oracle else [])
        rng.shuffle(passages)
        oracle = passages.index(q.chunk) + 1 if with_oracle else None
        messages = build_messages(q.item.question, passages)
        return Example(q.item, tuple(passages), oracle,
                       (*messages, {"role": "assistant", "content": target(q, oracle)}), q.quote)

    def distractors(self, q: Located, n: int, where: str | None, pool: list[Chunk],
                    rng: random.Random) -> list[Chunk]:
        """Hard negatives (the top hits) and random chunks; random ones fill a shortfall of hard ones, and
        further hits one of random ones (a small knowledge base)."""
        n_hard = n - min(self.config.random_distractors, n)
        hard = [c for c in self.hard_negatives(q, n_hard + SEARCH_SLACK, where) if _fair(c, q)] if n_hard else []
        chosen = hard[:n_hard]
        ids = {c.chunk_id for c in chosen}
        spare = [c for c in pool if c.chunk_id not in ids and _fair(c, q)]
        chosen += rng.sample(spare, min(n - len(chosen), len(spare)))
        ids = {c.chunk_id for c in chosen}
        return chosen + [c for c in hard if c.chunk_id not in ids][:n - len(chosen)]

    def hard_negatives(self, q: Located, k: int, where: str | None) -> list[Chunk]:
        from inhouse.rag.search import search

        hits = search(self.store, q.item.question, k=min(k, 200), mode="hybrid", where=where, embedder=self.embedder)
        return [h.chunk for h in hits]


def _fair(chunk: Chunk, q: Located) -> bool:
    """A chunk may be a distractor: it is not the oracle and does not hold the quote (in any case: a copy
    that starts a sentence differently still gives the answer away)."""
    if q.chunk is None:
        return True
    return chunk.chunk_id != q.chunk.chunk_id and find_quote(chunk.text.lower(), q.quote.lower()) is None


def _check_stop(events: Events) -> None:
    if events.should_stop():
        raise Stopped("RAFT data stopped on request; nothing was written")


# --- report and writing --------------------------------------------------------------------------


def _summarise(report: RaftReport, located: list[Located], held: set[str], splits: dict[str, list[Example]],
               heldout: list[QAItem]) -> None:
    docs = {q.chunk.doc_path for q in located if q.chunk}
    report.documents = {"with_questions": len(docs), "train": len(docs - held), "heldout": sorted(held)}
    for name, examples in splits.items():
        report.splits[name] = {
            "examples": len(examples), "with_oracle": sum(e.oracle is not None for e in examples),
            "without_oracle": sum(e.oracle is None and e.item.answerable for e in examples),
            "unanswerable": sum(not e.item.answerable for e in examples)}
        counts = Counter(len(e.passages) - (e.oracle is not None) for e in examples)
        report.distractors[name] = dict(sorted(counts.items()))
    report.splits["heldout_questions"] = {"questions": len(heldout)}


def claim_output(out: str | Path, config: RaftConfig, overwrite: bool = False) -> outputs.Output:
    """Check `out` before any work: never inside the questions file or the knowledge base, never a folder
    inhouse did not write."""
    return outputs.claim(out, OUTPUT_KIND, [config.questions, resolve_kb(config.kb)], overwrite)


def write_raft(data: RaftData, out: str | Path | outputs.Output, overwrite: bool = False) -> Path:
    """train.jsonl, validation.jsonl, heldout.jsonl and report.json, appearing at `out` all at once."""
    if not data.train:
        raise InvalidInputError(f"no training example: {_why_none(data.report)}; nothing was written")
    target_ = out if isinstance(out, outputs.Output) else outputs.claim(out, OUTPUT_KIND, [], overwrite)

    def write(folder: Path) -> None:
        lines = {"train": [e.record() for e in data.train], "validation": [e.record() for e in data.validation],
                 "heldout": [q.as_json() for q in data.heldout]}
        for name, rows in lines.items():
            (folder / f"{name}.jsonl").write_text("".join(atomic.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (folder / "report.json").write_text(atomic.dumps(asdict(data.report), indent=2), encoding="utf-8")

    return target_.write(write)


def _why_none(report: RaftReport) -> str:
    if report.dropped:
        first = report.dropped[0]
        return f"{len(report.dropped)} question(s) dropped, e.g. {first['where']}: {first['reason']}"
    return "every question's document is held out (lower --heldout-fraction or add questions)"


def describe(report: RaftReport) -> str:
    """A few lines for the terminal: what was read, kept and written."""
    train, valid = report.splits.get("train", {}), report.splits.get("validation", {})
    generated = (f", {report.generated['kept']} of {report.generated['asked']} teacher questions kept"
                 if report.generated else "")
    lines = [f"{report.questions_read} questions read{generated}; {report.used} used, {len(report.dropped)} dropped",
             f"train {train.get('examples', 0)} examples ({train.get('with_oracle', 0)} with the oracle, "
             f"{train.get('without_oracle', 0)} without, {train.get('unanswerable', 0)} unanswerable); "
             f"validation {valid.get('examples', 0)}; held-out documents {len(report.documents.get('heldout', []))}, "
             f"questions {report.splits.get('heldout_questions', {}).get('questions', 0)}"]
    lines += [f"dropped {d['where']}: {d['reason']}" for d in report.dropped[:5]]
    more = len(report.dropped) - 5
    return "\n".join(lines + ([f"... and {more} more (report.json)"] if more > 0 else []))


__all__ = ["Example", "RaftConfig", "RaftData", "RaftReport", "build_raft", "claim_output", "describe",
           "generate_questions", "heldout_documents", "parse_generated", "target", "write_raft"]
