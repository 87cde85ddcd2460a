"""A seeded corpus of bad and odd inputs for every command that reads a user's file, flag or request.

`cases(seed)` builds the same list every time: data files (broken JSON, wrong types at every field,
encodings, BOMs, NUL bytes, huge lines, deep nesting, wrong file kinds, special and unreadable
files) for `data check|scan|prepare`, `rag index` and POST /v1/files; recipes for `inhouse train`;
flag values for every command; bodies for POST /v1/fine_tuning/jobs. `run(case, ...)` runs one and
returns what went wrong (empty: the case held every promise): exit 0 or 1 (2 for a flag click
refuses), HTTP 2xx/4xx, no traceback, a file-level error naming the file, within the time and memory
budget, and nothing half-written.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import resource
import signal
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIME_BUDGET_S = 120.0  # a hang guard, not a speed target: a loaded 2-core machine must pass
MEMORY_BUDGET_MB = 1024
SMALL_LIMIT_MB = "0.25"  # INHOUSE_MAX_EXAMPLE_MB for the huge-line cases: 262,144 bytes
SMALL_LIMIT = int(0.25 * 2**20)

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my order?"},
                     {"role": "assistant", "content": "It ships tomorrow."}]}
ALPACA = {"instruction": "Say hi", "input": "", "output": "hi"}
COMPLETION = {"prompt": "Where is my order?", "completion": "It ships tomorrow."}
SHAREGPT = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
BASES = {"chat": CHAT, "alpaca": ALPACA, "completion": COMPLETION, "sharegpt": SHAREGPT}
USER, ANSWER = {"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "It ships tomorrow."}
PAIRS = {"pair-openai": {"input": {"messages": [USER]}, "preferred_output": [ANSWER],
                         "non_preferred_output": [{"role": "assistant", "content": "No idea."}]},
         "pair-trl": {"prompt": [USER], "chosen": [ANSWER], "rejected": "No idea."},
         "pair-implicit": {"chosen": [USER, ANSWER], "rejected": [USER, {"role": "assistant", "content": "No idea."}]}}
ODD_VALUES: list[Any] = [None, True, 0, -1, 1.5, 1e308, 10**30, "", "x", [], {}, [None], {"a": 1}, "\x00",
                         "\ud800", float("nan")]


def good_lines(n: int = 6) -> list[str]:
    return [json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                     {"role": "assistant", "content": f"Answer {i}."}]}) for i in range(n)]


GOOD = ("\n".join(good_lines()) + "\n").encode()


@dataclass(frozen=True)
class Case:
    """One input to one command. `data` is the file's bytes; `special` names a file that bytes cannot
    make (fifo, link to /dev/zero, ...); `args` are the command's words with {file}/{out}/{dir} slots."""

    id: str
    command: str  # check, scan, prepare, rag-index, train, flags, http-files, http-jobs
    kind: str
    name: str = "data.jsonl"
    data: bytes | None = None
    special: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    body: Any = None  # http: a JSON value, or raw bytes
    how: str = "inprocess"  # inprocess, child, unprivileged, http

    @property
    def file_level(self) -> bool:
        """A problem with the whole file, so a one-line error must name it."""
        return self.command in ("check", "scan", "prepare")


# --- payloads: the bad files ---------------------------------------------------------------------


def _paths(value: Any, at: tuple = ()) -> Iterator[tuple]:
    yield at
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*at, i))


def _replaced(value: Any, at: tuple, new: Any) -> Any:
    if not at:
        return new
    copy = json.loads(json.dumps(value))
    holder = copy
    for key in at[:-1]:
        holder = holder[key]
    if new is _DELETE:
        del holder[at[-1]]
    else:
        holder[at[-1]] = new
    return copy


_DELETE = object()


def _lines_with(bad: str) -> bytes:
    lines = good_lines(4)
    return ("\n".join([*lines[:2], bad, *lines[2:]]) + "\n").encode("utf-8", "surrogatepass")


def wrong_types() -> Iterator[tuple[str, str, bytes]]:
    """Every field of every format, replaced by every odd value, and removed."""
    for fmt, base in BASES.items():
        for at in _paths(base):
            where = ".".join(map(str, at)) or "root"
            for n, odd in enumerate([*ODD_VALUES, _DELETE] if at else ODD_VALUES):
                if odd is _DELETE:
                    text = json.dumps(_replaced(base, at, odd))
                else:
                    text = json.dumps(_replaced(base, at, odd))
                yield "wrong-type", f"{fmt}-{where}-{n}", _lines_with(text)
        yield "wrong-type", f"{fmt}-unknown-key", _lines_with(json.dumps({**base, "zzz": {"deep": [1]}}))


def wrong_pairs() -> Iterator[tuple[str, str, bytes]]:
    """Every field of each preference shape replaced by every odd value, and removed, between good pairs of
    the same shape (so the file is read as pairs)."""
    for fmt, base in PAIRS.items():
        good = [json.dumps(base).replace("my order", f"order {i}") for i in range(4)]
        for at in _paths(base):
            where = ".".join(map(str, at)) or "root"
            for n, odd in enumerate([*ODD_VALUES, _DELETE] if at else ODD_VALUES):
                lines = [*good[:2], json.dumps(_replaced(base, at, odd)), *good[2:]]
                yield "preference", f"{fmt}-{where}-{n}", ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def broken_json(rng: random.Random) -> Iterator[tuple[str, str, bytes]]:
    fixed = ['{', '{"messages": [', '{"messages": [{"role": "user", "content": "hi"}, ]}', "{'messages': []}",
             '{"messages": [] // comment}', '{"a": NaN}', '{"a": Infinity, "b": -Infinity}', '{"a": 1}{"b": 2}',
             '{"a": "\\uZZZZ"}', '{"a": "\\ud800"}', '{"a": "\\udfff\\ud800"}', '{"a": "tab\there"}', '"just a string"',
             "null", "42", "[]", "{}", "[1, 2]", "true", '{"a": 1e999}', '{"a": -0}', '{"a": 123456789012345678901234567890}',
             '{"a": "' + "\\" * 9 + '"}', '{"a":1,"a":2}', "\x1b[31m red \x1b[0m", ",", "]", "}{", '{"messages": null}',
             json.dumps(CHAT, indent=2)]
    for n, text in enumerate(fixed):
        yield "broken-json", f"fixed-{n}", _lines_with(text)
    for n in range(60):
        text = json.dumps(rng.choice(list(BASES.values())))
        pos = rng.randrange(len(text))
        op = rng.choice(["cut", "drop", "insert", "swap"])
        if op == "cut":
            text = text[:pos]
        elif op == "drop":
            text = text[:pos] + text[pos + 1:]
        elif op == "insert":
            text = text[:pos] + rng.choice('{}[],:"\\\x7f') + text[pos:]
        else:
            text = text[:pos] + text[pos + 1:pos + 2] + text[pos:pos + 1] + text[pos + 2:]
        yield "broken-json", f"mutated-{n}-{op}", _lines_with(text)
    yield "broken-json", "array-trailing-comma", b"[" + b",".join(good_lines(3)[i].encode() for i in range(3)) + b",]"
    yield "broken-json", "array-unclosed", b"[" + good_lines(1)[0].encode()
    yield "broken-json", "array-garbage-after", b"[" + good_lines(1)[0].encode() + b"] trailing"


def encodings() -> Iterator[tuple[str, str, bytes]]:
    text = json.dumps({"prompt": "caf\xe9 \u201cquoted\u201d", "completion": "na\xefve \u20ac"}, ensure_ascii=False)
    body = "\n".join([*good_lines(3), text]) + "\n"
    yield "encoding", "latin-1", body.replace("\u201c", '"').replace("\u201d", '"').replace("\u20ac", "E").encode("latin-1")
    yield "encoding", "cp1252", body.encode("cp1252")
    for codec in ("utf-16-le", "utf-16-be", "utf-32-le"):
        yield "encoding", f"{codec}-no-bom", body.encode(codec)
    yield "encoding", "utf-16-bom", body.encode("utf-16")
    yield "encoding", "utf-32-bom", body.encode("utf-32")
    yield "encoding", "utf-8-bom", b"\xef\xbb\xbf" + body.encode()
    yield "encoding", "utf-8-bom-twice", b"\xef\xbb\xbf\xef\xbb\xbf" + body.encode()
    yield "encoding", "bom-mid-file", GOOD + b"\xef\xbb\xbf" + good_lines(1)[0].encode() + b"\n"
    yield "encoding", "bom-only", b"\xef\xbb\xbf"
    for n, esc in enumerate(["\\ud800", "\\udfff", "\\udc00\\ud800", "\\ud83d", "x\\ud800y\\udbff"]):
        yield "encoding", f"lone-surrogate-{n}", _lines_with('{"prompt": "a%s", "completion": "b%s"}' % (esc, esc))
        yield "encoding", f"lone-surrogate-chat-{n}", _lines_with(json.dumps(CHAT).replace("Be brief.", esc))
    yield "encoding", "surrogate-utf8-bytes", _lines_with('{"prompt": "') + b"\xed\xa0\x80" + b'", "completion": "x"}\n'
    yield "encoding", "overlong", GOOD + b'{"prompt": "\xc0\xaf", "completion": "x"}\n'
    yield "encoding", "truncated-multibyte", GOOD + b'{"prompt": "\xe2\x82", "completion": "x"}\n'
    yield "encoding", "invalid-at-end", GOOD + b"\xff"
    yield "encoding", "mixed-newlines", GOOD.replace(b"\n", b"\r\n", 2).replace(b"\n", b"\r")
    yield "encoding", "u2028-separators", _lines_with(json.dumps({"prompt": "a\u2028b\u2029c\x85d", "completion": "x"},
                                                                 ensure_ascii=False))


def nul_bytes() -> Iterator[tuple[str, str, bytes]]:
    yield "nul", "first-byte", b"\x00" + GOOD
    yield "nul", "mid-line", GOOD[:40] + b"\x00" + GOOD[40:]
    yield "nul", "after-sniff", GOOD * 100 + b'{"a": "\x00"}\n'  # past the first 8 KiB
    yield "nul", "last-byte", GOOD + b"\x00"
    yield "nul", "all-nul", b"\x00" * 4096
    yield "nul", "escaped", _lines_with('{"prompt": "a\\u0000b", "completion": "c\\u0000"}')


def huge_lines() -> Iterator[tuple[str, str, bytes]]:
    """Around the lowered limit (SMALL_LIMIT bytes), and a few MB against a 2 MB limit."""
    for size in (SMALL_LIMIT - 2000, SMALL_LIMIT + 10, SMALL_LIMIT * 3):
        line = json.dumps({"prompt": "hi", "completion": "x" * size})
        yield "huge-line", f"jsonl-{size}", _lines_with(line)
        yield "huge-line", f"no-newline-{size}", b"x" * size
        yield "huge-line", f"array-{size}", ("[" + ",".join([*good_lines(2), line]) + "]").encode()
    yield "huge-line", "only-newlines", b"\n" * SMALL_LIMIT * 2
    yield "huge-line", "spaces", b" " * SMALL_LIMIT * 2 + b"\n" + GOOD


def deep_nesting() -> Iterator[tuple[str, str, bytes]]:
    for depth in (500, 990, 100_000):
        yield "deep-nesting", f"list-{depth}", _lines_with("[" * depth + "]" * depth)
        yield "deep-nesting", f"object-{depth}", _lines_with('{"a":' * depth + "1" + "}" * depth)
        yield "deep-nesting", f"content-{depth}", _lines_with(
            '{"messages": [{"role": "user", "content": ' + "[" * depth + "]" * depth + '}]}')
        yield "deep-nesting", f"unknown-format-{depth}", _lines_with('{"q": ' + '{"a":' * depth + '"x@y.com"'
                                                                    + "}" * depth + "}")
        yield "deep-nesting", f"whole-array-{depth}", b"[" * depth + b"]" * depth
        yield "deep-nesting", f"unclosed-{depth}", b"[" * depth


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data.jsonl", GOOD)
    return buf.getvalue()


def _parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["c", None], "n": [1, 2]}), buf)
    return buf.getvalue()


def wrong_kinds() -> Iterator[tuple[str, str, bytes]]:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    yield "wrong-kind", "pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n"
    yield "wrong-kind", "zip", _zip()
    yield "wrong-kind", "png", png
    yield "wrong-kind", "gzip", gzip.compress(GOOD)
    yield "wrong-kind", "parquet", _parquet()
    yield "wrong-kind", "parquet-magic-only", b"PAR1garbage"
    yield "wrong-kind", "elf", b"\x7fELF\x02\x01\x01" + bytes(range(256))
    yield "wrong-kind", "empty", b""
    yield "wrong-kind", "whitespace", b" \n\t\r\n"
    yield "wrong-kind", "html", b"<!doctype html><html><body>" + b"<div>" * 2000 + b"</body></html>"
    yield "wrong-kind", "yaml", b"messages:\n  - role: user\n    content: hi\n"
    yield "wrong-kind", "csv-as-jsonl", b"prompt,completion\nhi,there\n"
    yield "wrong-kind", "random-bytes", random.Random(7).randbytes(4096)


def csv_payloads() -> Iterator[tuple[str, str, bytes]]:
    yield "csv", "unclosed-quote", b'prompt,completion\nhi,"there\nhow,are\n'
    yield "csv", "wrong-width", b"prompt,completion\nhi\nhi,there,extra\nok,fine\n"
    yield "csv", "duplicate-header", b"prompt,prompt\nhi,there\n"
    yield "csv", "empty-header", b",\nhi,there\n"
    yield "csv", "header-only", b"prompt,completion\n"
    yield "csv", "no-known-columns", b"a,b\n1,2\n"
    yield "csv", "quote-in-field", b'prompt,completion\nhi,th"ere\n'
    yield "csv", "huge-field", b'prompt,completion\nhi,"' + b"word\n" * (SMALL_LIMIT // 4) + b'"\n'
    yield "csv", "latin-1", "prompt,completion\ncaf\xe9,ok\n".encode("latin-1")
    yield "csv", "nul", b"prompt,completion\nhi,th\x00ere\n"
    yield "csv", "bom", b"\xef\xbb\xbfprompt,completion\nhi,there\n"


EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt", "")


def payloads(rng: random.Random) -> list[tuple[str, str, bytes]]:
    """(kind, label, bytes) of every bad data file."""
    found = [*wrong_types(), *broken_json(rng), *encodings(), *nul_bytes(), *huge_lines(), *deep_nesting(),
             *wrong_kinds(), *csv_payloads()]
    return found


def _file_name(kind: str, label: str, rng: random.Random) -> str:
    if kind == "csv":
        return "data.csv"
    if kind in ("wrong-kind", "encoding", "nul"):
        return "data" + rng.choice(EXTENSIONS)
    if kind in ("wrong-type", "broken-json"):
        return rng.choice(["data.jsonl", "data.jsonl", "data.json"])
    return "data.jsonl"


SPECIALS = ("fifo", "link-to-dev-zero", "link-to-fifo", "dangling-link", "link-loop", "directory", "link-to-dev-null",
            "missing")
UNREADABLE = ("chmod-000", "in-chmod-000-dir")


def materialise(case: Case, folder: Path) -> Path:
    """Write the case's file (or special file) into `folder`; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / case.name
    special = case.special
    if special is None or special in UNREADABLE:
        if special == "in-chmod-000-dir":
            (folder / "locked").mkdir()
            path = folder / "locked" / case.name
        path.write_bytes(case.data or b"")
        if special:
            os.chmod(path.parent if special == "in-chmod-000-dir" else path, 0)
    elif special == "fifo":
        os.mkfifo(path)
    elif special == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif special == "link-to-dev-null":
        path.symlink_to("/dev/null")
    elif special == "link-to-fifo":
        os.mkfifo(folder / "pipe")
        path.symlink_to(folder / "pipe")
    elif special == "dangling-link":
        path.symlink_to(folder / "gone.jsonl")
    elif special == "link-loop":
        path.symlink_to(path)
    elif special == "directory":
        path.mkdir()
        (path / "inside.jsonl").write_bytes(GOOD)
    return path


# --- the corpus ----------------------------------------------------------------------------------


def data_cases(rng: random.Random) -> list[Case]:
    found = []
    for kind, label, data in payloads(rng):
        name = _file_name(kind, label, rng)
        env = (("INHOUSE_MAX_EXAMPLE_MB", SMALL_LIMIT_MB),) if kind in ("huge-line", "csv") else ()
        for command in ("check", "scan", "prepare"):
            found.append(Case(f"{command}/{kind}/{label}{name[4:]}", command, kind, name, data, env=env))
    for kind, label, data in wrong_pairs():  # apart from payloads(): the rag and HTTP draws stay as they were
        found += [Case(f"{command}/{kind}/{label}", command, kind, "pairs.jsonl", data)
                  for command in ("check", "scan", "prepare")]
    big = json.dumps({"prompt": "hi", "completion": "y" * 3 * 2**20})  # a few MB against a 2 MB limit
    for command in ("check", "scan", "prepare"):
        found.append(Case(f"{command}/huge-line/3mb-line", command, "huge-line", "big.jsonl", _lines_with(big),
                          env=(("INHOUSE_MAX_EXAMPLE_MB", "2"),)))
        found.append(Case(f"{command}/huge-line/1.5mb-under-2", command, "huge-line", "ok.jsonl",
                          _lines_with(big[: int(1.5 * 2**20)] + '"}'), env=(("INHOUSE_MAX_EXAMPLE_MB", "2"),)))
        for special in SPECIALS:
            found.append(Case(f"{command}/special/{special}", command, "special", "data.jsonl", special=special,
                              how="child"))
        for special in UNREADABLE:
            found.append(Case(f"{command}/unreadable/{special}", command, "unreadable", "data.jsonl", GOOD,
                              special=special, how="unprivileged"))
    return found


RAG_NAMES = (".md", ".txt", ".html", ".pdf", ".docx")


def rag_cases(rng: random.Random, every: list[tuple[str, str, bytes]]) -> list[Case]:
    """A folder holding one good document and one odd one."""
    own = [("wrong-kind", "pdf-truncated", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<"),
           ("wrong-kind", "docx-not-zip", b"not a zip at all"), ("wrong-kind", "docx-zip-without-xml", _zip()),
           ("deep-nesting", "html-10k", b"<div>" * 10_000), ("deep-nesting", "md-10k", b">" * 10_000 + b" q\n"),
           ("encoding", "md-latin-1", "caf\xe9\n".encode("latin-1")), ("encoding", "md-utf-16", "hello\n".encode("utf-16")),
           ("nul", "txt-nul", b"a\x00b\n" * 100), ("wrong-kind", "empty", b""), ("huge-line", "md-one-line", b"w" * 3 * 2**20)]
    # small ones: a long document is real work for the embedder (minutes on a loaded CPU), not a fault
    picked = own + rng.sample([p for p in every if p[0] != "wrong-type" and len(p[2]) < 64 * 1024], 40)
    found = []
    for kind, label, data in picked:
        name = "odd" + (rng.choice(RAG_NAMES) if not label.split("-")[0] in ("pdf", "docx", "html", "md", "txt")
                        else "." + label.split("-")[0])
        found.append(Case(f"rag-index/{kind}/{label}{name[3:]}", "rag-index", kind, name, data))
    for special in SPECIALS[:-1]:
        found.append(Case(f"rag-index/special/{special}", "rag-index", "special", "odd.md", special=special, how="child"))
    for special in UNREADABLE:
        found.append(Case(f"rag-index/unreadable/{special}", "rag-index", "unreadable", "odd.md", b"# Hi\n\ntext\n",
                          special=special, how="unprivileged"))
    return found


def recipe_fields() -> dict[str, Any]:
    from inhouse.recipe import Recipe

    return dict(Recipe.model_fields)


RECIPE_ODD = ["null", "abc", "-1", "0", "1e23", "[]", "{}", "true", "'1e400'", ".nan", ".inf", "-.inf", "2e70",
              "123456789012345678901234567890", "''", "[1, [2, [3]]]", "0x10"]


def recipe_cases() -> list[Case]:
    header = "train_file: {good}\n"
    texts: list[tuple[str, str, bytes]] = []
    for name in recipe_fields():
        for n, odd in enumerate(RECIPE_ODD):
            texts.append(("wrong-type", f"{name}-{n}", (header + f"{name}: {odd}\n").encode()))
    broken = ["train_file: [", "a: b: c", "\tmax_steps: 3", "- - -", "{", "key: 'unterminated", "max_steps: 1\nmax_steps: 2",
              "!!python/object/apply:os.system ['echo pwned']", "max_steps: !!binary aGVsbG8=", "? [a, b]\n: c",
              "&a [*a]", "max_steps: *undefined", "%YAML 9.9\n---\nmax_steps: 1", "---\nmax_steps: 1\n---\nmax_steps: 2",
              "lora_rank: 8\n" * 1000, "x" * 100_000, "[" * 100_000, "{a: " * 10_000]
    for n, text in enumerate(broken):
        texts.append(("broken-yaml", f"broken-{n}", text.encode()))
    lol = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    texts += [("broken-yaml", "billion-laughs-unknown-key", lol.encode()),
              ("broken-yaml", "billion-laughs-in-field", (lol.replace("i: &i", "zz: &i") + "lora_target_modules: *i\n")
               .encode())]
    for n, key in enumerate(["lora_rnak", "train", "Max_Steps", "max-steps", "", "null", "1", "[x]"]):
        texts.append(("unknown-key", f"unknown-{n}", (header + f"{key or chr(34) * 2}: 3\n").encode()))
    texts += [("non-utf8", "latin-1", (header + "output_name: caf\xe9\n").encode("latin-1")),
              ("non-utf8", "utf-16", (header + "max_steps: 3\n").encode("utf-16")),
              ("non-utf8", "nul", (header + "max_steps: 3\x00\n").encode()),
              ("non-utf8", "binary", random.Random(3).randbytes(2048)),
              ("wrong-kind", "empty", b""), ("wrong-kind", "comment-only", b"# nothing\n"),
              ("wrong-kind", "a-list", b"- train_file: x\n"), ("wrong-kind", "a-scalar", b"42\n"),
              ("wrong-kind", "json", json.dumps({"train_file": "{good}", "max_steps": "3"}).encode()),
              ("wrong-kind", "zip", _zip())]
    absurd = ["max_steps: 1e23", "max_steps: 100000000000000", "num_epochs: 1000000000", "lora_rank: 1000000000",
              "batch_size: 1000000000", "max_seq_length: 1000000000000", "gradient_accumulation_steps: 1000000000",
              "learning_rate: 1e300", "warmup_ratio: 1e30", "lora_alpha: 1e30", "seed: 1e30"]
    for n, text in enumerate(absurd):
        texts.append(("absurd-number", f"absurd-{n}-{text.split(':')[0]}", (header + text + "\n").encode()))
    found = [Case(f"train/{kind}/{label}", "train", kind, "recipe.yaml", data) for kind, label, data in texts]
    for special in ("fifo", "link-to-dev-zero", "dangling-link", "directory", "missing"):
        found.append(Case(f"train/special/{special}", "train", "special", "recipe.yaml", special=special, how="child"))
    found.append(Case("train/unreadable/chmod-000", "train", "unreadable", "recipe.yaml", b"max_steps: 3\n",
                      special="chmod-000", how="unprivileged"))
    return found


NUMBER_VALUES = ["abc", "-1", "0", "1e400", "", "nan", "inf", "-inf", "99999999999999999999999", "1.5", "0x10", "1e23",
                 "-0", " 3"]
TEXT_VALUES = ["", "x" * 5000, "../../etc/passwd", "nan", "a,b,,c", "\\", "\u202e\ufeff", "-"]


def _config_flags(config: Any, exclude: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(flag, 'number'|'text'|'bool') for every field flag of `config`."""
    from inhouse import cli_options

    found = []
    for path, info in cli_options._flags(config, exclude):
        kind, _ = cli_options._cli_type(info.annotation)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flag = "--" + str(extra.get("flag") or path[-1].replace("_", "-"))
        found.append((flag, "number" if kind in (int, float) else "bool" if kind is bool else "text"))
    return found


def flag_cases() -> list[Case]:
    from inhouse.data.prepare_config import ColumnConfig, PrepareConfig
    from inhouse.eval.config import EvalConfig
    from inhouse.generation import GenerationConfig
    from inhouse.rag.config import AskConfig, SearchConfig
    from inhouse.recipe import Recipe
    from inhouse.serve.config import ServeConfig

    commands = [
        ("check", ["data", "check", "{good}", "--model", "builtin:tiny"], ColumnConfig, ()),
        ("scan", ["data", "scan", "{good}"], ColumnConfig, ()),
        ("prepare", ["data", "prepare", "{good}", "--out", "{out}"], PrepareConfig, ("rules",)),
        ("train", ["train", "--train-file", "{good}"], Recipe, ()),
        ("eval", ["eval", "some-adapter", "--data", "{good}"], EvalConfig, ()),
        ("generate", ["generate", "builtin:tiny", "--prompt", "hi"], GenerationConfig, ()),
        ("ask", ["ask", "a question?", "--kb", "kb"], AskConfig, ()),
        ("rag-search", ["rag", "search", "a query", "--kb", "kb"], SearchConfig, ()),
        ("serve", ["serve"], ServeConfig, ()),
    ]
    found = []
    for label, words, config, exclude in commands:
        for flag, kind in _config_flags(config, exclude):
            if kind == "bool":
                continue
            values = NUMBER_VALUES if kind == "number" else TEXT_VALUES
            for n, value in enumerate(values):
                found.append(Case(f"flags/{label}/{flag}-{n}", "flags", label, args=(*words, flag, value)))
    others = [["data", "check", "{good}", "--max-seq-length", v] for v in NUMBER_VALUES]
    others += [["jobs", "list", "--limit", v] for v in NUMBER_VALUES]
    others += [["jobs", "events", "ftjob-x", "--limit", v] for v in NUMBER_VALUES]
    others += [["jobs", w, v] for w in ("show", "events", "cancel") for v in ("", "ftjob-nope", "x" * 5000, "' or 1=1 --")]
    others += [["rag", "index", v, "--kb", "{out}"] for v in ("", "{good}", "/dev/null", "/nonexistent")]
    others += [["rag", "index", "{dir}", "--kb", v] for v in ("", "{good}", "/dev/null", "/proc/x")]
    others += [["merge", "nope", "--dtype", v] for v in ("", "int8", "float64")]
    others += [["data", "scan", "{good}", "--kinds", v] for v in ("", "NOPE", ",", "EMAIL,,")]
    others += [["data", "prepare", "{good}", "--out", v] for v in ("", "/", "/dev/null", "/proc/1")]
    others += [["data", "prepare", "{good}", "--out", "{out}", "--recipe", v] for v in ("", "/dev/null", "{good}")]
    for n, words in enumerate(others):
        found.append(Case(f"flags/other/{'-'.join(words[:2])}-{n}", "flags", "other", args=tuple(words)))
    return found


def http_cases(rng: random.Random, every: list[tuple[str, str, bytes]]) -> list[Case]:
    found = [Case(f"http-files/{kind}/{label}", "http-files", kind, "up" + _file_name(kind, label, rng)[4:] or "up",
                  data, how="http") for kind, label, data in every]
    found += [Case("http-files/huge/over-limit", "http-files", "huge-line", "big.jsonl", GOOD * (2**21 // len(GOOD)),
                   how="http")]
    for n, (fields, label) in enumerate([({}, "no-fields"), ({"purpose": "fine-tune"}, "no-file"),
                                         ({"file": None}, "no-purpose"), ({"file": None, "purpose": "batch"}, "bad-purpose"),
                                         ({"file": None, "purpose": ""}, "empty-purpose")]):
        found.append(Case(f"http-files/form/{label}", "http-files", "form", "f.jsonl", GOOD, body=fields, how="http"))
    for n, name in enumerate(["../../etc/passwd", "", "a" * 5000, "\u202e.jsonl", "x\r\ny.jsonl", "nul\x00.jsonl"]):
        found.append(Case(f"http-files/name/{n}", "http-files", "file-name", name, GOOD, how="http"))
    found += [Case("http-files/raw/not-multipart", "http-files", "form", body=b'{"purpose": "fine-tune"}', how="http"),
              Case("http-files/raw/broken-multipart", "http-files", "form",
                   body=b"--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc", how="http")]
    base = {"model": "tiny", "training_file": "{file}"}
    bodies: list[tuple[str, str, Any]] = []
    for key in ("model", "training_file", "validation_file", "hyperparameters", "method", "suffix", "seed", "metadata",
                "integrations", "recipe", "devices"):
        for n, odd in enumerate([None, 1, -1, 1e308, "", "x", [], {}, [1], {"a": {"b": []}}, True, "file-nope",
                                 "\ud800", 10**30]):
            bodies.append(("wrong-type", f"{key}-{n}", {**base, key: odd}))
    for n, hp in enumerate([{"n_epochs": "abc"}, {"n_epochs": -1}, {"n_epochs": 10**12}, {"batch_size": 0},
                            {"learning_rate_multiplier": "nan"}, {"learning_rate_multiplier": -1e308}, {"zzz": 1},
                            {"n_epochs": "auto"}, {"n_epochs": [1]}, {"n_epochs": 1.5}]):
        bodies.append(("hyperparameters", f"hp-{n}", {**base, "hyperparameters": hp}))
    for n, recipe in enumerate([{"max_steps": "abc"}, {"max_steps": -5}, {"lora_rank": {}}, {"zzz": 1},
                                {"train_file": "/etc/passwd"}, {"output_name": "../x"}, {"learning_rate": "inf"},
                                {"base_model": "/"}, {"max_seq_length": None}, {"lora_target_modules": [[[]]]}]):
        bodies.append(("recipe", f"recipe-{n}", {**base, "recipe": recipe}))
    for n, model in enumerate(["gpt-4o-mini", "", "/", "/etc", "../tiny", "builtin:nope", "tiny:ft:x", "x" * 5000]):
        bodies.append(("unknown-model", f"model-{n}", {**base, "model": model}))
    for n, body in enumerate([{}, {"model": "tiny"}, {"training_file": "{file}"}, {**base, "training_file": "file-nope"},
                              {**base, "validation_file": "file-nope"}, {**base, "training_file": "{bad_file}"}]):
        bodies.append(("missing-file", f"missing-{n}", body))
    raw = [b"", b"{", b"null", b"[]", b'"text"', b"42", b"[" * 100_000 + b"]" * 100_000,
           b'{"a":' * 100_000 + b"1" + b"}" * 100_000, b"\xff\xfe{}", b'{"model": "\xff"}']
    bodies += [("raw-body", f"raw-{n}", body) for n, body in enumerate(raw)]
    bodies += [("too-large", "over-max-body-mb", b"{" + b" " * (9 * 2**20))]  # --max-body-mb is 8
    found += [Case(f"http-jobs/{kind}/{label}", "http-jobs", kind, body=body, how="http") for kind, label, body in bodies]
    return found


def cases(seed: int = 16) -> list[Case]:
    """Every case, in a fixed order for a given seed."""
    rng = random.Random(seed)
    every = payloads(random.Random(seed))
    return [*data_cases(rng), *rag_cases(rng, every), *recipe_cases(), *flag_cases(), *http_cases(rng, every)]


def sample(all_cases: list[Case], per_group: int = 2, seed: int = 16) -> list[Case]:
    """A few cases of every (command, kind): what the default test run covers. One where a case costs
    seconds: a child process (special files, another user) or an embedder at work (rag index)."""
    rng = random.Random(seed)
    groups: dict[tuple[str, str], list[Case]] = {}
    for case in all_cases:
        groups.setdefault((case.command, case.kind), []).append(case)
    picked = []
    for key in sorted(groups):
        costly = key[0] == "rag-index" or groups[key][0].how in ("child", "unprivileged")
        picked += rng.sample(groups[key], min(1 if costly else per_group, len(groups[key])))
    return picked


# --- running a case ------------------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    code: int | None = None  # exit code, or HTTP status
    out: str = ""
    err: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0
    failures: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures


class Hang(BaseException):
    """Raised by the alarm in an in-process case that ran past the time budget."""


class Accepted(BaseException):
    """A command whose config was accepted, stopped before its (slow) work: test_flags' trick."""


def _words(case: Case, folder: Path, file: Path | None, good: Path) -> list[str]:
    out = folder / "out"
    if case.command in ("check", "scan"):
        return ["data", case.command, str(file)]
    if case.command == "prepare":
        return ["data", "prepare", str(file), "--out", str(out)]
    if case.command == "rag-index":
        return ["rag", "index", str(file.parent), "--kb", str(out)]
    if case.command == "train":
        return ["train", str(file), "-q"]
    return [w.replace("{good}", str(good)).replace("{out}", str(out)).replace("{dir}", str(folder))
            for w in case.args]


def prepare_case(case: Case, folder: Path) -> tuple[list[str], Path | None]:
    """Write the case's inputs under `folder`; returns the command's words and the odd file."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.jsonl"
    good.write_bytes(GOOD)
    file = None
    if case.command in ("check", "scan", "prepare", "train"):
        data = case.data.replace(b"{good}", str(good).encode()) if case.data else case.data
        file = materialise(Case(**{**case.__dict__, "data": data}), folder / "in")
    elif case.command == "rag-index":
        docs = folder / "docs"
        docs.mkdir()
        (docs / "good.md").write_text("# Returns\n\nLamps can be returned within 30 days.\n", encoding="utf-8")
        file = materialise(case, docs)
    if case.special == "missing":
        file = folder / "in" / "missing.jsonl"
    return _words(case, folder, file, good), file


@contextlib.contextmanager
def _alarm(seconds: float):
    def ring(signum, frame):
        raise Hang(f"over {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def _stop_before_work():
    """Flags and recipes of commands that would load models or train: check the config, then stop."""
    from unittest import mock

    from inhouse import cli, recipe

    real = recipe.build_config

    def build_then_stop(config, *args, **kw):
        built = real(config, *args, **kw)
        if config.__name__ not in ("ColumnConfig", "PrepareConfig"):
            raise Accepted
        return built

    with mock.patch.object(recipe, "build_config", build_then_stop), \
            mock.patch.object(cli, "build_config", build_then_stop), \
            mock.patch.object(recipe, "build", lambda file=None, **o: build_then_stop(recipe.Recipe, file, **o)):
        yield


def run_inprocess(case: Case, words: list[str], budget_s: float = TIME_BUDGET_S) -> Outcome:
    from helpers import run_cli

    outcome = Outcome(case)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    clock = time.perf_counter()
    try:
        with _alarm(budget_s), _stop_before_work():
            outcome.code, outcome.out, outcome.err = run_cli(*words, env=dict(case.env))
    except Accepted:
        outcome.code, outcome.note = 0, "accepted (stopped before the work)"
    except Hang as e:
        outcome.failures.append(f"hang: {e}")
    outcome.seconds = time.perf_counter() - clock
    outcome.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    return outcome


_CHILD = """
import os, sys, runpy
sys.argv = ['inhouse', *sys.argv[2:]]
if sys.argv[1:2] == ['train']:  # check the recipe, never train
    from inhouse import recipe
    real = recipe.build
    def build(*a, **k):
        real(*a, **k); print('ACCEPTED', file=sys.stderr); sys.exit(0)
    recipe.build = build
if os.environ.pop('FUZZ_UNPRIVILEGED', None):  # setpriv --reuid=65534, after the imports it needs
    import inhouse.cli, inhouse.data.check, inhouse.data.pii, inhouse.data.prepare, inhouse.rag.index, inhouse.recipe
    import inhouse.data.formats, inhouse.rag.ingest, yaml, encodings.latin_1, encodings.utf_16, json.decoder
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    runpy.run_module('inhouse', run_name='__main__')
finally:
    status = open('/proc/self/status').read()
    print('PEAK', status.split('VmHWM:')[1].split()[0], file=sys.stderr)
"""


def run_child(case: Case, words: list[str], budget_s: float = TIME_BUDGET_S) -> Outcome:
    """In a fresh interpreter: special files may block, and unprivileged cases drop root."""
    outcome = Outcome(case)
    env = {**os.environ, **dict(case.env)}
    if case.how == "unprivileged":
        env["FUZZ_UNPRIVILEGED"] = "1"
    clock = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, "-", *words], capture_output=True, text=True, env=env,
                              timeout=budget_s, errors="replace")
    except subprocess.TimeoutExpired:
        outcome.failures.append(f"hang: over {budget_s:.0f} s")
        outcome.seconds = time.perf_counter() - clock
        return outcome
    outcome.seconds = time.perf_counter() - clock
    outcome.code, outcome.out = proc.returncode, proc.stdout
    err, _, peak = proc.stderr.rpartition("PEAK")
    outcome.err = err if peak else proc.stderr
    outcome.peak_mb = int(peak.split()[0]) / 1024 if peak.strip() else 0.0
    if "ACCEPTED" in outcome.err:
        outcome.note, outcome.err = "accepted (stopped before the work)", outcome.err.replace("ACCEPTED\n", "")
    return outcome


def unprivileged_ready(folder: Path) -> str | None:
    """Why the unprivileged cases cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root: chmod 000 already binds this user"
    return None


def open_for_nobody(folder: Path) -> None:
    """Let uid 65534 write in `folder` (whose parents it can already walk through)."""
    for parent in folder.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise RuntimeError(f"{parent} is closed to other users: give unprivileged cases a folder under /tmp")
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink() and path.name != "locked":
            os.chmod(path, 0o777)
        elif path.is_file() and not path.is_symlink() and os.stat(path).st_mode & 0o777:
            os.chmod(path, 0o644)
    os.chmod(folder, 0o777)


def leftovers(folder: Path) -> list[str]:
    """Staging folders and temp files a writer left behind (names from inhouse.atomic)."""
    found = []
    for path in folder.rglob("*"):
        name = path.name
        if ".staging-" in name or ".old-" in name or (name.startswith(".") and name.endswith(".tmp")) \
                or name.startswith(".inhouse-staging"):
            found.append(str(path.relative_to(folder)))
    return found


def judge(outcome: Outcome, folder: Path, file: Path | None) -> Outcome:
    """Every promise a case must keep; failures are appended to the outcome."""
    case, text = outcome.case, outcome.out + outcome.err
    if outcome.failures:
        return outcome
    usage = outcome.code == 2 and "Usage:" in outcome.err and "Error:" in outcome.err  # click's, before any work
    if outcome.code not in (0, 1) and not usage:
        outcome.failures.append(f"exit code {outcome.code}")
    if "Traceback" in text:
        outcome.failures.append("traceback")
    if "run with --debug for the traceback" in text:
        outcome.failures.append("unexpected exception: " + outcome.err.strip().splitlines()[-1][:200])
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    if outcome.code == 1 and len(lines) > 1:
        outcome.failures.append(f"error is {len(lines)} lines, not one")
    if outcome.code == 1 and not lines and not outcome.out.strip():
        outcome.failures.append("exit 1 without a word")
    if outcome.code == 1 and case.file_level and file is not None and lines and file.name not in lines[0] \
            and "\\x" not in lines[0] and os.fsdecode(file.name) not in text:
        outcome.failures.append("the error does not name the file")
    if case.kind == "absurd-number" and outcome.code == 0:
        outcome.failures.append("an absurd number was accepted")  # recipes have upper bounds (issue #16 point 3)
    if outcome.seconds > TIME_BUDGET_S:
        outcome.failures.append(f"slow: {outcome.seconds:.1f} s")
    if outcome.peak_mb > MEMORY_BUDGET_MB:
        outcome.failures.append(f"memory: {outcome.peak_mb:.0f} MB")
    out = folder / "out"
    if case.command == "prepare" and out.exists() and not (out / "report.json").is_file():
        outcome.failures.append("--out exists without report.json")
    if case.command == "prepare" and outcome.code == 1 and out.exists():
        outcome.failures.append("failed but --out exists")
    if found := leftovers(folder):
        outcome.failures.append(f"left behind: {found[:3]}")
    return outcome


def run(case: Case, folder: Path) -> Outcome:
    """Run one CLI case in `folder` (fresh, empty) and judge it."""
    words, file = prepare_case(case, folder)
    if case.how == "unprivileged":
        if reason := unprivileged_ready(folder):
            return Outcome(case, note=f"skipped: {reason}")
        open_for_nobody(folder)
    runner = run_child if case.how in ("child", "unprivileged") else run_inprocess
    outcome = judge(runner(case, words), folder, file)
    _unlock(folder)
    return outcome


def _unlock(folder: Path) -> None:
    """Give chmod 000 files back their mode, so the folder can be removed."""
    for path in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            if not path.is_symlink() and not path.stat().st_mode & 0o700:
                os.chmod(path, 0o700)


# --- HTTP ----------------------------------------------------------------------------------------


def _request(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    """POST with the standard library (status, text); an HTTP error status is an answer, not an exception."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST", headers={"content-type": content_type,
                                                                              "authorization": "Bearer unused"})
    try:
        with urllib.request.urlopen(request, timeout=TIME_BUDGET_S) as reply:
            return reply.status, reply.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def multipart(fields: dict[str, str], file: tuple[str, bytes] | None) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type; the file name is sent as given (odd ones too)."""
    boundary = "fuzz-boundary-7f3a"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    if file is not None:
        name = file[0].replace('"', "%22").encode("utf-8", "surrogateescape")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="'.encode() + name
                     + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + file[1] + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def http_fixtures(url: str) -> dict[str, str]:
    """A good and a bad uploaded file that job bodies refer to ({file}, {bad_file})."""
    ids = {}
    for key, data in (("{file}", GOOD), ("{bad_file}", b"{not json\n")):
        status, text = _request(url + "/v1/files", *multipart({"purpose": "fine-tune"}, ("f.jsonl", data)))
        assert status == 200, text
        ids[key] = json.loads(text)["id"]
    return ids


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def run_http(case: Case, url: str, ids: dict[str, str]) -> Outcome:
    """POST the case; any 5xx, a hang or an error body that is not OpenAI's shape is a failure."""
    outcome = Outcome(case)
    clock = time.perf_counter()
    try:
        outcome.code, text = _post(case, url, ids)
    except TimeoutError:
        outcome.failures.append(f"hang: over {TIME_BUDGET_S:.0f} s")
        return outcome
    except OSError as e:
        if case.kind == "too-large" and ("reset" in str(e).lower() or "broken pipe" in str(e).lower()):
            # the server answered 413 on the Content-Length and closed before the body was read: fine
            outcome.code, outcome.note = 413, "connection closed while sending"
        else:
            outcome.failures.append(f"connection: {e}")
        return outcome
    outcome.seconds = time.perf_counter() - clock
    outcome.out = text[:2000]
    if outcome.code >= 500 or outcome.code < 200:
        outcome.failures.append(f"HTTP {outcome.code}")
    if "Traceback" in text:
        outcome.failures.append("traceback")
    if outcome.code >= 400:
        try:
            message = json.loads(text)["error"]["message"]
            assert isinstance(message, str) and message
        except (ValueError, KeyError, TypeError, AssertionError):
            outcome.failures.append("error body is not OpenAI's {error: {message}}")
    if outcome.seconds > TIME_BUDGET_S:
        outcome.failures.append(f"slow: {outcome.seconds:.1f} s")
    return outcome


def _post(case: Case, url: str, ids: dict[str, str]) -> tuple[int, str]:
    if case.command == "http-jobs":
        body = case.body if isinstance(case.body, bytes) else \
            json.dumps(_fill(case.body, ids), allow_nan=True).encode("utf-8", "surrogatepass")
        return _request(url + "/v1/fine_tuning/jobs", body, "application/json")
    if isinstance(case.body, bytes):
        return _request(url + "/v1/files", case.body, "multipart/form-data; boundary=x")
    fields = case.body if case.body is not None else {"file": None, "purpose": "fine-tune"}
    data = {k: v for k, v in fields.items() if k != "file"}
    return _request(url + "/v1/files", *multipart(data, (case.name, case.data) if "file" in fields else None))
