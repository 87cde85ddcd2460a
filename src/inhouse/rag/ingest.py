"""Turn a folder of txt/md/html/pdf/docx files into plain-text `Document`s.

`Document.text` is exactly what a citation quotes: section offsets here and
chunk offsets later index into it, so nothing downstream may re-normalise
it. Markdown and plain text keep their source characters (offsets are into
the decoded file, minus a BOM); HTML, PDF and DOCX are rendered to text once,
here, with headings (or pages) recorded as `Section`s.

One unreadable file becomes a `skipped` entry with a reason; it never costs
the rest of the folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from inhouse import paths
from inhouse.errors import InhouseError

DEFAULT_PATTERNS = (
    "**/*.txt", "**/*.md", "**/*.markdown", "**/*.html", "**/*.htm", "**/*.pdf", "**/*.docx",
)
FORMATS = {
    ".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md",
    ".html": "html", ".htm": "html", ".pdf": "pdf", ".docx": "docx",
}
# Far beyond a real document's text; a bigger file is skipped with its reason
# before it is read (a 200 MB text file was killed on memory while chunking
# and embedding). INHOUSE_MAX_DOCUMENT_MB raises it for one run.
MAX_BYTES = 64 * 1024 * 1024
LIMIT_ENV = "INHOUSE_MAX_DOCUMENT_MB"
_SNIFF_BYTES = 8 * 1024
_BLOCK_SEP = "\n\n"
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True)
class Section:
    """A span `text[start:end]` under one heading path; chunks never cross one.

    `page` is the 1-based PDF page the span comes from (None for other formats).
    """

    start: int
    end: int
    heading_path: tuple[str, ...] = ()
    page: int | None = None


@dataclass
class Document:
    """One source file as quotable plain text plus the metadata an index needs."""

    path: str
    title: str
    text: str
    mtime: float
    sha256: str  # of the raw file bytes, so re-indexing can skip unchanged files
    format: str
    sections: list[Section]


@dataclass
class IngestResult:
    documents: list[Document]
    skipped: list[tuple[str, str]]  # (path, one-line reason)


class UnreadableDocument(InhouseError):
    """A file that cannot be ingested; `reason` says why without repeating the path."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot ingest {path}: {reason}")
        self.path = str(path)
        self.reason = reason


class _Unreadable(Exception):
    """Raised by the format parsers, which do not know the path; becomes UnreadableDocument."""


class _Block(NamedTuple):
    """A run of rendered text; `level` is its heading level (None for body text)."""

    text: str
    level: int | None = None
    sep: str = _BLOCK_SEP  # what separates it from the block before


class _Parsed(NamedTuple):
    text: str
    sections: list[Section]
    title: str | None


def discover(root: str | Path, patterns: Sequence[str] = DEFAULT_PATTERNS, follow_links: bool = False) -> list[Path]:
    """The files `scan_folder` would read (the skipped ones left out)."""
    return scan_folder(root, patterns, follow_links)[0]


def scan_folder(root: str | Path, patterns: Sequence[str] = DEFAULT_PATTERNS,
                follow_links: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files under `root` matching `patterns` (case-insensitive), sorted; and (path, reason) of those skipped.

    Walks the tree once and prunes hidden folders (.git, .venv) rather than
    globbing into them; hidden files and Office lock files (~$x.docx) are
    ignored because they are never documents. A matching name is skipped, with
    its reason, when it is not a regular file (a FIFO would block forever), when
    it is a link leading out of `root` (unless `follow_links`), or when its name
    is not valid UTF-8 (it could be neither stored nor cited). A file `root` is
    returned as is.
    """
    root = Path(root)
    if root.is_file():
        return [root], []
    if not root.is_dir():
        raise InhouseError(f"{root}: no such folder; pass the folder that holds your documents")
    regexes = [_glob_regex(p) for p in patterns]
    inside = Path(os.path.realpath(root))
    found, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_links):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        skipped += [(Path(dirpath, d), why) for d in dirnames
                    if (why := _link_problem(Path(dirpath, d), inside, follow_links))]
        for name in filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if name.startswith((".", "~$")) or not any(r.fullmatch(rel) for r in regexes):
                continue
            why = _link_problem(path, inside, follow_links) or _file_problem(path, rel)
            (skipped.append((path, why)) if why else found.append(path))
    return sorted(found), sorted(skipped)


def _link_problem(path: Path, inside: Path, follow_links: bool) -> str | None:
    """Why a link cannot be followed, or None (not a link, a link within the folder, or following allowed)."""
    if follow_links or not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    if target == inside or inside in target.parents:
        return None
    return f"is a link to {paths.shown(target)}, outside the folder; pass --follow-links to index it"


def _file_problem(path: Path, rel: str) -> str | None:
    if not paths.is_utf8_name(rel):
        return "its name is not valid UTF-8; rename it to index it"
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None if stat.S_ISREG(mode) else "is not a regular file (a pipe, socket or device)"


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob with `**`, `*` and `?` as a regex (Python 3.11 has no glob.translate)."""
    wild = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
    return re.compile("".join(wild.get(p, re.escape(p)) for p in parts), re.IGNORECASE)


def ingest(root: str | Path, patterns: Sequence[str] = DEFAULT_PATTERNS) -> IngestResult:
    """Load every document under `root`; a bad file is skipped with its reason, never fatal."""
    found, skipped = scan_folder(root, patterns)
    result = IngestResult(documents=[], skipped=[(paths.shown(p), why) for p, why in skipped])
    for path in found:
        try:
            result.documents.append(load_document(path))
        except UnreadableDocument as e:
            result.skipped.append((str(path), e.reason))
        except Exception as e:  # a parser bug on one odd file must not lose the other files
            result.skipped.append((str(path), f"unexpected {type(e).__name__}: {_one_line(e)}"))
    return result


def load_document(path: str | Path) -> Document:
    """Read one file into a Document, or raise UnreadableDocument saying why."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        supported = ", ".join(sorted(set(FORMATS)))
        raise UnreadableDocument(path, f"unsupported file type {path.suffix or '(none)'}; supported: {supported}")
    data, mtime = _read_bytes(path)
    try:
        parsed = _PARSERS[fmt](data)
    except _Unreadable as e:
        raise UnreadableDocument(path, str(e)) from None
    if not parsed.text.strip():
        raise UnreadableDocument(path, "contains no text")
    title = " ".join((parsed.title or "").split()) or path.stem
    return Document(
        path=str(path), title=title, text=parsed.text, mtime=mtime,
        sha256=hashlib.sha256(data).hexdigest(), format=fmt, sections=parsed.sections,
    )


def max_document_bytes() -> int:
    """MAX_BYTES, or $INHOUSE_MAX_DOCUMENT_MB; read at each use."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    try:
        mb = float(raw) if raw else MAX_BYTES / 2**20
    except ValueError:
        mb = 0.0
    if not 0 < mb < 1e6:
        raise InhouseError(f"{LIMIT_ENV}={raw!r}: give the largest document size in MB, e.g. 512")
    return int(mb * 2**20)


def _read_bytes(path: Path) -> tuple[bytes, float]:
    """Opened without blocking and checked on the open file: a FIFO (or a link to one, or to
    /dev/zero) is refused instead of waiting for a writer or reading forever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise UnreadableDocument(path, f"cannot be read ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableDocument(path, "is not a regular file (a pipe, socket or device)")
        limit = max_document_bytes()
        if info.st_size > limit:
            raise UnreadableDocument(path, f"is {info.st_size / 2**20:.0f} MiB, over the {limit / 2**20:.0f} MiB "
                                     f"limit; split it, or raise {LIMIT_ENV}")
        return _read_at_most(path, f, limit), info.st_mtime


def _read_at_most(path: Path, f: io.BufferedReader, limit: int) -> bytes:
    """The file grown since fstat is caught too."""
    try:
        data = f.read(limit + 1)
    except OSError as e:
        raise UnreadableDocument(path, f"cannot be read ({e.strerror or e})") from None
    if len(data) > limit:
        raise UnreadableDocument(path, f"is over the {limit / 2**20:.0f} MiB limit; split it, or raise {LIMIT_ENV}")
    return data


def _one_line(error: BaseException, limit: int = 200) -> str:
    """An exception as one short line: library messages can be multi-line and huge."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- text and markdown --------------------------------------------------------


def _decode_text(data: bytes) -> str:
    """UTF-8 (BOM optional) or BOM-marked UTF-16; anything else is refused, never guessed.

    A wrong guess would silently corrupt every quote taken from the file, so a
    latin-1 or cp1252 file is reported for re-saving instead.
    """
    if data.startswith(_UTF16_BOMS):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise _Unreadable("starts with a UTF-16 mark but is not valid UTF-16") from None
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise _Unreadable("contains NUL bytes: a binary file, or UTF-16 without a BOM; save it as UTF-8 text")
    skip = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = e.start + skip
        raise _Unreadable(f"is not UTF-8 (byte 0x{data[at]:02x} at offset {at}); re-save it as UTF-8") from None


def _parse_text(data: bytes) -> _Parsed:
    text = _decode_text(data)
    return _Parsed(text, [Section(0, len(text))] if text.strip() else [], None)


_NEWLINE = re.compile(r"\r\n?|\n")  # what markdown-it counts as a line break
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)
_FRONT_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*\r?$", re.MULTILINE)


def _parse_markdown(data: bytes) -> _Parsed:
    """Markdown source as the text; CommonMark headings (not `#` lines in code) cut sections."""
    from markdown_it import MarkdownIt

    text = _decode_text(data)
    front = _FRONT_MATTER.match(text)
    body = front.end() if front else 0
    # Blank out YAML front matter (its closing --- would read as a heading
    # underline) while keeping line numbers aligned with `text`.
    masked = "\n" * len(_NEWLINE.findall(text, 0, body)) + text[body:]
    line_starts = [0, *(m.end() for m in _NEWLINE.finditer(text))]
    tokens = MarkdownIt("commonmark").parse(masked)
    marks = [
        (line_starts[tok.map[0]], int(tok.tag[1]), _inline_text(nxt))
        for tok, nxt in zip(tokens, tokens[1:])
        if tok.type == "heading_open" and tok.level == 0 and tok.map
    ]
    fm_title = _FRONT_TITLE.search(front.group(1) or "") if front else None
    title = fm_title.group(1).strip("\"'") if fm_title else _first_heading(marks)
    return _Parsed(text, _sections(text, marks, begin=body), title)


def _inline_text(token) -> str:
    """Plain text of a markdown-it inline token (emphasis and links unwrapped)."""
    pieces = [
        c.content if c.type in ("text", "code_inline") else " "
        for c in token.children or ()
        if c.type in ("text", "code_inline", "softbreak", "hardbreak")
    ]
    return " ".join("".join(pieces).split())


def _first_heading(marks: Iterable[tuple[int, int, str]], level: int = 1) -> str | None:
    return next((heading for _, lvl, heading in marks if lvl == level and heading), None)


def _first_block(blocks: Iterable[_Block], level: int) -> str | None:
    """Text of the first heading block at `level` (0 is a docx Title paragraph)."""
    return next((b.text for b in blocks if b.level == level), None)


def _sections(text: str, marks: Sequence[tuple[int, int, str]], begin: int = 0) -> list[Section]:
    """Cut `text[begin:]` at each (offset, level, heading); a heading's path is its open ancestors plus itself."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    start, path = begin, ()
    for offset, level, heading in [*marks, (len(text), -1, "")]:
        if offset > start and text[start:offset].strip():
            sections.append(Section(start, offset, path))
        start = max(start, offset)
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        path = tuple(h for _, h in stack if h)
    return sections


def _join_blocks(blocks: Iterable[_Block]) -> tuple[str, list[Section]]:
    """Join blocks, each after its separator; heading blocks cut sections."""
    parts, marks, offset = [], [], 0
    for block in blocks:
        if parts:
            parts.append(block.sep)
            offset += len(block.sep)
        if block.level is not None:
            marks.append((offset, block.level, " ".join(block.text.split())))
        parts.append(block.text)
        offset += len(block.text)
    joined = "".join(parts)
    return joined, _sections(joined, marks)


# --- html ---------------------------------------------------------------------

_HTML_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_HTML_SKIP = frozenset("script style noscript template head svg canvas iframe object".split())
_HTML_BLOCKS = frozenset(
    "address article aside blockquote body caption details dialog div dl fieldset figcaption figure "
    "footer form header hgroup hr html main nav ol p section summary table tbody tfoot thead ul".split()
)
_HTML_LINES = frozenset("dd dt li tr".split())  # one line each: a list or table stays compact
_DISPLAY_NONE = re.compile(r"display\s*:\s*none", re.IGNORECASE)


def _parse_html(data: bytes) -> _Parsed:
    """Visible text, one block per paragraph-like element, each heading on its own block."""
    from bs4 import BeautifulSoup

    if b"\x00" in data[:_SNIFF_BYTES]:
        raise _Unreadable("contains NUL bytes: not an HTML text file")
    soup = BeautifulSoup(data, "lxml")
    blocks = _HtmlBlocks().run(soup)
    text, sections = _join_blocks(blocks)
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    return _Parsed(text, sections, title or _first_block(blocks, 1))


class _HtmlBlocks:
    """Collect visible text as blocks; whitespace collapses as in a browser, except in <pre>."""

    def __init__(self):
        self.blocks: list[_Block] = []
        self.lines: list[list[str]] = [[]]  # text pieces per <br>-separated line
        self.heading: int | None = None
        self.pre = 0
        self.gap = ""  # the widest break asked for since the last block

    def run(self, root) -> list[_Block]:
        """Walk iteratively: deeply nested pages would overflow a recursive walk."""
        from bs4.element import NavigableString, PreformattedString, Tag

        stack = [(root, False)]
        while stack:
            node, closing = stack.pop()
            if isinstance(node, Tag):
                if closing:
                    self._close(node.name)
                elif not _hidden(node):
                    self._open(node.name)
                    stack.append((node, True))
                    stack.extend((child, False) for child in reversed(node.contents))
            elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
                self.lines[-1].append(str(node))  # comments, doctypes and CDATA are PreformattedString
        self._flush()
        return self.blocks

    def _open(self, name: str) -> None:
        if name == "br":
            self.lines.append([])
        elif self._break(name):
            self.heading = _HTML_HEADINGS.get(name, self.heading)
            self.pre += name == "pre"

    def _close(self, name: str) -> None:
        if self._break(name):
            self.pre -= name == "pre"
            self.heading = None if name in _HTML_HEADINGS else self.heading
        elif name in ("td", "th"):
            self.lines[-1].append(" ")  # keep adjacent cells from running together

    def _break(self, name: str) -> bool:
        """End the current block at a block-level tag; True if `name` is one."""
        sep = "\n" if name in _HTML_LINES else _BLOCK_SEP
        if name not in _HTML_LINES and name not in _HTML_BLOCKS and name not in _HTML_HEADINGS and name != "pre":
            return False
        self._flush()
        self.gap = max(self.gap, sep, key=len)
        return True

    def _flush(self) -> None:
        lines = ["".join(pieces) for pieces in self.lines]
        if self.pre:
            text = "\n".join(lines).strip("\n").rstrip()
        else:
            text = "\n".join(" ".join(line.split()) for line in lines if line.split())
        if text.strip():
            self.blocks.append(_Block(text, self.heading, self.gap or _BLOCK_SEP))
            self.gap = ""
        self.lines = [[]]


def _hidden(tag) -> bool:
    return (
        tag.name in _HTML_SKIP
        or tag.has_attr("hidden")
        or bool(_DISPLAY_NONE.search(tag.get("style") or ""))
    )


# --- pdf ----------------------------------------------------------------------


def _parse_pdf(data: bytes) -> _Parsed:
    """The text layer page by page; each page is a Section carrying its page number."""
    from pypdf import PdfReader

    try:
        with _quiet("pypdf"):
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted:
                _decrypt(reader)
            title = reader.metadata.title if reader.metadata else None
            pages = [_page_text(page, number) for number, page in enumerate(reader.pages, 1)]
    except _Unreadable:
        raise
    except Exception as e:  # pypdf raises many types on damaged files
        raise _Unreadable(f"is not a readable PDF ({_one_line(e)})") from None
    parts, sections, offset = [], [], 0
    for number, page_text in enumerate(pages, 1):
        if page_text:
            offset += len(_BLOCK_SEP) if parts else 0
            sections.append(Section(offset, offset + len(page_text), (), number))
            parts.append(page_text)
            offset += len(page_text)
    if not parts:
        raise _Unreadable("has no text layer (a scan?); run OCR on it first")
    return _Parsed(_BLOCK_SEP.join(parts), sections, title if isinstance(title, str) else None)


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Mute a library's repair warnings: real-world PDFs trigger hundreds, and a failure is reported anyway."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _decrypt(reader) -> None:
    """Open PDFs locked only against editing (empty user password); refuse real passwords."""
    try:
        opened = reader.decrypt("")
    except Exception as e:  # e.g. AES without the `cryptography` package
        raise _Unreadable(f"is encrypted and cannot be opened ({_one_line(e)})") from None
    if not opened:
        raise _Unreadable("is password-protected; save an unprotected copy to ingest it")


def _page_text(page, number: int) -> str:
    try:
        return (page.extract_text() or "").strip()
    except Exception as e:
        raise _Unreadable(f"page {number} cannot be extracted ({_one_line(e)})") from None


# --- docx ---------------------------------------------------------------------

_DOCX_HEADING = re.compile(r"Heading ([1-9])")


def _parse_docx(data: bytes) -> _Parsed:
    """Paragraphs and tables in reading order; Title/Heading N styles cut sections."""
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
        blocks = [b for item in document.iter_inner_content() for b in _docx_blocks(item)]
        core_title = document.core_properties.title
    except Exception as e:  # bad zip, missing parts, malformed XML
        raise _Unreadable(f"is not a readable .docx ({_one_line(e)})") from None
    text, sections = _join_blocks(blocks)
    return _Parsed(text, sections, core_title or _first_block(blocks, 0) or _first_block(blocks, 1))


def _docx_blocks(item) -> Iterable[_Block]:
    from docx.table import Table

    if isinstance(item, Table):
        rows = (" | ".join(cell.text.strip() for cell in row.cells) for row in item.rows)
        text = "\n".join(row for row in rows if row.strip(" |"))
        return [_Block(text)] if text else []
    text = item.text.strip()
    return [_Block(text, _docx_level(item))] if text else []


def _docx_level(paragraph) -> int | None:
    """Heading level from the built-in style (stored in English even by localised Word); Title is 0."""
    name = paragraph.style.name if paragraph.style is not None else ""
    if name == "Title":
        return 0
    match = _DOCX_HEADING.fullmatch(name or "")
    return int(match.group(1)) if match else None


_PARSERS: dict[str, Callable[[bytes], _Parsed]] = {
    "txt": _parse_text, "md": _parse_markdown, "html": _parse_html, "pdf": _parse_pdf, "docx": _parse_docx,
}
