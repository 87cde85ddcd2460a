"""The human half of the preparation report: Markdown from report.json's content."""

from __future__ import annotations

from collections import Counter
from typing import Any

STEP_ORDER = ("load", "normalize", "dedup", "pii", "schema", "length")


def render_markdown(report: dict[str, Any]) -> str:
    counts, events = report["counts"], report["events"]
    lines = [f"# Data preparation report: {report['source']}", "", "## Summary", "",
             "| step | removed | changed | examples after |", "|---|---:|---:|---:|"]
    tally = Counter((e["step"], e["action"]) for e in events)
    after = {"load": counts["valid"], "normalize": counts.get("after_normalize"), "dedup": counts.get("after_dedup"),
             "pii": counts.get("after_pii"), "schema": counts.get("after_structured"),
             "length": counts.get("after_length")}
    for step in STEP_ORDER:
        changed = tally[(step, "changed")] + tally[(step, "kept_invalid")]
        lines.append(f"| {step} | {tally[(step, 'removed')]} | {changed} | {after[step]} |")
    split = counts["split"]
    lines += ["", f"Loaded {counts['loaded']} examples; split: train {split['train']}, validation "
              f"{split['validation']}, test {split['test']}.", ""]
    lines += _balance(counts) + _strata(counts)
    for step in STEP_ORDER:
        mine = [e for e in events if e["step"] == step]
        if mine:
            lines += [f"## {step}", "", "| where | action | reason |", "|---|---|---|"]
            lines += [f"| {e['where']} | {e['action']} | {_cell(e['reason'])} |" for e in mine] + [""]
    return "\n".join(lines) + "\n"


def _balance(counts: dict[str, Any]) -> list[str]:
    if "balance" not in counts:
        return []
    b = counts["balance"]
    rows = [f"## Balance (training split, by {b['by']})", "", "| category | before | after |", "|---|---:|---:|"]
    rows += [f"| {k} | {b['before'].get(k, 0)} | {b['after'].get(k, 0)} |" for k in sorted(set(b["before"]) | set(b["after"]))]
    return rows + [""]


def _strata(counts: dict[str, Any]) -> list[str]:
    if "strata" not in counts:
        return []
    rows = ["## Split by category", "", "| category | train | validation | test |", "|---|---:|---:|---:|"]
    rows += [f"| {k} | {v['train']} | {v['validation']} | {v['test']} |" for k, v in sorted(counts["strata"].items())]
    return rows + [""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
