"""README.md of a library entry: a model card written from its lineage (inhouse.json).

PEFT's `save_pretrained` leaves a template full of "[More Information Needed]", yet the
lineage already knows what the entry is, which data (by hash) and recipe made it and how
the loss went. The card says that, for people and for the Hugging Face Hub (whose
metadata is the YAML front matter, written by huggingface_hub's ModelCardData). It is
written into the staging folder, so it appears together with the weights. Every lineage
key is optional: a key this module does not know yet is still shown, under "Also recorded".
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from inhouse import atomic

CARD = "README.md"
ADAPTER_FILE = "adapter_config.json"
KINDS = {
    "lora": "a LoRA adapter",
    "qlora": "a QLoRA adapter (LoRA trained on the base quantised to 4-bit NF4)",
    "full": "a full fine-tune (every weight trained)",
    "dpo": "a LoRA adapter preference-tuned with DPO (chosen over rejected answers)",
    "checkpoint": "an intermediate checkpoint of a fine-tuning job",
    "merged": "a model with a LoRA adapter merged into its base weights",
}
# Lineage keys some section below renders; any other key goes to "Also recorded".
SHOWN = {"name", "kind", "base_model", "data", "examples", "recipe", "metrics", "history", "versions",
         "started_at", "finished_at", "origin", "merged_from", "merged_dtype", "parent", "step", "license",
         "tags", "evaluations", "exports"}
RECORDED = {"evaluations": "Evaluations", "exports": "Exports"}  # made from the entry after it was published
BEST = ("best", "early_stop")  # top-level scalars with these prefixes join the metrics table


def write_card(folder: Path, lineage: dict[str, Any], where: Path) -> None:
    """Replace whatever README the weights' save_pretrained left in `folder` (a staging folder that
    becomes `where`, or the entry itself when its lineage changes) with the card of `lineage`. A file
    name that is not UTF-8 is written escaped rather than failing a publish that training already paid for."""
    card = render(lineage, where, adapter=(folder / ADAPTER_FILE).is_file())
    atomic.write_text(folder / CARD, str(card), errors="backslashreplace")


def render(lineage: dict[str, Any], where: Path, adapter: bool) -> ModelCard:
    """The card: Hub metadata, then one section per thing the lineage records."""
    source = lineage.get("parent") or lineage  # a merged model trained as its adapter did
    sections = [_about(lineage), _data(source), _metrics(source), _history(source.get("history")),
                _recipe(source.get("recipe")), _versions(lineage.get("versions")), _times(lineage, source),
                *_recorded(lineage), _usage(lineage, where, adapter), _rest(source, lineage)]
    body = "\n\n".join("\n".join(s) for s in sections if s)
    return ModelCard(f"---\n{metadata(lineage, adapter).to_yaml()}\n---\n\n{body}\n")


def metadata(lineage: dict[str, Any], adapter: bool) -> ModelCardData:
    """Hub metadata; base_model only when it is a Hub id (the Hub rejects a local path there)."""
    kind = str(lineage.get("kind") or "")
    return ModelCardData(base_model=hub_id(lineage.get("base_model")),
                         library_name="peft" if adapter else "transformers",
                         license=lineage.get("license") or base_license(lineage.get("base_model")),
                         pipeline_tag="text-generation",
                         tags=list(dict.fromkeys(["inhouse", *([kind] if kind else []), *_tags(lineage)])))


def _tags(lineage: dict[str, Any]) -> list[str]:
    return [str(t) for t in lineage.get("tags") or [] if isinstance(t, str)]


def hub_id(base: Any) -> str | None:
    if not isinstance(base, str) or Path(base).expanduser().exists():
        return None
    try:
        validate_repo_id(base)
    except HFValidationError:
        return None
    return base


def base_license(base: Any) -> str | None:
    """The license a local base model's own card declares, so the adapter's card can repeat it."""
    readme = Path(str(base or "")) / CARD
    try:
        return ModelCard.load(readme).data.license if base and readme.is_file() else None
    except Exception:  # noqa: BLE001 - an unreadable base card only costs the license line
        return None


# --- Markdown that shows user strings literally -------------------------------------------


def code(text: Any) -> str:
    """Inline code for a name or path: no backtick, HTML or newline in it can break out."""
    text = " ".join(str(text).splitlines())
    ticks = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def cell(value: Any) -> str:
    """A table cell: numbers as numbers, anything else as code; a pipe would end the cell, even in code."""
    shown = number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else code(value)
    return shown.replace("|", "\\|")


def number(value: float | int) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:.6g}"


def fenced(text: str, lang: str) -> list[str]:
    """A code block whose fence is longer than any backtick run inside it."""
    fence = "`" * max(3, max(map(len, re.findall("`+", text)), default=0) + 1)
    return [f"{fence}{lang}", text.rstrip("\n"), fence]


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def as_yaml(value: Any) -> list[str]:
    return fenced(yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False), "yaml")


# --- Sections -----------------------------------------------------------------------------


def _about(lineage: dict[str, Any]) -> list[str]:
    kind = lineage.get("kind")
    what = KINDS.get(kind, f"a model of kind {code(kind)}" if kind else "a model")
    lines = [f"# {code(lineage.get('name') or 'unnamed')}", "",
             f"This is {what}, made with inhouse. Base model: {code(lineage.get('base_model') or 'unknown')}."]
    if lineage.get("merged_from"):
        lines.append(f"It is the adapter {code(lineage['merged_from'])} merged into its base in "
                     f"{code(lineage.get('merged_dtype') or '?')}; the training details below are that adapter's.")
    if lineage.get("step") is not None:
        lines.append(f"Saved at optimizer step {number(lineage['step'])}.")
    if lineage.get("origin"):
        lines += ["", "Made by: " + ", ".join(f"{k} {code(v)}" for k, v in lineage["origin"].items() if v)]
    return lines


def _data(source: dict[str, Any]) -> list[str]:
    files = [f for f in source.get("data") or [] if isinstance(f, dict)]
    examples = source.get("examples") or {}
    if not files and not examples:
        return []
    keys = list(dict.fromkeys(k for f in files for k in f))  # path, sha256, then whatever lineage adds
    lines = ["## Training data", ""] + (table(tuple(keys), [tuple(f.get(k, "") for k in keys) for f in files])
                                        if files else [])
    counts = ", ".join(f"{number(n)} {split}" for split, n in examples.items() if isinstance(n, int))
    return lines + (["", f"Examples used (after length filtering): {counts}."] if counts else [])


def _metrics(source: dict[str, Any]) -> list[str]:
    """The run's metrics, and any scalar the lineage records about its best point or early stop."""
    metrics = {k: v for k, v in (source.get("metrics") or {}).items() if v is not None} | _best(source)
    if not metrics:
        return []
    return ["## Metrics", "", *table(("metric", "value"), list(metrics.items()))]


def _best(lineage: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in lineage.items() if k.startswith(BEST) and isinstance(v, (str, int, float))}


def _history(history: list[dict[str, Any]] | None) -> list[str]:
    lines = loss_lines(history)
    return ["## Loss history", "", *lines] if lines else []


def loss_lines(history: list[dict[str, Any]] | None) -> list[str]:
    """Loss over training in a few lines; the full curve stays in inhouse.json."""
    lines = [_curve(history or [], key, label) for key, label in (("loss", "training"), ("eval_loss", "validation"))]
    return [line for line in lines if line]


def _curve(history: list[dict[str, Any]], key: str, label: str) -> str:
    points = [(h.get("step"), h[key]) for h in history if isinstance(h, dict) and isinstance(h.get(key), (int, float))]
    if not points:
        return ""
    low = min(points, key=lambda p: p[1])
    return (f"- {label} loss: {len(points)} points, first {number(points[0][1])} (step {points[0][0]}), "
            f"lowest {number(low[1])} (step {low[0]}), last {number(points[-1][1])} (step {points[-1][0]})")


def _recipe(recipe: dict[str, Any] | None) -> list[str]:
    return ["## Recipe", "", *as_yaml(recipe)] if recipe else []


def _versions(versions: dict[str, Any] | None) -> list[str]:
    return ["## Package versions", "", *table(("package", "version"), list(versions.items()))] if versions else []


def _times(lineage: dict[str, Any], source: dict[str, Any]) -> list[str]:
    rows = [("training started", source.get("started_at")), ("training finished", source.get("finished_at"))]
    if source is not lineage:
        rows.append(("merged", lineage.get("finished_at")))
    rows = [r for r in rows if r[1]]
    return ["## Timestamps", "", *table(("event", "time (UTC)"), rows)] if rows else []


def _recorded(lineage: dict[str, Any]) -> list[list[str]]:
    """What was evaluated and exported from the entry, as recorded (`registry.record`)."""
    return [[f"## {title}", "", *as_yaml(lineage[key])] for key, title in RECORDED.items() if lineage.get(key)]


def _usage(lineage: dict[str, Any], where: Path, adapter: bool) -> list[str]:
    """How to talk to it with inhouse and load it with transformers; every string quoted for its language."""
    name, base = str(lineage.get("name") or where.name), str(lineage.get("base_model") or "BASE_MODEL")
    load = ([f"base = AutoModelForCausalLM.from_pretrained({base!r})",
             f"model = PeftModel.from_pretrained(base, {str(where)!r})"] if adapter
            else [f"model = AutoModelForCausalLM.from_pretrained({str(where)!r})"])
    python = ["from transformers import AutoModelForCausalLM, AutoTokenizer",
              *(["from peft import PeftModel"] if adapter else []), "", *load,
              f"tokenizer = AutoTokenizer.from_pretrained({str(where)!r})"]
    return ["## How to use", "", *fenced(f"inhouse chat {shlex.quote(name)}", "bash"), "",
            *fenced("\n".join(python), "python")]


def _rest(*lineages: dict[str, Any]) -> list[str]:
    rest = {k: v for d in lineages for k, v in d.items() if k not in SHOWN and k not in _best(d)}
    return ["## Also recorded", "", *as_yaml(rest)] if rest else []
