"""Read a JSON, JSONL, CSV/TSV or Parquet data file into raw records that know their line.

Everything a user can get wrong about the *file* (wrong path, binary,
wrong encoding) is an `InhouseError` naming the file, because nothing in it
can be trusted. Everything wrong with one *example* is a `Problem` on its
record, so one bad line never hides the other 9,999.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from inhouse.data.conversation import Problem
from inhouse.errors import InhouseError
from inhouse.paths import shown

# A longer line is almost certainly not one training example; refusing to
# parse it keeps memory bounded when a file has no newlines at all. Memory
# follows the largest example (about 25 times its size through `data
# prepare`), never the file, so this is the knob: INHOUSE_MAX_EXAMPLE_MB.
MAX_LINE_BYTES = 16 * 1024 * 1024
LIMIT_ENV = "INHOUSE_MAX_EXAMPLE_MB"
SNIFF_BYTES = 8 * 1024

_BOM = b"\xef\xbb\xbf"
_JSON_WS = re.compile(r"[ \t\n\r]*")
# Formats people hand us by mistake, named so the fix is obvious.
_MAGIC = {
    b"\x1f\x8b": "gzip-compressed; decompress it first (gunzip)",
    b"PK\x03\x04": "a zip archive (an Excel .xlsx is one); unzip it, or export the sheet as CSV",
    b"PAR1": "a Parquet file; give it the .parquet extension so it is read as Parquet",
    b"\xff\xfe": "UTF-16 text; re-save it as UTF-8",
    b"\xfe\xff": "UTF-16 text; re-save it as UTF-8",
}


@dataclass(frozen=True)
class Record:
    """One raw example: its parsed JSON `value`, or the `problem` reading it.

    `value` may legitimately be None when the line is the JSON `null`;
    test `problem is None` to know whether the record parsed.
    """

    line: int
    value: Any | None = None
    problem: Problem | None = None
    raw: str | None = None  # the unparsed text of a record that is not valid JSON (what a PII scan reads)

    @property
    def ok(self) -> bool:
        return self.problem is None


def read_records(path: str | Path) -> Iterator[Record]:
    """Yield the records of a JSONL file, or of a JSON array file.

    The file-level checks run before the first record is yielded; a bad
    byte further down a JSONL file raises when iteration reaches it.
    """
    p = shown(path)  # as the user wrote it, so messages match their command line
    _check_is_file(Path(path))
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
        _check_not_binary(p, head)
        first = _first_significant_byte(f, head)
        f.seek(0)
        if first is None:
            raise InhouseError(f"{p}: the file is empty (or only whitespace); add one JSON example per line")
        if first == b"[":
            yield from _read_array(p, _read_whole(p, f))
        elif Path(path).suffix.lower() == ".json" and (whole := _one_object(f)) is not None:
            yield from _read_object(p, *whole)
        else:
            f.seek(0)
            yield from _read_jsonl(p, f)


WRAPPERS = ("data", "examples", "train", "rows", "records", "items", "conversations_list", "dataset")
EXAMPLE_KEYS = ("messages", "conversations")  # a one-key object with these is an example, not a wrapper
MAX_WHOLE_JSON = 256 * 1024 * 1024  # a .json object file is read at once: bounded


def _read_whole(p: str, f: BinaryIO) -> bytes:
    """A JSON array file is parsed at once, so its size is bounded; JSONL streams at any size."""
    data = f.read(MAX_WHOLE_JSON + 1)
    if len(data) > MAX_WHOLE_JSON:
        raise InhouseError(f"{p}: a JSON array over {MAX_WHOLE_JSON // 2**20} MiB is read at once; "
                           "convert it to JSONL (one example per line), which is streamed")
    return data


def _one_object(f: BinaryIO) -> tuple[str, dict] | None:
    """A .json file that is one JSON object (pretty-printed or not): its text and value; else None
    (several objects, one per line, are JSONL under another name)."""
    data = f.read(MAX_WHOLE_JSON + 1)
    if len(data) > MAX_WHOLE_JSON or b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return (text, value) if isinstance(value, dict) else None


def _read_object(p: str, text: str, value: dict) -> Iterator[Record]:
    """One example, or an object wrapping the list of examples ({"data": [...]}), read like a list."""
    key = next((k for k in WRAPPERS if isinstance(value.get(k), list)), None)
    only = next(iter(value), None)
    if key is None and len(value) == 1 and only not in EXAMPLE_KEYS and isinstance(value[only], list) \
            and all(isinstance(v, dict) for v in value[only]):
        key = only
    if key is None:
        yield Record(1 + text.count("\n", 0, len(text) - len(text.lstrip())), value=value)
        return
    found = re.search(r'"' + re.escape(key) + r'"\s*:\s*\[', text)
    start = found.end() - 1 if found else text.index("[")
    blanked = re.sub(r"[^\n]", " ", text[:start])  # line numbers stay those of the file
    yield from _read_array(p, (blanked + text[start:]).encode(), wrapped=True)


def _check_is_file(p: Path) -> None:
    try:
        _check_kind(p)
        if p.is_file():  # only now: opening a FIFO would wait for a writer
            open(p, "rb").close()
    except OSError as e:  # a folder on the way, or the file itself, that this user may not read
        raise InhouseError(f"{p}: cannot be read ({e.strerror or e}); check its permissions") from None


def _check_kind(p: Path) -> None:
    if p.is_dir():
        raise InhouseError(f"{p}: is a directory, not a data file; pass the .jsonl or .json file inside it")
    if not p.exists():
        raise InhouseError(f"{p}: no such file; check the path (relative paths start from {Path.cwd()})")
    if not p.is_file():
        raise InhouseError(f"{p}: is not a regular file; pass a .jsonl or .json file")


def _check_not_binary(p: str, head: bytes, kind: str = "JSON/JSONL") -> None:
    """Catch compressed/columnar/UTF-16 files before they become 10,000 JSON errors."""
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise InhouseError(f"{p}: looks like {what}")
    if b"\x00" in head:
        raise _binary_error(p, head.count(b"\n", 0, head.index(b"\x00")) + 1, kind)


def _binary_error(p: str, line: int, kind: str = "JSON/JSONL") -> InhouseError:
    what = "UTF-8 JSONL, one example per line" if kind == "JSON/JSONL" else f"UTF-8 {kind}"
    return InhouseError(
        f"{p}:{line}: contains NUL bytes, so it looks like binary, not {kind}; pass the text file ({what})"
    )


def _first_significant_byte(f: BinaryIO, head: bytes) -> bytes | None:
    """The first non-whitespace byte after any BOM, reading past `head` if needed."""
    chunk = head.removeprefix(_BOM)
    while chunk:
        stripped = chunk.lstrip()
        if stripped:
            return stripped[:1]
        chunk = f.read(SNIFF_BYTES)
    return None


def max_example_bytes() -> int:
    """The size limit of one line, CSV field or JSON array element: $INHOUSE_MAX_EXAMPLE_MB, else
    MAX_LINE_BYTES. Read at each use, so one run can raise it for one odd file."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    if not raw:
        return MAX_LINE_BYTES
    try:
        mb = float(raw)
    except ValueError:
        mb = 0.0
    if not 0 < mb < 1e6:
        raise InhouseError(f"{LIMIT_ENV}={raw!r}: give the largest example size in MB, e.g. 64")
    return int(mb * 1024 * 1024)


def limit_text() -> str:
    """The limit as a reader would quote it, with the way to raise it."""
    return f"{max_example_bytes()} bytes (the limit per example; raise it with {LIMIT_ENV}=MB)"


def _raw_lines(f: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, bytes without newline); None for a line over the limit.

    `readline` is bounded so a file without newlines never fills memory.
    """
    limit = max_example_bytes()
    lineno = 0
    while chunk := f.readline(limit + 2):
        lineno += 1
        if lineno == 1:
            chunk = chunk.removeprefix(_BOM)
        body = chunk.rstrip(b"\r\n") if chunk.endswith(b"\n") else chunk
        if len(body) > limit:
            if not chunk.endswith(b"\n"):
                _skip_rest_of_line(f)
            yield lineno, None
        else:
            yield lineno, body


def _skip_rest_of_line(f: BinaryIO) -> None:
    while (chunk := f.readline(1024 * 1024)) and not chunk.endswith(b"\n"):
        pass


def _read_jsonl(p: str, f: BinaryIO) -> Iterator[Record]:
    for lineno, raw in _raw_lines(f):
        if raw is None:
            yield _too_long(p, lineno)
            continue
        if not raw.strip():
            continue
        if b"\x00" in raw:
            raise _binary_error(p, lineno)
        yield _parse_line(p, lineno, _decode(p, raw, lineno))


def _too_long(p: str, lineno: int) -> Record:
    msg = f"line is longer than {limit_text()}, so it was not parsed; is this really one example per line?"
    return Record(lineno, problem=Problem("line_too_long", p, lineno, msg))


def _too_big(p: str, line: int) -> Record:
    """An array element or table row over the limit: dropped like a long line, so what follows it
    does not pay for it in every later step."""
    msg = f"example is longer than {limit_text()}, so it was not used"
    return Record(line, problem=Problem("line_too_long", p, line, msg))


def _decode(p: str, raw: bytes, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _encoding_error(p, lineno, e.start + 1, raw[e.start]) from None


def _encoding_error(p: str, lineno: int, column: int, byte: int) -> InhouseError:
    return InhouseError(
        f"{p}:{lineno}: byte 0x{byte:02x} at byte column {column} is not valid UTF-8; "
        "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )


def _parse_line(p: str, lineno: int, text: str) -> Record:
    try:
        return Record(lineno, value=json.loads(text))
    except json.JSONDecodeError as e:
        msg = f"{e.msg} at column {e.colno}"
        if text.strip() == "{":
            msg += " (pretty-printed JSON? JSONL needs one whole example per line)"
        return Record(lineno, problem=Problem("invalid_json", p, lineno, msg), raw=text)
    except RecursionError:
        msg = "JSON is nested too deeply to parse"
        return Record(lineno, problem=Problem("invalid_json", p, lineno, msg), raw=text)


def _read_array(p: str, data: bytes, wrapped: bool = False) -> Iterator[Record]:
    """Yield each element of a top-level JSON array with the line it starts on.

    After a syntax error there is no reliable way to find the next element,
    so the error is the last record.
    """
    if b"\x00" in data:
        raise _binary_error(p, data.count(b"\n", 0, data.index(b"\x00")) + 1)
    text = _decode_whole(p, data.removeprefix(_BOM))
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, text.index("[") + 1)
    line = 1 + text.count("\n", 0, pos)
    if text.startswith("]", pos):
        yield from () if wrapped else _check_trailing(p, text, pos + 1)
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            yield _array_error(p, e.lineno, f"{e.msg} at column {e.colno}", text[pos:])
            return
        except RecursionError:
            yield _array_error(p, line, "JSON is nested too deeply to parse", text[pos:])
            return
        yield _too_big(p, line) if end - pos > max_example_bytes() else Record(line, value=value)
        after = _skip_ws(text, end)
        if text.startswith("]", after):
            yield from () if wrapped else _check_trailing(p, text, after + 1)
            return
        if not text.startswith(",", after):
            eof = "the file ends before the array is closed: " if after == len(text) else ""
            yield _unexpected(p, text, after, f"{eof}expected ',' or ']'")
            return
        next_pos = _skip_ws(text, after + 1)
        if text.startswith("]", next_pos):
            yield _unexpected(p, text, next_pos, "trailing comma: expected a value")
            return
        line += text.count("\n", pos, next_pos)
        pos = next_pos


def _unexpected(p: str, text: str, pos: int, what: str) -> Record:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return _array_error(p, line, f"{what} at column {column}", text[pos:])


def _array_error(p: str, line: int, msg: str, rest: str | None = None) -> Record:
    """After a syntax error, the rest of the text is one unparsed record."""
    return Record(line, problem=Problem("invalid_json", p, line, msg), raw=rest)


def _decode_whole(p: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise _encoding_error(p, lineno, column, data[e.start]) from None


def _skip_ws(text: str, pos: int) -> int:
    return _JSON_WS.match(text, pos).end()  # type: ignore[union-attr]


def _check_trailing(p: str, text: str, pos: int) -> Iterator[Record]:
    end = _skip_ws(text, pos)
    if end < len(text):
        yield _unexpected(p, text, end, "unexpected data after the closing ']'")


# --- tables: CSV/TSV and Parquet ---------------------------------------------------

TABLE_KINDS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Table:
    """A tabular file's column names, and a way to read chosen columns.

    Columns are chosen after the header is known (the mapping depends on
    it), so Parquet files never load columns nobody asked for.
    """

    columns: tuple[str, ...]
    read: Callable[[Sequence[str]], Iterator[Record]]


def table_kind(path: str | Path) -> str | None:
    """'csv', 'tsv' or 'parquet' by extension; None for JSON/JSONL (sniffed by content)."""
    return TABLE_KINDS.get(Path(path).suffix.lower())


def read_table(path: str | Path) -> Table:
    """Open a .csv, .tsv or .parquet file; file-level faults raise InhouseError."""
    kind = table_kind(path)
    if kind == "parquet":
        return _read_parquet(path)
    return _read_csv(path, "\t" if kind == "tsv" else ",")


def _read_csv(path: str | Path, delimiter: str) -> Table:
    """Header now (so a bad file fails before any work), rows lazily."""
    p = shown(path)
    _check_is_file(Path(path))
    with open(path, "rb") as f:
        _check_not_binary(p, f.read(SNIFF_BYTES), "CSV")
    rows = _csv_rows(p, path, delimiter)
    first = next(rows, None)
    rows.close()
    if first is None:
        raise InhouseError(f"{p}: the file is empty; its first line must name the columns")
    header = _header(p, first[1])
    return Table(header, lambda cols: _csv_records(p, path, delimiter, header, cols))


def _header(p: str, row: list[str]) -> tuple[str, ...]:
    names = tuple(name.strip() for name in row)
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise InhouseError(f"{p}:1: column {name!r} appears twice in the header; rename one")
    return names


def _csv_records(
    p: str, path: str | Path, delimiter: str, header: tuple[str, ...], cols: Sequence[str]
) -> Iterator[Record]:
    """Each data row as {column: text}; a row of the wrong width is a Problem."""
    where = [header.index(c) for c in cols]
    rows = _csv_rows(p, path, delimiter)
    next(rows, None)  # the header
    for line, row in rows:
        if len(row) != len(header):
            msg = f"row has {len(row)} fields but the header has {len(header)} (an unquoted {delimiter!r}?)"
            yield Record(line, problem=Problem("invalid_row", p, line, msg), raw=delimiter.join(row))
        else:
            yield Record(line, value={c: row[i] for c, i in zip(cols, where, strict=True)})


def _csv_rows(p: str, path: str | Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(physical line the row starts on, fields) for each non-blank row.

    The field limit is raised to the line limit while reading, so long
    answers load but an unclosed quote cannot swallow the whole file.
    """
    old_limit = csv.field_size_limit(max_example_bytes())
    start = 1
    try:
        with open(path, "rb") as f:
            reader = csv.reader(_csv_lines(p, f), delimiter=delimiter, strict=True)
            for row in reader:
                if any(field.strip() for field in row):
                    yield start, row
                start = reader.line_num + 1
    except csv.Error as e:
        if "field limit" in str(e):
            raise InhouseError(f"{p}:{start}: a field is longer than {limit_text()}, or a quote in the row "
                               "starting here is never closed") from None
        raise InhouseError(f"{p}:{start}: not valid CSV: {e}; check the quotes in the row starting here") from None
    finally:
        csv.field_size_limit(old_limit)


def _csv_lines(p: str, f: BinaryIO) -> Iterator[str]:
    """Decoded lines, each ending in one \\n (CRLF and the BOM are dropped)."""
    for lineno, raw in _raw_lines(f):
        if raw is None:
            raise InhouseError(f"{p}:{lineno}: line is longer than {limit_text()}; is this really CSV?")
        if b"\x00" in raw:
            raise _binary_error(p, lineno, "CSV")
        yield _decode(p, raw, lineno) + "\n"


def _read_parquet(path: str | Path) -> Table:
    """Row numbers (from 1) stand in for line numbers."""
    import pyarrow.parquet as pq  # heavy; only Parquet users pay for it

    p = shown(path)
    _check_is_file(Path(path))
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a non-Parquet file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InhouseError(f"{p}: is not a readable Parquet file ({first})") from None
    return Table(tuple(pf.schema_arrow.names), lambda cols: _parquet_records(p, pf, cols))


def _parquet_records(p: str, pf: Any, cols: Sequence[str]) -> Iterator[Record]:
    line, limit = 0, max_example_bytes()
    for batch in pf.iter_batches(batch_size=256, columns=list(cols)):
        for value in batch.to_pylist():
            line += 1
            big = sum(len(v) for v in value.values() if isinstance(v, str | bytes)) > limit
            yield _too_big(p, line) if big else Record(line, value=value)
