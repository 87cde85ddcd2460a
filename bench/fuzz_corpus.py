"""Run the whole fuzz corpus (tests/fuzz/corpus.py) and print its outcomes per command and per case kind.

    python bench/fuzz_corpus.py                    # every case (a few thousand; minutes)
    python bench/fuzz_corpus.py --only check/nul   # the cases whose id starts with this
    python bench/fuzz_corpus.py --sample           # the default test run's sample

Writes bench/results/fuzz_corpus.json: the counts, and each failing case with what went wrong.
An HTTP case needs a server: one `inhouse serve --no-jobs` over builtin:tiny is started for them all.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from fuzz import corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--only", default="", help="run the cases whose id starts with this")
    parser.add_argument("--sample", action="store_true", help="only the default test run's sample")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz_corpus.json")
    args = parser.parse_args()
    every = corpus.cases(args.seed)
    chosen = corpus.sample(every) if args.sample else every
    chosen = [c for c in chosen if c.id.startswith(args.only)]
    clock = time.perf_counter()
    outcomes = run_all(chosen)
    seconds = time.perf_counter() - clock
    print_table(outcomes)
    failed = [o for o in outcomes if o.failures]
    for o in failed:
        print(f"FAIL {o.case.id}: {'; '.join(o.failures)}")
    print(f"{len(outcomes)} cases in {seconds:.0f} s; {len(failed)} failed")
    if not args.only:
        write_json(args.out, outcomes, seconds, args)
    sys.exit(1 if failed else 0)


def run_all(chosen: list[corpus.Case]) -> list[corpus.Outcome]:
    outcomes = []
    base = Path(tempfile.mkdtemp(prefix="inhouse-fuzz-"))
    base.chmod(0o755)  # unprivileged cases run as uid 65534 in folders below it
    os.environ["INHOUSE_HOME"] = str(base / "home")
    try:
        for n, case in enumerate(c for c in chosen if c.how != "http"):
            outcomes.append(corpus.run(case, base / f"c{n}"))
            shutil.rmtree(base / f"c{n}", ignore_errors=True)
        http = [c for c in chosen if c.how == "http"]
        if http:
            outcomes += run_http(http, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return outcomes


def run_http(http: list[corpus.Case], base: Path) -> list[corpus.Outcome]:
    from serve_helpers import Server

    server = Server(base / "serve-home", "builtin:tiny", "--served-model-name", "tiny", "--no-jobs",
                    "--max-file-mb", "1")
    try:
        ids = corpus.http_fixtures(server.url)
        outcomes = [corpus.run_http(case, server.url, ids) for case in http]
    finally:
        code, log = server.stop()
    if "Traceback" in log:
        print("server log holds a traceback:\n" + log[-3000:])
    return outcomes


def print_table(outcomes: list[corpus.Outcome]) -> None:
    rows = collections.defaultdict(collections.Counter)
    for o in outcomes:
        key = (o.case.command, o.case.kind)
        rows[key]["cases"] += 1
        rows[key]["FAILED" if o.failures else "skipped" if o.note.startswith("skipped") else str(o.code)] += 1
    columns = ["cases", "0", "1", "2", "200", "400", "404", "413", "422", "skipped", "FAILED"]
    columns += sorted({k for r in rows.values() for k in r} - set(columns))
    print(f"{'command':<11} {'kind':<16} " + " ".join(f"{c:>7}" for c in columns))
    for (command, kind), counts in sorted(rows.items()):
        print(f"{command:<11} {kind:<16} " + " ".join(f"{counts.get(c, 0) or '':>7}" for c in columns))


def write_json(path: Path, outcomes: list[corpus.Outcome], seconds: float, args: argparse.Namespace) -> None:
    per_command = collections.defaultdict(collections.Counter)
    for o in outcomes:
        per_command[o.case.command]["FAILED" if o.failures else str(o.code)] += 1
    result = {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "seed": args.seed,
              "sample": args.sample, "cases": len(outcomes), "seconds": round(seconds, 1),
              "per_command": {k: dict(v) for k, v in sorted(per_command.items())},
              "slowest": sorted(((round(o.seconds, 2), o.case.id) for o in outcomes), reverse=True)[:10],
              "failed": [{"id": o.case.id, "failures": o.failures, "code": o.code, "stderr": o.err[-500:]}
                         for o in outcomes if o.failures]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
