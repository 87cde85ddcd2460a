"""Find and redact personal data and secrets before a model memorises them.

A fine-tuned model can repeat what it was trained on, so an e-mail address
or API key in a support transcript can come back out of the adapter. This
module finds eight kinds of value and replaces each with a typed
placeholder (`<EMAIL>`, `<PHONE>`, ...), or lets the caller drop the example.

Phone numbers are matched by `phonenumbers` (Google's libphonenumber data),
IBANs are validated by `python-stdnum` (mod-97 plus each country's length
and layout); everything else is a tight hand-written pattern followed by a
check (Luhn, `ipaddress`, SSN area rules) so near-misses are not flagged.
Precision matters as much as recall: every false positive destroys a
version string, an order number or a date the model should learn.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import json
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from phonenumbers import Leniency, PhoneNumberMatcher
from stdnum import iban as stdnum_iban
from stdnum import luhn

from inhouse.data.conversation import Conversation, Message, Problem
from inhouse.data.pii_allow import Allowlist, parse_allow  # noqa: F401 - parse_allow is part of this API
from inhouse.data.prepare_config import PII_KINDS
from inhouse.data.formats import ColumnMap, UnrecognisedFormat, each_record, summarise
from inhouse.data.preference import PreferencePair
from inhouse.data.preference_formats import each_pair, is_preference_file, named_messages
from inhouse.data.read import Record, read_records
from inhouse.errors import InhouseError
from inhouse.paths import shown

# Most specific first: when two detectors claim overlapping text, the earlier
# kind wins (a password inside a URL is a URL_CREDENTIALS, not an EMAIL).
KINDS: tuple[str, ...] = PII_KINDS

# Countries whose *national* phone formats (no +/00 prefix) are recognised.
# Everyone else is found only in international format.
PHONE_REGIONS: tuple[str, ...] = ("US", "GB")

Span = tuple[int, int]


@dataclass(frozen=True)
class Finding:
    """One detected value: its kind, where it sits in the scanned text, and the `--pii-allow` entry
    that lets it stay (None: it is redacted)."""

    kind: str
    start: int
    end: int
    text: str
    allowed_by: str | None = None

    @property
    def allowed(self) -> bool:
        return self.allowed_by is not None

    @property
    def masked(self) -> str:
        """Enough of the value to recognise it in a report, never all of it."""
        if self.kind == "EMAIL":
            return _mask_email(unicodedata.normalize("NFKC", self.text))
        if self.kind == "CARD":
            return "**** **** **** " + re.sub(r"\D", "", self.text)[-4:]
        return _mask_middle(self.text)


def _mask_email(text: str) -> str:
    local, _, domain = text.rpartition("@")
    head, dot, tld = domain.rpartition(".")
    return f"{local[:1]}***@{(head or tld)[:1]}***{dot}{tld if head else ''}"


def _mask_middle(text: str) -> str:
    flat = " ".join(text.split())
    keep = 2 if len(flat) >= 8 else 1 if len(flat) >= 4 else 0
    return f"{flat[:keep]}***{flat[-keep:]}" if keep else "***"


# --- public API ----------------------------------------------------------------


def find_pii(text: str, kinds: set[str] | None = None, allow: Allowlist | None = None) -> list[Finding]:
    """Non-overlapping findings in text order, those `allow` lets stay marked `allowed_by`.

    Every detector always runs, so precedence is the same whatever `kinds`
    asks for; `kinds` only filters what is returned. The allowlist is applied
    after precedence, so an allowed e-mail inside a URL with a password does
    not save the URL.
    """
    wanted = _check_kinds(kinds)
    folded, unfold = _fold(text)
    spans = [(kind, s, e) for kind in KINDS for s, e in _DETECTORS[kind](folded)]
    found = []
    for kind, s, e in _resolve(spans):
        if kind in wanted:
            s, e = unfold(s, e)
            found.append(Finding(kind, s, e, text[s:e], allow.allows(kind, text[s:e]) if allow else None))
    return found


def redact(text: str, kinds: set[str] | None = None, allow: Allowlist | None = None) -> tuple[str, list[Finding]]:
    """Text with every finding that is not allowed replaced by its `<KIND>` placeholder; all findings,
    allowed ones included, so a report can say what stayed."""
    found = find_pii(text, kinds, allow)
    parts, pos = [], 0
    for f in found:
        if not f.allowed:
            parts += [text[pos : f.start], f"<{f.kind}>"]
            pos = f.end
    parts.append(text[pos:])
    return "".join(parts), found


def redact_arguments(
    arguments: str, kinds: set[str] | None = None, allow: Allowlist | None = None
) -> tuple[str, list[Finding]]:
    """A tool call's JSON arguments with PII replaced inside its strings (and integers: a card number
    may be one), so the result is still JSON; arguments that are not JSON are redacted as text.
    Object keys are left alone: renaming one could merge two keys."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return redact(arguments, kinds, allow)
    found: list[Finding] = []
    redacted = _redact_json(value, kinds, allow, found)
    if all(f.allowed for f in found):
        return arguments, found  # untouched text: no needless reformatting
    return json.dumps(redacted, ensure_ascii=False), found


def _redact_json(value: Any, kinds: set[str] | None, allow: Allowlist | None, found: list[Finding]) -> Any:
    if isinstance(value, dict):
        return {k: _redact_json(v, kinds, allow, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(v, kinds, allow, found) for v in value]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return value
    text, hits = redact(str(value), kinds, allow)
    found += hits
    return text if any(not f.allowed for f in hits) else value


def redact_message(m: Message, kinds: set[str] | None = None,
                   allow: Allowlist | None = None) -> tuple[Message, list[Finding]]:
    """Content and tool-call arguments: an assistant that calls send_email(to=...) repeats the
    address as surely as one that writes it out."""
    content, found = redact(m.content, kinds, allow)
    calls = []
    for call in m.tool_calls:
        arguments, hits = redact_arguments(call.arguments, kinds, allow)
        calls.append(replace(call, arguments=arguments) if hits else call)
        found += hits
    if all(f.allowed for f in found):
        return m, found
    return replace(m, content=content, tool_calls=tuple(calls)), found


def scan_conversation(conv: Conversation, kinds: set[str] | None = None,
                      allow: Allowlist | None = None) -> list[tuple[int, Finding]]:
    """(message index, finding) for every message of one example, tool-call arguments included."""
    return redact_conversation(conv, kinds, allow)[1]


def redact_conversation(
    conv: Conversation, kinds: set[str] | None = None, allow: Allowlist | None = None
) -> tuple[Conversation, list[tuple[int, Finding]]]:
    """A new Conversation with placeholders; the original is left untouched."""
    messages: list[Message] = []
    found: list[tuple[int, Finding]] = []
    for i, m in enumerate(conv.messages):
        message, hits = redact_message(m, kinds, allow)
        messages.append(message)
        found += [(i, f) for f in hits]
    return replace(conv, messages=tuple(messages), meta=dict(conv.meta)), found


@dataclass(frozen=True)
class ScanRow:
    """One finding as `inhouse data scan` reports it: where, what, masked.

    `message` is the index of the message it is in, or None for a record that
    is not a conversation; `role` then names the place: the JSON field of a record
    that is not a valid example (or "raw text"), or a preference pair's message
    ("chosen[0] assistant").
    """

    kind: str
    source: str
    line: int
    message: int | None
    role: str
    masked: str
    allowed_by: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.source else f"line {self.line}"

    @property
    def part(self) -> str:
        return f"messages[{self.message}] {self.role:<9}" if self.message is not None else self.role


@dataclass
class ScanReport:
    """Findings, plus the records that were not valid examples (scanned as raw text all the same)."""

    rows: list[ScanRow]
    unusable: list[Problem]
    note: str = ""


def scan_rows(conv: Conversation, kinds: set[str] | None = None, allow: Allowlist | None = None) -> list[ScanRow]:
    """The report rows for one example."""
    return _rows(conv, scan_conversation(conv, kinds, allow))


def _rows(conv: Conversation, found: list[tuple[int, Finding]]) -> list[ScanRow]:
    return [ScanRow(f.kind, conv.source, conv.line, i, conv.messages[i].role, f.masked, f.allowed_by)
            for i, f in found]


def redact_all(
    conversations: Iterable[Conversation], kinds: set[str] | None = None, drop: bool = False,
    allow: Allowlist | None = None,
) -> tuple[list[Conversation], list[ScanRow]]:
    """Redact every example, or with `drop` leave out any example with a finding that is not allowed.

    Dropping suits data where a placeholder would teach the model a wrong
    answer (e.g. "what is my IBAN?"); redacting keeps the example's shape.
    """
    kept: list[Conversation] = []
    rows: list[ScanRow] = []
    for conv in conversations:
        redacted, found = redact_conversation(conv, kinds, allow)
        rows += _rows(conv, found)
        if all(f.allowed for _, f in found):
            kept.append(conv)
        elif not drop:
            kept.append(redacted)
    return kept, rows


def scan_file(path: str | Path, kinds: set[str] | None = None, columns: ColumnMap | None = None,
              allow: Allowlist | None = None) -> ScanReport:
    """Findings in every record of a data file; writes nothing.

    A record that is not a valid example is scanned all the same (every string
    in it, or its raw text when it is not even JSON) and listed in `unusable`:
    a line the loader cannot use may still hold a card number.
    """
    report, source = ScanReport([], []), shown(path)
    try:
        outcomes = _outcomes(path, columns)
    except UnrecognisedFormat as e:
        report.note = f"{e}; every string in the file was scanned"
        outcomes = ((rec, rec.problem or Problem("unrecognized_format", source, rec.line, "not a known format"))
                    for rec in read_records(path))
    for record, item in outcomes:
        if isinstance(item, Conversation):
            report.rows += scan_rows(item, kinds, allow)
        elif isinstance(item, PreferencePair):
            report.rows += _pair_rows(item, kinds, allow)
        else:
            report.unusable.append(item)
            report.rows += _raw_rows(source, record, kinds, allow)
    return report


def _outcomes(path: str | Path, columns: ColumnMap | None) -> Iterator[tuple[Record, Any]]:
    """Each record with the conversation, preference pair or problem it became."""
    if columns is None and is_preference_file(path):
        return each_pair(path)[1]
    return each_record(path, columns)[1]


def _pair_rows(pair: PreferencePair, kinds: set[str] | None, allow: Allowlist | None) -> list[ScanRow]:
    names, messages = zip(*named_messages(pair), strict=True)
    found = scan_conversation(Conversation(messages), kinds, allow)
    return [ScanRow(f.kind, pair.source, pair.line, None, f"{names[i]} {messages[i].role}", f.masked, f.allowed_by)
            for i, f in found]


def _raw_rows(source: str, record: Record, kinds: set[str] | None, allow: Allowlist | None) -> list[ScanRow]:
    """Findings in a record that is not a valid example: each string field, or the raw text."""
    texts = [("raw text", record.raw)] if record.problem is not None else list(_strings(record.value, ""))
    return [ScanRow(f.kind, source, record.line, None, where, f.masked, f.allowed_by)
            for where, text in texts if text for f in find_pii(text, kinds, allow)]


def _strings(value: Any, at: str) -> Iterator[tuple[str, str]]:
    """(JSON path, text) of every string in a parsed value, keys included."""
    if isinstance(value, str):
        yield at or "value", value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{at}.{key}" if at else str(key), str(key)
            yield from _strings(item, f"{at}.{key}" if at else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{at}[{i}]")
    elif value is not None and not isinstance(value, bool):
        yield at or "value", str(value)


def format_scan(report: ScanReport) -> str:
    """Findings as aligned terminal lines, a count per kind (allowed ones apart), and the records that
    were not examples. Allowed values are masked too: scan output gets pasted into tickets."""
    rows = report.rows
    lines = [report.note] if report.note else []
    if rows:
        wide = max(len(r.where) for r in rows)
        lines += [f"{r.where:<{wide}}  {r.part}  {r.kind:<15}  {r.masked}"
                  + (f"  (allowed by {r.allowed_by})" if r.allowed_by else "") for r in rows]
        lines += ["", _scan_summary(rows)]
    else:
        lines.append("no PII found")
    if report.unusable:
        n = len(report.unusable)
        lines += [f"{n} record{'s are' if n != 1 else ' is'} not a valid example (scanned as raw text all the "
                  "same; see 'inhouse data check'):", *summarise(report.unusable)]
    return "\n".join(lines)


def _scan_summary(rows: list[ScanRow]) -> str:
    found = [r for r in rows if r.allowed_by is None]
    allowed = [r for r in rows if r.allowed_by is not None]
    examples = len({(r.source, r.line) for r in found})
    noun = "record" if examples == 1 else "records"
    text = f"{len(found)} finding{'s' * (len(found) != 1)} in {examples} {noun}: {_by_kind(found)}" if found \
        else "nothing to redact"
    return text + (f"; {len(allowed)} allowed by --pii-allow: {_by_kind(allowed)}" if allowed else "")


def _by_kind(rows: list[ScanRow]) -> str:
    counts = Counter(r.kind for r in rows)
    return ", ".join(f"{k} {counts[k]}" for k in KINDS if counts[k])


def _check_kinds(kinds: Iterable[str] | None) -> set[str]:
    if kinds is None:
        return set(KINDS)
    wanted = {k.upper() for k in kinds}
    if unknown := sorted(wanted - set(KINDS)):
        raise InhouseError(f"unknown PII kind {unknown[0]!r}; choose from {', '.join(KINDS)}")
    return wanted


# --- overlap resolution ------------------------------------------------------


def _resolve(spans: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Keep the most specific kind (then the longest span) where spans overlap."""
    rank = {k: i for i, k in enumerate(KINDS)}
    order = sorted(set(spans), key=lambda t: (rank[t[0]], t[1] - t[2], t[1]))
    starts: list[int] = []
    kept: list[tuple[str, int, int]] = []
    for kind, s, e in order:
        i = bisect.bisect_left(starts, s)
        if i and kept[i - 1][2] > s or i < len(kept) and kept[i][1] < e:
            continue
        starts.insert(i, s)
        kept.insert(i, (kind, s, e))
    return kept


# --- folding: see through zero-width and full-width characters -----------------

# Format characters (zero-width spaces, bidi marks, soft hyphens, BOM) are
# invisible, so a value split by one looks whole to a reader and must be
# found; full-width ASCII (ｊａｎｅ＠...) is folded for the same reason.
_INVISIBLE = "\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
_FOLDABLE = re.compile(f"[{_INVISIBLE}\uff01-\uff5e]")
_INVISIBLE_RE = re.compile(f"[{_INVISIBLE}]")
_FULLWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}


def _fold(text: str) -> tuple[str, Callable[[int, int], Span]]:
    """Text detectors see, and a map from its spans back to `text`'s."""
    if not _FOLDABLE.search(text):
        return text, lambda s, e: (s, e)
    removed = [m.start() for m in _INVISIBLE_RE.finditer(text)]
    # Folded position of each removed character: where it would have been.
    at = [r - k for k, r in enumerate(removed)]
    folded = _INVISIBLE_RE.sub("", text).translate(_FULLWIDTH)

    def back(i: int) -> int:
        return i + bisect.bisect_right(at, i)

    return folded, lambda s, e: (back(s), back(e - 1) + 1)


# --- detectors ---------------------------------------------------------------
#
# Each yields (start, end) spans. Patterns start with a literal or a character
# class, with boundaries checked by a lookbehind *after* the first character,
# so `re` can skip ahead quickly: a 5 MB line is scanned in about a second.

# --- EMAIL -------------------------------------------------------------------

# The local part may not start inside a longer run (the lookbehind), must
# start with a letter or digit (quotes and dots before it are punctuation)
# and is at most 64 characters, which also bounds the work per position.
_EMAIL = re.compile(
    r"(?<![\w.%+'-])[.%+'-]*(\w[\w.%+'-]{0,63})@"
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.){1,8}([^\W\d_]{2,63})(?![\w-])"
)
# "icon@2x.png" is an asset name, not an address.
_FILE_EXTENSIONS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "js", "css", "json", "txt"}


def _emails(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        if m.group(2).lower() not in _FILE_EXTENSIONS:
            yield m.start(1), m.end()


# --- PHONE -------------------------------------------------------------------

# Digit runs with the punctuation phone numbers use; libphonenumber then
# decides. Feeding it short windows (not the whole text) keeps it fast on
# giant lines and stops its per-text try limit from hiding late numbers.
# Digits joined by at most four separators at a time: a bounded gap keeps a
# megabyte of '(' or '+' linear (an unbounded run backtracked from each one).
_PHONE_CLUSTER = re.compile(
    r"[+(\d](?<![\w+][+(\d])(?<!\w-[+(\d])(?=[\d \u00a0().\-/+]{6})(?:[ \u00a0().\-/+]{0,4}\d)++"
)
# Dates and times are the commonest digit clusters; libphonenumber rejects
# them too, but skipping them up front keeps a log-sized line fast.
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}(?:[ T]\d{1,2})?$|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}(?: \d{1,2})?$")
# Longer runs of digits and separators are tables, not one phone number.
LONG_CLUSTER = 64
_PHONE_FORMATTED = re.compile(r"\d[ \u00a0().\-/]+\d|^\(")


def _phones(text: str) -> Iterator[Span]:
    for m in _PHONE_CLUSTER.finditer(text):
        if m.end() - m.start() > LONG_CLUSTER:
            yield from _phones_in_long(text, m)
            continue
        cluster = m.group()
        if sum(c.isdigit() for c in cluster) < 7 or _longest_digit_run(cluster) > 15 or _DATE.match(cluster):
            continue
        lo = max(0, m.start() - 4)
        for s, e in _phones_in(text[lo : m.end() + 4], cluster):
            yield lo + s, lo + e


def _phones_in_long(text: str, m: re.Match) -> Iterator[Span]:
    """A table of numbers: only '+' numbers are looked for, each in a short
    window, so a megabyte of digits costs milliseconds, not minutes."""
    for plus in _PLUS_NUMBER.finditer(text, m.start(), m.end()):
        lo = max(0, plus.start() - 1)
        for s, e in _international(text[lo : lo + 33]):
            yield lo + s, lo + e


# A '+' worth libphonenumber's time: seven digits before the next '+'.
# Without this a megabyte of "+1 +1 +1" made 300,000 calls of ~1 ms.
_PLUS_NUMBER = re.compile(r"\+(?=(?:[^+\d]{0,4}\d){7})")


@functools.lru_cache(maxsize=8192)
def _international(window: str) -> tuple[Span, ...]:
    """'+' numbers; if digits run on after one ("+44 20 7946 0958 12 34"),
    retry with the window cut at each earlier space until one parses."""
    ends = [len(window)] + [i for i in range(len(window) - 1, 0, -1) if window[i] == " "][:8]
    for end in ends:
        if found := tuple(_matches(window[:end], None, Leniency.POSSIBLE, lambda raw: True)):
            return found
    return ()


@functools.lru_cache(maxsize=8192)
def _phones_in(window: str, cluster: str) -> tuple[Span, ...]:
    """Cached: libphonenumber costs ~0.1 ms a call and support data repeats
    the same numbers (signatures, hotlines) thousands of times."""
    return tuple(_parse_phones(window, cluster))


def _parse_phones(window: str, cluster: str) -> Iterator[Span]:
    """How much evidence a number needs depends on how it is written: a '+'
    and a country code are enough on their own (length must be possible; the
    allocation data may lag), an '00' prefix must also be a valid number, and
    a national number must be valid in PHONE_REGIONS *and* grouped the way
    that country writes it, because without a prefix it looks like any id.
    (US and UK national numbers have 10 or 11 digits: anything else is not
    worth libphonenumber's time.)"""
    if "+" in cluster:
        yield from _international(window)
    if cluster.lstrip("(").startswith("00"):
        yield from _matches(window, "DE", Leniency.VALID, lambda raw: raw.lstrip("(").startswith("00"))
    if 10 <= sum(c.isdigit() for c in cluster) <= 11 and _PHONE_FORMATTED.search(cluster):
        for region in PHONE_REGIONS:
            yield from _matches(window, region, Leniency.STRICT_GROUPING, lambda raw: "+" not in raw)


def _matches(window: str, region: str | None, leniency: Leniency, keep: Callable[[str], bool]) -> Iterator[Span]:
    for match in PhoneNumberMatcher(window, region, leniency=leniency):
        if keep(match.raw_string):
            yield match.start, match.end


def _longest_digit_run(s: str) -> int:
    return max((len(r) for r in re.findall(r"\d+", s)), default=0)


# --- CARD --------------------------------------------------------------------

# Groups of digits split by one space, dash or a single line break (a number
# pasted across two lines); validated by IIN prefix, length and Luhn.
_CARD_RUN = re.compile(
    r"\d(?<![\w.,/+-]\d)(?=[\d \u00a0\u2009\u202f\r\n-]{12})\d*(?:(?:[ \u00a0\u2009\u202f-]|\r?\n)\d+)*"
)
_CARD_SEP = re.compile(r"[ \u00a0\u2009\u202f-]|\r?\n")


def _cards(text: str) -> Iterator[Span]:
    for m in _CARD_RUN.finditer(text):
        if m.end() < len(text) and (text[m.end()].isalnum() or text[m.end()] == "_"):
            continue
        if not 13 <= m.end() - m.start() <= 48:
            continue  # too short, or a table of numbers rather than one card
        if span := _card_in(m.group()):
            yield m.start() + span[0], m.start() + span[1]


def _card_in(run: str) -> Span | None:
    """The whole run if it is a card, else the run without one short leading or
    trailing group (a quantity before, an expiry month after)."""
    groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", run)]
    for a, b in ((0, len(groups)), (0, len(groups) - 1), (1, len(groups)), (1, len(groups) - 1)):
        part = groups[a:b]
        dropped = groups[:a] + groups[b:]
        if not part or any(e - s > 4 for s, e in dropped):
            continue
        span = (part[0][0], part[-1][1])
        if _is_card(run[span[0] : span[1]], [e - s for s, e in part]):
            return span
    return None


def _is_card(text: str, sizes: list[int]) -> bool:
    digits = re.sub(r"\D", "", text)
    seps = {"-" if s == "-" else " " for s in _CARD_SEP.findall(text)}
    grouped = len(sizes) == 1 or (len(seps) == 1 and all(3 <= n <= 6 for n in sizes))
    return grouped and _card_brand_ok(digits) and luhn.is_valid(digits)


def _card_brand_ok(d: str) -> bool:
    """Issuer prefix and length of the major networks; rules out ids that pass
    Luhn by chance (epoch-millisecond timestamps, IMEIs, ...)."""
    n = len(d)
    if d[0] == "4":
        return n in (13, 16, 19)
    if d[:2] in ("34", "37"):
        return n == 15
    if d[:2] in ("36", "38", "39") or "300" <= d[:3] <= "305":
        return 14 <= n <= 19
    if "51" <= d[:2] <= "55" or "2221" <= d[:4] <= "2720":
        return n == 16
    return d[0] in "56" and 16 <= n <= 19 or d[:2] == "35" and 16 <= n <= 19


# --- IBAN --------------------------------------------------------------------

_IBAN_SEP = r"(?:[ \u00a0]|\r?\n)?"
_IBAN = re.compile(
    rf"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{{2}}"  # country, check digits
    rf"(?:{_IBAN_SEP}[A-Z0-9]{{4}}){{2,8}}(?:{_IBAN_SEP}[A-Z0-9]{{1,3}})?(?![A-Za-z0-9])"
)


def _ibans(text: str) -> Iterator[Span]:
    for m in _IBAN.finditer(text):
        if _is_iban(m.group()):
            yield m.span()
        elif (cut := re.search(r"\s[A-Z0-9]+\Z", m.group())) and _is_iban(m.group()[: cut.start()]):
            yield m.start(), m.start() + cut.start()


def _is_iban(text: str) -> bool:
    """mod-97 and the country's registered length and layout; national check
    digits are not required, so a valid-looking test IBAN still counts."""
    compact = "".join(text.split())
    return _mod97_ok(compact) and stdnum_iban.is_valid(compact, check_country=False)


_BASE36 = {ord(c): str(i) for i, c in enumerate(string.ascii_uppercase, 10)}


def _mod97_ok(compact: str) -> bool:
    """The checksum alone, cheaply: it turns away 96 in 97 candidates before
    stdnum's full check (50 us each), so a line of "DE89 DE89 ..." stays fast."""
    moved = compact[4:] + compact[:4]
    return int(moved.translate(_BASE36)) % 97 == 1


# --- SSN ---------------------------------------------------------------------

_SSN_DASHED = re.compile(r"\d(?<![\w-]\d)\d{2}-\d{2}-\d{4}(?![\w-])")
# Without dashes nine digits are just a number, unless the text says SSN.
_SSN_KEYWORD = re.compile(
    r"[SsIi](?<!\w[SsIi])(?i:sn\b|tin\b|ocial[ -]security(?:[ -]number| no\b\.?)?\b|s\#)[^\d\n]{0,20}?"
    r"(?<![\w-])(\d{3}([ ]?)\d{2}\2\d{4})(?![\w-])"
)


def _ssns(text: str) -> Iterator[Span]:
    for m in _SSN_DASHED.finditer(text):
        if _ssn_ok(m.group()):
            yield m.span()
    for m in _SSN_KEYWORD.finditer(text):
        if _ssn_ok(m.group(1)):
            yield m.span(1)


def _ssn_ok(text: str) -> bool:
    """Never-issued areas/groups/serials are zeroes or 666; 9xx (ITINs) count."""
    d = re.sub(r"\D", "", text)
    return d[:3] not in ("000", "666") and d[3:5] != "00" and d[5:] != "0000"


# --- IP ----------------------------------------------------------------------

_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f:]{2,39}(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)")
# Two colons with only hex between them: the cheap sign an IPv6 may be near.
_IPV6_HINT = re.compile(r":[0-9A-Fa-f:]*:")
# "version 2.4.1.0" looks exactly like an address; the word before decides.
_VERSION_WORD = re.compile(r"(?i:\b(?:v|ver|version|build|release|firmware|fw|rev|revision)[.:]?\s*)\Z")


def _ips(text: str) -> Iterator[Span]:
    for m in _IPV4.finditer(text):
        after_version_word = _VERSION_WORD.search(text, max(0, m.start() - 12), m.start())
        if _valid_ip(m.group(), ipaddress.IPv4Address) and not after_version_word:
            yield m.span()
    done = 0
    for hint in _IPV6_HINT.finditer(text):
        start = hint.start()
        while start > max(done, hint.start() - 4) and text[start - 1] in string.hexdigits:
            start -= 1
        if start >= done and (m := _IPV6.match(text, start)) and _plausible_ipv6(m.group()):
            done = m.end()
            yield m.span()


def _plausible_ipv6(text: str) -> bool:
    """Valid, and not a slice or a scope operator that happens to parse
    ("1::2", "::"): needs a digit and a full hextet or four groups."""
    if text.count(":") < 2 or not _valid_ip(text, ipaddress.IPv6Address) or not re.search(r"\d", text):
        return False
    groups = [g for g in re.split(r"[:.]", text) if g]
    return any(len(g) == 4 for g in groups) or len(groups) >= 4


def _valid_ip(text: str, kind: type) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


# --- SECRET ------------------------------------------------------------------

_END = r"(?![A-Za-z0-9_-])"
# One pattern per family, each starting with its literal prefix, and the left
# boundary checked in `_secrets`: a leading \b or one big alternation would
# defeat `re`'s fast prefix scan.
_TOKENS = [
    re.compile(p)
    for p in [
        r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",  # AWS access key id
        r"gh[pousr]_[A-Za-z0-9]{36,251}\b",  # GitHub classic tokens
        r"github_pat_[A-Za-z0-9_]{82,}\b",  # GitHub fine-grained PAT
        r"xox[abposre]-\d{6,}-[A-Za-z0-9-]{10,}" + _END,  # Slack tokens
        r"xapp-\d-[A-Z0-9]+-\d+-[a-f0-9]{16,}\b",  # Slack app-level token
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,}",
        r"sk-[A-Za-z0-9_-]{32,}" + _END,  # OpenAI / Anthropic style
        r"sk_(?:live|test)_[A-Za-z0-9]{16,}\b",  # Stripe secret key
        r"rk_(?:live|test)_[A-Za-z0-9]{16,}\b",  # Stripe restricted key
        r"AIza[0-9A-Za-z_-]{35}" + _END,  # Google API key
        r"hf_[A-Za-z0-9]{30,}\b",  # Hugging Face
        r"glpat-[A-Za-z0-9_-]{20,}" + _END,  # GitLab
        r"npm_[A-Za-z0-9]{36}\b",  # npm
        r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}" + _END,  # JWT
    ]
]
# AWS secret keys are 40 base64 characters with no prefix: only trusted next
# to their variable name.
_AWS_SECRET = re.compile(
    r"[Ss](?i:ecret_?access_?key|ecret_?key)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
)
_KEY_HEAD = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
_PRIVATE_KEY = re.compile(_KEY_HEAD + r"[\s\S]{0,65536}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
# A pasted key often lacks its END line; take the base64 lines that follow.
_PRIVATE_KEY_OPEN = re.compile(_KEY_HEAD + r"(?:(?:\\n|\r?\n)[A-Za-z0-9+/=]+)*")


def _secrets(text: str) -> Iterator[Span]:
    for pattern in _TOKENS:
        for m in pattern.finditer(text):
            if not _word_before(text, m.start()) and _looks_random(m.group()):
                yield m.span()
    for m in _AWS_SECRET.finditer(text):
        yield m.span(1)
    blocks = [m.span() for m in _PRIVATE_KEY.finditer(text)]
    yield from blocks
    for m in _PRIVATE_KEY_OPEN.finditer(text):
        if not any(s <= m.start() < e for s, e in blocks):
            yield m.span()


def _word_before(text: str, i: int) -> bool:
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


def _looks_random(token: str) -> bool:
    """Real tokens mix character classes; 'sk-xxxxxxxx...' is a placeholder."""
    body = token.split("_", 1)[-1] if "_" in token[:12] else token.split("-", 1)[-1]
    classes = sum(bool(re.search(p, body)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return classes >= 2 and len(set(body)) >= 8


# --- URL_CREDENTIALS -----------------------------------------------------------

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{1,20}\Z")
_AUTHORITY = re.compile(
    r"(?P<user>[^\s/?#@:]*)(?::(?P<password>[^\s/?#\"'<>]*))?@"
    r"(?:\[[0-9A-Fa-f:.]+\]|[\w.-]+)(?::\d{1,5})?"
)
# The rest of the URL is read only for a URL that is reported, and '://'
# inside it is not looked at again: a line of "http://a@" repeated made
# every '://' read to the end of the line (quadratic).
_URL_REST = re.compile(r"[^\s<>\"'`]*")


def _url_credentials(text: str) -> Iterator[Span]:
    """A URL whose userinfo holds a password, or a token used as user name.
    Anchored on '://' so text without URLs costs one fast scan."""
    done = 0
    for sep in re.finditer("://", text):
        if sep.start() < done:
            continue
        scheme = _SCHEME.search(text, max(0, sep.start() - 21), sep.start())
        rest = _AUTHORITY.match(text, sep.end())
        if not scheme or not rest or _word_before(text, scheme.start()):
            continue
        user, password = rest.group("user"), rest.group("password")
        if password or len(user) >= 20 and _looks_random(user):
            end = done = _URL_REST.match(text, rest.end()).end()  # type: ignore[union-attr]
            while text[end - 1] in ".,;:!?)]}*":
                end -= 1
            yield scheme.start(), end


_DETECTORS: dict[str, Callable[[str], Iterable[Span]]] = {
    "URL_CREDENTIALS": _url_credentials,
    "SECRET": _secrets,
    "EMAIL": _emails,
    "CARD": _cards,
    "IBAN": _ibans,
    "SSN": _ssns,
    "IP": _ips,
    "PHONE": _phones,
}
