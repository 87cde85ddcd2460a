"""Ingest of every supported format from tiny files written here, and of the files that must be skipped."""

import hashlib
import io
import os

import docx
import pytest
from pypdf import PdfWriter
from pypdf.generic import ContentStream, DictionaryObject, NameObject

from inhouse.errors import InhouseError
from inhouse.rag.ingest import UnreadableDocument, discover, ingest, load_document

MTIME = 1_700_000_000.0

MARKDOWN = """---
title: Install Guide
---
Intro paragraph.

# Installing

Run the installer.

```sh
# not a heading
pip install inhouse
```

## On Linux

Use apt. Then reboot.

Windows
-------

Use the MSI.
"""

HTML = """<!doctype html><html><head><title>Team Handbook</title>
<style>.x { color: red }</style><script>var secret = 1;</script></head>
<body><nav>Home</nav><h1>Handbook</h1><p>Welcome   to the
<b>team</b>.</p><!-- a comment --><h2>Holidays</h2><p>We get 30 days.</p>
<div hidden>invisible text</div><h2>Expenses</h2><ul><li>Travel</li><li>Meals</li></ul>
<table><tr><th>Item</th><th>Limit</th></tr><tr><td>Hotel</td><td>150</td></tr></table></body></html>
"""


def pdf_bytes(pages, title=None, user_password=None, owner_password=None):
    """A real PDF with a Helvetica text layer, built with pypdf alone (no generator library)."""
    writer = PdfWriter()
    font = DictionaryObject({NameObject(k): NameObject(v) for k, v in
                             {"/Type": "/Font", "/Subtype": "/Type1", "/BaseFont": "/Helvetica"}.items()})
    for lines in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
        content = ContentStream(None, writer)
        shown = " T* ".join(f"({line})Tj" for line in lines)
        content.set_data(f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET".encode())
        page.replace_contents(content)
    if title:
        writer.add_metadata({"/Title": title})
    if user_password is not None:
        writer.encrypt(user_password, owner_password, algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def docx_bytes(title="Leave Memo"):
    document = docx.Document()
    document.core_properties.title = title
    document.add_paragraph("Read this first.")
    document.add_heading("Policy", level=1)
    document.add_paragraph("All staff get leave.")
    document.add_paragraph("")
    document.add_heading("Scope", level=2)
    document.add_paragraph("Applies to everyone.")
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("Team", "Days"), ("Ops", "25")]):
        for cell, value in zip(row.cells, cells):
            cell.text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def write_good(root):
    """One small valid file per format; returns {format: path}."""
    files = {
        "txt": ("notes.txt", "First line.\n\nSecond paragraph here.\n".encode()),
        "md": ("guide.md", MARKDOWN.encode()),
        "html": ("site/page.html", HTML.encode()),
        "pdf": ("report.pdf", pdf_bytes([["Revenue grew.", "Costs fell."], ["Outlook is good."]], title="Q3 Report")),
        "docx": ("memo.docx", docx_bytes()),
    }
    paths = {}
    for fmt, (name, data) in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (MTIME, MTIME))
        paths[fmt] = path
    return paths


def write_bad(root):
    """Files that must be skipped; returns {name: expected words in the reason}."""
    bad = {
        "corrupt.pdf": (b"%PDF-1.4\nthis is not really a pdf", "not a readable PDF"),
        "locked.pdf": (pdf_bytes([["secret"]], user_password="pw"), "password-protected"),
        "scan.pdf": (pdf_bytes([[]]), "no text layer"),
        "broken.docx": (b"PK\x03\x04 not a zip at all", "not a readable .docx"),
        "binary.txt": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL bytes"),
        "latin1.txt": ("caf\u00e9 au lait".encode("latin-1"), "not UTF-8"),
        "empty.md": (b"  \n\n ", "no text"),
    }
    for name, (data, _) in bad.items():
        (root / name).write_bytes(data)
    return {name: reason for name, (_, reason) in bad.items()}


def test_ingest_reads_every_format_with_metadata(tmp_path):
    paths = write_good(tmp_path)
    result = ingest(tmp_path)
    assert result.skipped == []
    docs = {doc.format: doc for doc in result.documents}
    assert set(docs) == {"txt", "md", "html", "pdf", "docx"}
    titles = {fmt: doc.title for fmt, doc in docs.items()}
    assert titles == {"txt": "notes", "md": "Install Guide", "html": "Team Handbook",
                      "pdf": "Q3 Report", "docx": "Leave Memo"}
    for fmt, doc in docs.items():
        assert doc.path == str(paths[fmt])
        assert doc.mtime == MTIME
        assert doc.sha256 == hashlib.sha256(paths[fmt].read_bytes()).hexdigest()
        assert doc.sections and all(0 <= s.start < s.end <= len(doc.text) for s in doc.sections)


def test_bad_files_are_skipped_with_reasons_and_never_abort(tmp_path):
    write_good(tmp_path)
    expected = write_bad(tmp_path)
    result = ingest(tmp_path)
    assert len(result.documents) == 5
    reasons = {os.path.basename(path): reason for path, reason in result.skipped}
    assert set(reasons) == set(expected)
    for name, words in expected.items():
        assert words in reasons[name], (name, reasons[name])
        assert "\n" not in reasons[name]


def test_load_document_raises_one_line_inhouse_error(tmp_path):
    write_bad(tmp_path)
    with pytest.raises(InhouseError) as err:
        load_document(tmp_path / "latin1.txt")
    assert isinstance(err.value, UnreadableDocument)
    assert "latin1.txt" in str(err.value) and "re-save it as UTF-8" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(InhouseError, match="cannot be read"):
        load_document(tmp_path / "missing.txt")
    with pytest.raises(InhouseError, match="unsupported file type"):
        load_document(tmp_path / "data.xlsx")


def test_markdown_headings_ignore_code_and_front_matter(tmp_path):
    doc = load_document(write_good(tmp_path)["md"])
    assert doc.text == MARKDOWN  # the source itself, so offsets quote verbatim
    paths = [s.heading_path for s in doc.sections]
    assert paths == [(), ("Installing",), ("Installing", "On Linux"), ("Installing", "Windows")]
    first = doc.sections[0]
    assert doc.text[first.start:first.end].startswith("Intro paragraph.")  # front matter is not content
    linux = doc.sections[2]
    assert doc.text[linux.start:linux.end].startswith("## On Linux")


def test_markdown_title_falls_back_to_first_h1_then_stem(tmp_path):
    (tmp_path / "a.md").write_text("Some text.\n\n## Minor\n\n# Main *Title*\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("no headings\n", encoding="utf-8")
    assert load_document(tmp_path / "a.md").title == "Main Title"
    assert load_document(tmp_path / "b.md").title == "b"


def test_html_visible_text_and_heading_sections(tmp_path):
    doc = load_document(write_good(tmp_path)["html"])
    for invisible in ("secret", "color", "a comment", "invisible text", "Team Handbook"):
        assert invisible not in doc.text
    assert "Welcome to the team." in doc.text
    assert "\nHolidays\n" in doc.text  # headings on their own lines
    assert "Item Limit\nHotel 150" in doc.text
    by_path = {s.heading_path: doc.text[s.start:s.end] for s in doc.sections}
    assert list(by_path) == [(), ("Handbook",), ("Handbook", "Holidays"), ("Handbook", "Expenses")]
    assert by_path[("Handbook", "Holidays")].strip() == "Holidays\n\nWe get 30 days."


def test_pdf_text_layer_page_by_page(tmp_path):
    doc = load_document(write_good(tmp_path)["pdf"])
    assert [s.page for s in doc.sections] == [1, 2]
    pages = [doc.text[s.start:s.end] for s in doc.sections]
    assert "Revenue grew." in pages[0] and "Costs fell." in pages[0]
    assert pages[1] == "Outlook is good."


def test_pdf_locked_only_against_editing_is_read(tmp_path):
    path = tmp_path / "owner.pdf"
    path.write_bytes(pdf_bytes([["Open to read."]], user_password="", owner_password="owner"))
    assert load_document(path).text == "Open to read."


def test_docx_paragraphs_tables_and_heading_styles(tmp_path):
    doc = load_document(write_good(tmp_path)["docx"])
    assert doc.text == (
        "Read this first.\n\nPolicy\n\nAll staff get leave.\n\nScope\n\nApplies to everyone.\n\nTeam | Days\nOps | 25"
    )
    assert [s.heading_path for s in doc.sections] == [(), ("Policy",), ("Policy", "Scope")]


def test_docx_title_falls_back_to_title_style(tmp_path):
    document = docx.Document()
    document.add_heading("Styled Title", level=0)
    document.add_paragraph("Body.")
    document.save(tmp_path / "t.docx")
    assert load_document(tmp_path / "t.docx").title == "Styled Title"


def test_text_encodings(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    (tmp_path / "wide.txt").write_bytes("h\u00e9llo".encode("utf-16"))
    assert load_document(tmp_path / "bom.txt").text == "hello"
    assert load_document(tmp_path / "wide.txt").text == "h\u00e9llo"


def test_discover_is_sorted_case_insensitive_and_skips_hidden(tmp_path):
    for name in ["b.md", "a/c.TXT", "UPPER.MD", "image.png", ".hidden.md", ".git/HEAD.md",
                 "~$memo.docx", "deep/er/x.htm"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x", encoding="utf-8")
    found = [p.relative_to(tmp_path).as_posix() for p in discover(tmp_path)]
    assert found == ["UPPER.MD", "a/c.TXT", "b.md", "deep/er/x.htm"]
    assert discover(tmp_path, patterns=["*.md"]) == [tmp_path / "UPPER.MD", tmp_path / "b.md"]
    assert discover(tmp_path / "b.md") == [tmp_path / "b.md"]
    with pytest.raises(InhouseError, match="no such folder"):
        discover(tmp_path / "nope")


def test_a_parser_crash_or_huge_file_is_skipped_not_fatal(tmp_path, monkeypatch):
    from inhouse.rag import ingest as ingest_module

    def crash(data):
        raise RuntimeError("boom\nwith a second line")

    paths = write_good(tmp_path)
    monkeypatch.setitem(ingest_module._PARSERS, "txt", crash)
    monkeypatch.setattr(ingest_module, "MAX_BYTES", paths["md"].stat().st_size)  # every other file is bigger
    result = ingest(tmp_path)
    reasons = {os.path.basename(path): reason for path, reason in result.skipped}
    assert reasons.pop("notes.txt") == "unexpected RuntimeError: boom with a second line"
    assert set(reasons) == {"page.html", "report.pdf", "memo.docx"}
    assert all("MiB limit" in reason for reason in reasons.values())
    assert [d.format for d in result.documents] == ["md"]
