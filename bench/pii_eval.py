"""Precision and recall of `inhouse.data.pii` on the labelled cases.

    .venv/bin/python bench/pii_eval.py                        # table + bench/results/pii_eval.json
    .venv/bin/python bench/pii_eval.py --show-errors          # also list every miss and false alarm
    .venv/bin/python bench/pii_eval.py --cases other.jsonl --out /tmp/x.json

Each line of the cases file is `{"text": ..., "expected": [{"kind", "value"}]}`.
A finding is a true positive when its kind matches an expected item and its
text equals the expected value once surrounding whitespace and punctuation
are stripped from both; each expected item can be matched once. Anything
else found is a false positive, anything expected and not found a miss.
Targets (issue): overall recall >= 0.98 and precision >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

from inhouse.data.pii import KINDS, find_pii

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CASES = ROOT / "tests" / "data" / "pii_cases.jsonl"
DEFAULT_OUT = ROOT / "bench" / "results" / "pii_eval.json"
STRIP = " \t\r\n.,;:!?\"'()[]{}<>"


def norm(value: str) -> str:
    return value.strip(STRIP)


def load_cases(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score_case(case: dict) -> tuple[Counter, Counter, Counter, list[str]]:
    """(true positives, false positives, misses) per kind, and error lines."""
    tp, fp, fn = Counter(), Counter(), Counter()
    errors: list[str] = []
    left = Counter((e["kind"], norm(e["value"])) for e in case["expected"])
    for f in find_pii(case["text"]):
        key = (f.kind, norm(f.text))
        if left[key] > 0:
            left[key] -= 1
            tp[f.kind] += 1
        else:
            fp[f.kind] += 1
            errors.append(f"FP {f.kind:<15} {f.text!r}  in {case['text'][:100]!r}")
    for (kind, value), n in left.items():
        if n > 0:
            fn[kind] += n
            errors.append(f"FN {kind:<15} {value!r}  in {case['text'][:100]!r}")
    return tp, fp, fn, errors


def ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


def evaluate(cases: list[dict]) -> dict:
    tp, fp, fn = Counter(), Counter(), Counter()
    errors: list[str] = []
    start = time.perf_counter()
    for case in cases:
        a, b, c, e = score_case(case)
        tp, fp, fn, errors = tp + a, fp + b, fn + c, errors + e
    seconds = time.perf_counter() - start
    rows = {k: row(tp[k], fp[k], fn[k]) for k in KINDS}
    positives = sum(bool(c["expected"]) for c in cases)
    return {
        "cases": len(cases),
        "positive_cases": positives,
        "negative_cases": len(cases) - positives,
        "per_kind": rows,
        "overall": row(sum(tp.values()), sum(fp.values()), sum(fn.values())),
        "seconds": round(seconds, 3),
        "errors": errors,
    }


def row(tp: int, fp: int, fn: int) -> dict:
    return {
        "expected": tp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": round(ratio(tp, tp + fp), 4),
        "recall": round(ratio(tp, tp + fn), 4),
    }


def table(result: dict) -> str:
    head = f"| {'kind':<15} | {'expected':>8} | {'TP':>4} | {'FP':>4} | {'FN':>4} | {'precision':>9} | {'recall':>6} |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    items = [*result["per_kind"].items(), ("overall", result["overall"])]
    for kind, r in items:
        lines.append(
            f"| {kind:<15} | {r['expected']:>8} | {r['tp']:>4} | {r['fp']:>4} | {r['fn']:>4} "
            f"| {r['precision']:>9.3f} | {r['recall']:>6.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--show-errors", action="store_true", help="print every miss and false positive")
    args = parser.parse_args(argv)

    result = evaluate(load_cases(args.cases))
    result["cases_file"] = str(args.cases)
    result["python"] = platform.python_version()
    print(
        f"{result['cases']} cases ({result['positive_cases']} with PII, {result['negative_cases']} without) "
        f"scanned in {result['seconds']:.2f} s"
    )
    print(table(result))
    if args.show_errors:
        print("\n".join(result["errors"]) or "no errors")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    overall = result["overall"]
    return 0 if overall["recall"] >= 0.98 and overall["precision"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
