"""How two library entries differ: recipe field by field, metrics with both values and the delta.

One function for the command line (`inhouse adapters diff`) and the web UI's comparison page. A
merged model is compared by the training of the adapter it came from (`Lineage.trained`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from inhouse.adapters.lineage import Lineage


@dataclass(frozen=True)
class Change:
    field: str
    a: Any
    b: Any
    delta: float | None = None  # b - a, when both are numbers


@dataclass(frozen=True)
class Diff:
    a: str
    b: str
    recipe: list[Change]  # only the fields that differ
    same_recipe: int  # how many fields are equal
    metrics: list[Change]  # only the metrics that differ
    same_metrics: int


def _changes(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[Change], int]:
    """The keys whose values differ (a key only one side has counts as None on the other), and how many are equal."""
    keys = list(dict.fromkeys([*a, *b]))
    changed = [Change(k, a.get(k), b.get(k), _delta(a.get(k), b.get(k))) for k in keys if a.get(k) != b.get(k)]
    return changed, len(keys) - len(changed)


def _delta(a: Any, b: Any) -> float | None:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return b - a if numbers else None


def diff(a: Lineage, b: Lineage) -> Diff:
    recipe, same_recipe = _changes(a.trained().recipe or {}, b.trained().recipe or {})
    metrics, same_metrics = _changes(a.trained().metrics or {}, b.trained().metrics or {})
    return Diff(a.name or "a", b.name or "b", recipe, same_recipe, metrics, same_metrics)


def shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value)


def format_diff(d: Diff) -> str:
    """Two aligned tables; a delta carries its sign."""
    recipe = [(c.field, shown(c.a), shown(c.b)) for c in d.recipe]
    metrics = [(c.field, shown(c.a), shown(c.b), "" if c.delta is None else f"{c.delta:+.6g}") for c in d.metrics]
    return "\n".join([*_table(f"recipe: {len(d.recipe)} field(s) differ, {d.same_recipe} the same",
                              ("field", d.a, d.b), recipe), "",
                      *_table(f"metrics: {len(d.metrics)} differ, {d.same_metrics} the same",
                              ("metric", d.a, d.b, "delta"), metrics)])


def _table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return [title]
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return [title] + ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table]
