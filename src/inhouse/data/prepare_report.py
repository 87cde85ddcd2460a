"""The human half of the preparation report: Markdown from report.json's content."""

from __future__ import annotations

from typing import Any

STEP_ORDER = ("load", "normalize", "dedup", "conflicts", "pii", "schema", "length")


def render_markdown(report: dict[str, Any]) -> str:
    counts, events = report["counts"], report["events"]
    unit = counts.get("unit", "examples")
    lines = [f"# Data preparation report: {report['source']}", "", "## Summary", "",
             f"| step | removed | changed | flagged | {unit} after |", "|---|---:|---:|---:|---:|"]
    by_step = counts.get("by_step", {})
    after = {"load": counts["valid"], "normalize": counts.get("after_normalize"), "dedup": counts.get("after_dedup"),
             "conflicts": counts.get("after_conflicts"), "pii": counts.get("after_pii"), "schema": counts.get("after_structured"),
             "length": counts.get("after_length")}
    for step in STEP_ORDER:
        mine = by_step.get(step, {})
        lines.append(f"| {step} | {mine.get('removed', 0)} | {mine.get('changed', 0)} | {mine.get('flagged', 0)} "
                     f"| {after[step]} |")
    split = counts["split"]
    lines += ["", f"Loaded {counts['loaded']} {unit}; {counts.get('examples_removed', 0)} removed, "
              f"{counts.get('examples_changed', 0)} changed; split: train {split['train']}, validation "
              f"{split['validation']}, test {split['test']}. Counts are {unit} (one {unit[:-1]} with several "
              "problems counts once).", ""]
    lines += _balance(counts) + _strata(counts) + _allowed(counts)
    for step in STEP_ORDER:
        mine = [e for e in events if e["step"] == step and e["action"] != "allowed"]
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


def _allowed(counts: dict[str, Any]) -> list[str]:
    """Values --pii-allow let stay, counted: public by definition, so shown whole."""
    if not counts.get("pii_allowed"):
        return []
    rows = ["## PII allowed (--pii-allow)", "", "| value | occurrences |", "|---|---:|"]
    return rows + [f"| {_cell(k)} | {n} |" for k, n in counts["pii_allowed"].items()] + [""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
