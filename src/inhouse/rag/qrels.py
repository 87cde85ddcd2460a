"""Read relevance judgements and queries for `inhouse rag eval`, whatever format they come in.

Qrels: TREC (``qid 0 docid rel``), ``qid docid rel [score]``, lists of relevant
pairs, or Cranfield (``qid docid code``, codes 1-4 relevant with 1 the best, -1
not relevant); see `read_qrels`. All become ``{qid: {docid: gain}}`` where a
gain above 0 means relevant, so the metrics never need to know where the file
came from.

Queries: ``qid<TAB>text`` lines, JSONL/JSON with ``id``/``text`` (and ``title``), TREC
``<top>`` topics, or SMART (``cran.qry``). SMART query numbers are not
consecutive (001, 002, 004, ...) while ``cranqrel`` numbers the queries
1..225 in file order, so SMART queries are renumbered by position.

Every malformed line is one `InhouseError` naming ``file:line``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from inhouse.errors import InhouseError

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class SmartDoc:
    """One Cranfield document; ``text`` is the abstract (empty for a few documents)."""

    id: str
    title: str
    authors: str
    biblio: str
    text: str


@dataclass(frozen=True)
class Cranfield:
    """The whole test collection, with queries already numbered the way cranqrel numbers them."""

    docs: list[SmartDoc]
    queries: dict[str, str]
    qrels: Qrels


def _read(path: str | Path) -> str:
    """The file as text; a missing or non-UTF-8 file is the user's to fix, so say which."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InhouseError(f"{p}: no such file") from None
    except UnicodeDecodeError as e:
        raise InhouseError(f"{p}: not UTF-8 text (byte {e.start}); re-save it as UTF-8") from None


def _fail(path: str | Path, line: int | str, what: str, text: str) -> InhouseError:
    """``file:line: what, got 'text'`` on one line; ``line`` may be a label such as ``item 3``."""
    shown = " ".join(text.split())
    shown = shown[:60] + ("..." if len(shown) > 60 else "")
    where = f"{path}:{line}" if isinstance(line, int) else f"{path} ({line})"
    return InhouseError(f"{where}: {what}, got {shown!r}")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers (blank lines are padding in every format here)."""
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield n, line


# --- qrels ------------------------------------------------------------------------------------


def cranfield_gain(code: int) -> int:
    """Cleverdon's code 1 (complete answer) .. 4 (minimal interest) as gain 4..1; -1 or 5 -> 0."""
    return 5 - code if 1 <= code <= 4 else 0


QREL_FORMATS = ("trec", "cranfield", "plain", "pairs", "scored")


def read_qrels(path: str | Path, fmt: str | None = None) -> Qrels:
    """``{qid: {docid: gain}}`` from whichever judgement layout the file has:

    - ``trec``: ``qid iter docid rel`` (the iteration column is the same on every line);
    - ``scored``: ``qid docid rel score`` (as CISI and similar collections ship them);
    - ``pairs``: ``qid docid 0 0`` and the like: every listed pair is relevant (CACM, CISI .REL);
    - ``cranfield``: ``qid docid code`` with Cleverdon's codes (1 best .. 4, -1 not relevant);
    - ``plain``: ``qid docid rel`` with the relevance as is (BEIR's TSV, header line allowed).

    The layout is decided from all the lines (``fmt`` overrides); judged non-relevant docs stay with
    gain 0."""
    rows = [(n, line, line.split()) for n, line in _lines(_read(path))]
    if rows and len(rows[0][2]) >= 3 and not any(_is_number(c) for c in rows[0][2]):
        rows = rows[1:]  # a header such as "query-id corpus-id score"
    fmt = fmt or _qrels_layout(rows)
    qrels: Qrels = {}
    for n, line, cols in rows:
        qid, doc, grade = _qrel_fields(path, n, line, cols, fmt)
        qrels.setdefault(qid, {})[doc] = grade
    return qrels


def _is_int(text: str) -> bool:
    return re.fullmatch(r"-?\d+", text) is not None


def _is_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+(\.\d*)?", text) is not None


def _qrels_layout(rows: list[tuple[int, str, list[str]]]) -> str | None:
    """Decided by the first line's width, over the lines of that width (others then fail by line)."""
    if not rows:
        return None
    same = [cols for _, _, cols in rows if len(cols) == len(rows[0][2])]
    column = lambda i: {c[i] for c in same}  # noqa: E731
    if len(rows[0][2]) == 3:
        codes = column(2)
        return "plain" if "0" in codes or not codes <= {"-1", "1", "2", "3", "4", "5"} else "cranfield"
    if len(rows[0][2]) == 4:
        if column(1) <= {"0", "Q0", "q0"} or len(column(1)) == 1:
            return "trec"
        return "pairs" if len(column(2)) == 1 and len(column(3)) == 1 else "scored"
    return None


def _qrel_fields(path: str | Path, n: int, line: str, cols: list[str], fmt: str | None) -> tuple[str, str, int]:
    shapes = {"trec": "'qid 0 docid rel' (TREC qrels)", "cranfield": "'qid docid code' (Cranfield qrels)",
              "plain": "'qid docid rel'", "pairs": "'qid docid 0 0' (relevant pairs)", "scored": "'qid docid rel score'"}
    if fmt not in shapes or len(cols) != (3 if fmt in ("cranfield", "plain") else 4):
        expected = shapes.get(fmt, f"{shapes['trec']} or {shapes['cranfield']} or 'qid docid rel [score]'")
        raise _fail(path, n, f"expected {expected}", line)
    if fmt == "pairs":
        return cols[0], cols[1], 1
    rel = cols[2] if fmt == "scored" else cols[-1]
    if not _is_int(rel):
        raise _fail(path, n, "relevance must be a whole number", line)
    grade = int(rel)
    if fmt == "trec":
        return cols[0], cols[2], max(grade, 0)
    if fmt == "cranfield":
        return cols[0], cols[1], cranfield_gain(grade)
    return cols[0], cols[1], max(grade, 0)


# --- queries ----------------------------------------------------------------------------------


def read_queries(path: str | Path) -> dict[str, str]:
    """``{qid: text}`` in file order, from whichever query format the content shows."""
    text = _read(path)
    first = next((line.lstrip() for _, line in _lines(text)), "")
    if first.startswith(".I"):
        return parse_smart_queries(text, path)
    if first.startswith("<top>"):
        return _trec_topics(text, path)
    if first.startswith("["):
        return _json_queries(text, path)
    if first.startswith("{"):
        return _jsonl_queries(text, path)
    return _tsv_queries(text, path)


def _add(out: dict[str, str], qid: str, text: str, path: str | Path, n: int | str, line: str) -> None:
    """One query; an empty or repeated id would silently drop a query from the evaluation."""
    qid, text = str(qid).strip(), " ".join(str(text).split())
    if not qid or not text:
        raise _fail(path, n, "query needs an id and a text", line)
    if qid in out:
        raise _fail(path, n, f"query id {qid} appears twice", line)
    out[qid] = text


def _tsv_queries(text: str, path: str | Path) -> dict[str, str]:
    """``qid<TAB>text``; a line without a tab splits at its first space (``qid text``)."""
    out: dict[str, str] = {}
    for n, line in _lines(text):
        qid, _, rest = line.partition("\t") if "\t" in line else line.strip().partition(" ")
        _add(out, qid, rest, path, n, line)
    return out


def _query_obj(obj: object, path: str | Path, n: int | str, line: str) -> tuple[str, str]:
    """id/_id/qid and text/query: the spellings query files actually use; a record with several text
    fields (title and text, title and description) is searched with all of them, title first."""
    if not isinstance(obj, dict):
        raise _fail(path, n, 'expected an object like {"id": ..., "text": ...}', line)
    qid = next((obj[k] for k in ("id", "_id", "qid", "query_id", "num", "number") if k in obj), "")
    parts = [obj[k] for k in ("title", "text", "query", "description", "desc", "question") if obj.get(k)]
    return str(qid), ". ".join(str(p).strip().rstrip(".") for p in parts)


def _jsonl_queries(text: str, path: str | Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in _lines(text):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _fail(path, n, f"invalid JSON ({e.msg})", line) from None
        _add(out, *_query_obj(obj, path, n, line), path, n, line)
    return out


def _json_queries(text: str, path: str | Path) -> dict[str, str]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise InhouseError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    out: dict[str, str] = {}
    for i, obj in enumerate(items):
        where = f"item {i}"
        _add(out, *_query_obj(obj, path, where, json.dumps(obj)), path, where, json.dumps(obj))
    return out


_TOPIC = re.compile(r"<num>\s*(?:Number:)?\s*(\S+)(.*?)(?=<num>|\Z)", re.S)
_TITLE = re.compile(r"<title>\s*(?:Topic:)?(.*?)(?=<desc>|<narr>|</top>|\Z)", re.S)


def _trec_topics(text: str, path: str | Path) -> dict[str, str]:
    """Classic TREC topics: the ``<title>`` is the query, as in most published runs."""
    out: dict[str, str] = {}
    for m in _TOPIC.finditer(text):
        n = text.count("\n", 0, m.start()) + 1
        title = _TITLE.search(m.group(2))
        _add(out, m.group(1), title.group(1) if title else "", path, n, m.group(0)[:60])
    return out


# --- SMART (Cranfield) ------------------------------------------------------------------------


def _smart_records(text: str, path: str | Path) -> Iterator[tuple[int, str, dict[str, list[str]]]]:
    """(line, .I value, {field: lines}) per record; a field given twice is appended, as the data needs."""
    rec: dict[str, list[str]] | None = None
    start, ident, field = 0, "", ""
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith(".I"):
            if rec is not None:
                yield start, ident, rec
            rec, start, ident, field = {}, n, line[2:].strip(), ""
            if not ident:
                raise _fail(path, n, "'.I' needs a number", line)
        elif re.fullmatch(r"\.[A-Z]\s*", line):
            if rec is None:
                raise _fail(path, n, "field before the first '.I'", line)
            field = line[1]
            rec.setdefault(field, [])
        elif line.strip():
            if rec is None or not field:
                raise _fail(path, n, "text outside a '.T/.A/.B/.W' field", line)
            rec[field].append(line)
    if rec is not None:
        yield start, ident, rec


def _join(lines: list[str]) -> str:
    """Wrapped lines as one line."""
    return " ".join(" ".join(lines).split())


def _paragraphs(lines: list[str]) -> str:
    """Re-flow wrapped lines; a line indented by two or more spaces opens a new paragraph."""
    paras: list[list[str]] = []
    for line in lines:
        if not paras or line.startswith("  "):
            paras.append([])
        paras[-1].append(line)
    return "\n\n".join(_join(p) for p in paras)


def parse_smart_queries(text: str, path: str | Path = "<text>", renumber: bool = True) -> dict[str, str]:
    """``.I``/``.W`` queries; ``renumber`` numbers them 1..n by position, as cranqrel does."""
    out: dict[str, str] = {}
    for i, (n, ident, rec) in enumerate(_smart_records(text, path), 1):
        qid = str(i) if renumber else ident.lstrip("0") or "0"
        _add(out, qid, _join(rec.get("W", [])), path, n, f".I {ident}")
    return out


def parse_smart_docs(text: str, path: str | Path = "<text>") -> list[SmartDoc]:
    """Documents of a SMART collection (``cran.all.1400``), ids as written after ``.I``."""
    docs, seen = [], set()
    for n, ident, rec in _smart_records(text, path):
        if ident in seen:
            raise _fail(path, n, f"document id {ident} appears twice", f".I {ident}")
        seen.add(ident)
        docs.append(SmartDoc(ident, _join(rec.get("T", [])), _join(rec.get("A", [])),
                             _join(rec.get("B", [])), _paragraphs(rec.get("W", []))))
    return docs


def read_smart_docs(path: str | Path) -> list[SmartDoc]:
    return parse_smart_docs(_read(path), path)


def read_cranfield(folder: str | Path) -> Cranfield:
    """cran.all.1400, cran.qry and cranqrel from one folder, ready to evaluate."""
    folder = Path(folder)
    return Cranfield(read_smart_docs(folder / "cran.all.1400"), read_queries(folder / "cran.qry"),
                     read_qrels(folder / "cranqrel", fmt="cranfield"))


def doc_text(doc: SmartDoc, title: bool = True) -> str:
    """The text indexed for a document: title as the first line, then the abstract.

    Cranfield abstracts usually start by repeating the title; that repeat is
    kept as written, so ``title=False`` still leaves most titles in.
    """
    if not title:  # an empty abstract keeps its title, or the file would be empty and never indexed
        return (doc.text or doc.title).strip() + "\n"
    return f"{doc.title}\n\n{doc.text}".strip() + "\n"


def write_collection(docs: list[SmartDoc], out_dir: str | Path, title: bool = True) -> list[Path]:
    """One ``<id>.txt`` per document, so the normal ingest path indexes the collection.

    The file stem is the document id, which is how `metrics.doc_key` maps
    retrieved paths back to the ids used in qrels. Documents with neither
    title nor text (Cranfield 471 and 995) are left out: there is nothing to find.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for doc in (d for d in docs if d.title or d.text):
        path = out / f"{doc.id}.txt"
        path.write_text(doc_text(doc, title), encoding="utf-8")
        paths.append(path)
    return paths


def write_cranfield_folder(cranfield_dir: str | Path, out_dir: str | Path, title: bool = True) -> list[Path]:
    """Read ``cran.all.1400`` from ``cranfield_dir`` and write it as text files into ``out_dir``."""
    return write_collection(read_smart_docs(Path(cranfield_dir) / "cran.all.1400"), out_dir, title)
