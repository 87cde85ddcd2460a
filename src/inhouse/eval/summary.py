"""The terminal summary of `inhouse eval`: every number in the report, base / tuned / delta.

Built from the report dict alone (the same flattening as the HTML table), so a metric the
evaluation starts computing shows up here without anyone editing the CLI.
"""

from __future__ import annotations

import math
from typing import Any

from inhouse.eval.report import NA, RAG_COLUMNS, RAG_LEGEND, metric_rows, rag_rows, retrieval_line

Row = tuple[str, Any, Any, Any]
HEADER = ("metric", "base", "tuned", "delta")


def summary_rows(report: dict[str, Any]) -> list[Row]:
    """Reference/text/JSON metrics, then the judge's, then the forgetting check's."""
    return (metric_rows(report["base"], report["tuned"]) + judge_rows(report.get("judge"))
            + forgetting_rows(report.get("forgetting")))


def judge_rows(judge: dict[str, Any] | None) -> list[Row]:
    """Mean scores and verdict counts per side; the raw verdict texts stay in report.json."""
    if not judge:
        return []
    base, tuned = ({k: v for k, v in (judge.get(side) or {}).items() if k != "raw"} for side in ("base", "tuned"))
    return [(f"judge.{name}", b, t, d) for name, b, t, d in metric_rows(base, tuned)]


def forgetting_rows(forgetting: dict[str, Any] | None) -> list[Row]:
    """`X_before` / `X_after` pairs (adapter off / on) as base / tuned; any other number is about the
    tuned model, so it goes in that column."""
    rows: list[Row] = []
    for key, value in (forgetting or {}).items():
        if key.endswith("_before"):
            name = key.removesuffix("_before")
            after = forgetting.get(f"{name}_after")
            rows += [(f"forgetting.{n}", b, t, d) for n, b, t, d in metric_rows({name: value}, {name: after})]
        elif not key.endswith("_after") and isinstance(value, (int, float)):
            rows.append((f"forgetting.{key}", None, value, None))
    return rows


def cell(value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:+.4f}" if signed and math.isfinite(value) else f"{value:.4f}"
    return f"{value:+d}" if signed and isinstance(value, int) else str(value)


def aligned(table: list[tuple[str, ...]]) -> list[str]:
    """Rows of text cells: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join([row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:])]).rstrip()
            for row in table]


def format_summary(report: dict[str, Any]) -> str:
    """An aligned table of `summary_rows`, the forgetting verdict with its reasons when flagged, and with
    --kb the closed-book vs retrieval table."""
    lines = aligned([HEADER] + [(name, cell(b), cell(t), cell(d, signed=True))
                                for name, b, t, d in summary_rows(report)])
    forgetting = report.get("forgetting") or {}
    if forgetting.get("flagged"):
        lines.append("forgetting: FLAGGED - " + "; ".join(forgetting.get("reasons") or []))
    if report.get("rag"):
        lines += ["", *format_rag(report["rag"])]
    return "\n".join(lines)


def format_rag(rag: dict[str, Any]) -> list[str]:
    """The four conditions side by side (— where a number does not apply), retrieval once, a legend."""
    header = ("condition", *(h for _, h in RAG_COLUMNS))
    rows = [(label, *(NA if v is None else cell(v) for v in values)) for label, values in rag_rows(rag)]
    return aligned([header, *rows]) + [retrieval_line(rag["retrieval"]), *RAG_LEGEND]
