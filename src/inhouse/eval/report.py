"""The evaluation report: one self-contained HTML file (plots embedded) plus JSON.

Written into a staging folder and renamed into place, like every artifact.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from inhouse.outputs import Output

SHOWN_EXAMPLES = 200  # the HTML shows the worst ones; report.json keeps them all
NA = "\u2014"  # a number that does not apply (closed-book citations) or had nothing to measure
# The closed-book vs retrieval table (inhouse.eval.rag_eval): (key in a condition's metrics, column header)
RAG_COLUMNS = [("exact_match", "EM"), ("f1", "F1"), ("citation_precision", "cite prec"), ("quote_lines", "quotes"),
               ("valid_citations", "valid cites"), ("citation_recall", "cite recall"),
               ("refusal_rate", "refused unans."), ("false_refusal_rate", "refused ans.")]
RAG_LEGEND = ("EM, F1: answerable questions, the answer without [n] markers and quote lines; a refusal scores 0",
              "cite prec: share of the answers' [n] \"quote\" lines found word for word in retrieved source n "
              "(quotes: how many lines)",
              "valid cites: share of cited [n] that name a source shown; cite recall: share of answerable questions "
              "whose oracle document is cited",
              "refused unans. / ans.: refusals on questions the knowledge base cannot / can answer (the first "
              f"should be high, the second low); {NA}: no sources (closed-book) or nothing to measure")


def loss_curves(history: list[dict[str, Any]]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(step, loss) points for training and validation from a run's log history."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    return train, val


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 3.5), dpi=110)


def _png(fig: Any) -> str:
    """The figure as base64 PNG text, and closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plot_png(history: list[dict[str, Any]]) -> str | None:
    """Training and validation loss as a base64 PNG, or None without history."""
    train, val = loss_curves(history)
    if not train and not val:
        return None
    fig, ax = _figure()
    if train:
        ax.plot(*zip(*train), label="training loss", linewidth=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def rag_plot_png(rag: dict[str, Any]) -> str:
    """F1, citation precision and citation recall per condition as grouped bars (no bar: does not apply)."""
    fig, ax = _figure()
    shown = [("f1", "F1"), ("citation_precision", "citation precision"), ("citation_recall", "citation recall")]
    names = list(rag["conditions"])
    for j, (key, label) in enumerate(shown):
        values = [rag["conditions"][c].get(key) for c in names]
        ax.bar([i + (j - 1) * 0.27 for i in range(len(names))],
               [math.nan if v is None else v for v in values], width=0.27, label=label)
    ax.set_xticks(range(len(names)), [rag["labels"][c] for c in names])
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return _png(fig)


def rag_rows(rag: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """(condition label, values in RAG_COLUMNS order) for each condition, in the report's order."""
    return [(rag["labels"][name], [got.get(key) for key, _ in RAG_COLUMNS]) for name, got in rag["conditions"].items()]


def retrieval_line(retrieval: dict[str, Any]) -> str:
    """Retrieval once (it is the same for base and tuned): recall@k of the oracle and the gate's refusals."""
    k = retrieval["k"]
    recall = retrieval.get(f"recall@{k}")
    return (f"retrieval (both RAG rows): recall@{k} of the oracle {NA if recall is None else f'{recall:.4f}'} over "
            f"{retrieval['n_answerable']} answerable questions; the relevance gate refused "
            f"{retrieval['gated_answerable']} of {retrieval['n_answerable']} answerable and "
            f"{retrieval['gated_unanswerable']} of {retrieval['n_unanswerable']} unanswerable questions "
            "without a model call")


def metric_rows(base: dict[str, Any], tuned: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """Flat (name, base, tuned, difference) rows; nested dicts become dotted names."""
    rows = []
    for key in sorted(set(base) | set(tuned)):
        b, t = base.get(key), tuned.get(key)
        if isinstance(b, dict) or isinstance(t, dict):
            rows += [(f"{key}.{n}", bb, tt, d) for n, bb, tt, d in metric_rows(b or {}, t or {})]
        elif isinstance(b, (int, float)) and isinstance(t, (int, float)):
            rows.append((key, b, t, t - b))
        else:
            rows.append((key, b, t, None))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else html.escape(str(value))


def render_html(report: dict[str, Any]) -> str:
    e = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>inhouse eval: {e(report['adapter'])}</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "vertical-align:top;text-align:left}.num{text-align:right}.bad{color:#b00}.good{color:#070}"
             "pre{white-space:pre-wrap;margin:0;max-width:320px}</style>",
             f"<h1>Evaluation of {e(report['adapter'])}</h1>",
             f"<p>{report['n']} held-out examples from <code>{e(report['data'])}</code>"
             + (" (its answerable questions, asked closed-book; retrieval below)." if report.get("rag") else ".")
             + "</p>",
             "<h2>Metrics: base vs tuned</h2><table><tr><th>metric</th><th>base</th><th>tuned</th><th>difference</th></tr>"]
    for name, b, t, d in metric_rows(report["base"], report["tuned"]):
        parts.append(f"<tr><td>{e(name)}</td><td class=num>{_fmt(b)}</td><td class=num>{_fmt(t)}</td>"
                     f"<td class=num>{_fmt(d)}</td></tr>")
    parts.append("</table>")
    parts += _rag_html(report) + _judge_html(report.get("judge")) + _forgetting_html(report.get("forgetting"))
    png = plot_png(report.get("lineage", {}).get("history", []))
    parts.append("<h2>Training curves</h2>" + (f"<img alt='loss curves' src='data:image/png;base64,{png}'>"
                                               if png else "<p>No training history in the adapter's lineage.</p>"))
    parts += _examples_html(report["examples"]) + _lineage_html(report.get("lineage", {}))
    return "\n".join(parts)


def _rag_cell(value: Any) -> str:
    return NA if value is None else _fmt(value)


def _rag_html(report: dict[str, Any]) -> list[str]:
    """The closed-book vs retrieval table, its plot and its questions (reports made with --kb)."""
    rag = report.get("rag")
    if not rag:
        return []
    e = html.escape
    search = report["config"].get("search") or {}
    head = "".join(f"<th>{e(h)}</th>" for _, h in RAG_COLUMNS)
    rows = [f"<h2>Closed-book vs retrieval (knowledge base <code>{e(str(search.get('kb')))}</code>)</h2>",
            f"<table id=rag><tr><th>condition</th>{head}</tr>"]
    for label, values in rag_rows(rag):
        rows.append(f"<tr><td>{e(label)}</td>" + "".join(f"<td class=num>{_rag_cell(v)}</td>" for v in values)
                    + "</tr>")
    rows += ["</table>", f"<p>{e(retrieval_line(rag['retrieval']))}.</p>",
             "<p><small>" + "<br>".join(map(e, RAG_LEGEND)) + "</small></p>",
             f"<img alt='F1 and citations per condition' src='data:image/png;base64,{rag_plot_png(rag)}'>"]
    return rows + _rag_examples_html(rag["examples"], rag["labels"])


def _rag_examples_html(examples: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    e = html.escape
    rows = [f"<h3>Questions ({min(len(examples), SHOWN_EXAMPLES)} of {len(examples)})</h3><table><tr><th>where</th>"
            "<th>question</th><th>reference</th><th>oracle retrieved</th>"
            + "".join(f"<th>{e(label)}</th>" for label in labels.values()) + "</tr>"]
    for x in examples[:SHOWN_EXAMPLES]:
        ref = e(x["reference"]) if x["answerable"] else "<i>not in the knowledge base</i>"
        found = NA if x["oracle_retrieved"] is None else "yes" if x["oracle_retrieved"] else "no"
        found += " (gated)" if x["gated"] else ""
        cells = "".join(f"<td><pre>{e(x['answers'][c])}</pre>{_verdict(x, c)}</td>" for c in labels)
        rows.append(f"<tr><td>{e(x['where'])}</td><td><pre>{e(x['question'])}</pre></td><td><pre>{ref}</pre></td>"
                    f"<td>{found}</td>{cells}</tr>")
    return rows + ["</table>"]


def _verdict(x: dict[str, Any], condition: str) -> str:
    if x["refused"][condition]:
        return f"<small class={'good' if not x['answerable'] else 'bad'}>refused</small>"
    return f"<small>F1 {x['f1'][condition]:.2f}</small>" if x["answerable"] else "<small class=bad>answered</small>"


def _judge_html(judge: dict[str, Any] | None) -> list[str]:
    if not judge:
        return []
    rows = ["<h2>LLM-as-judge (1-5)</h2><table><tr><th>side</th><th>scores (mean of parsed)</th>"
            "<th>parsed</th><th>unparsed</th></tr>"]
    for label, s in judge.items():
        means = ", ".join(f"{k} {_fmt(v)}" for k, v in (s["means"] or {}).items()) or "-"
        rows.append(f"<tr><td>{label}</td><td>{means}</td><td class=num>{s['n'] - s['unparsed']}</td>"
                    f"<td class=num>{s['unparsed']}</td></tr>")
    return rows + ["</table>"]


def _forgetting_html(f: dict[str, Any] | None) -> list[str]:
    if not f:
        return []
    flag = "<b class=bad>FLAGGED</b>" if f.get("flagged") else "<b class=good>ok</b>"
    rows = [f"<h2>Forgetting check: {flag}</h2><table>"]
    for key in ("ppl_before", "ppl_after", "relative_change", "mc_before", "mc_after"):
        rows.append(f"<tr><td>{key}</td><td class=num>{_fmt(f.get(key))}</td></tr>")
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in f.get("reasons") or [])
    return rows + ["</table>", f"<ul>{reasons}</ul>" if reasons else ""]


def _examples_html(examples: list[dict[str, Any]]) -> list[str]:
    e = html.escape
    rows = [f"<h2>Examples, worst regressions first ({min(len(examples), SHOWN_EXAMPLES)} of {len(examples)})</h2>",
            "<table><tr><th>where</th><th>question</th><th>reference</th><th>base</th><th>tuned</th>"
            "<th>F1 base / tuned</th></tr>"]
    for x in examples[:SHOWN_EXAMPLES]:
        cls = "bad" if x["delta_f1"] < 0 else "good" if x["delta_f1"] > 0 else ""
        rows.append(f"<tr><td>{e(x['where'])}</td><td><pre>{e(x['question'])}</pre></td>"
                    f"<td><pre>{e(x['reference'])}</pre></td><td><pre>{e(x['base'])}</pre></td>"
                    f"<td><pre>{e(x['tuned'])}</pre></td><td class='num {cls}'>"
                    f"{x['base_scores']['f1']:.2f} / {x['tuned_scores']['f1']:.2f}</td></tr>")
    return rows + ["</table>"]


def _lineage_html(lineage: dict[str, Any]) -> list[str]:
    shown = {k: v for k, v in lineage.items() if k != "history"}
    return ["<h2>Lineage</h2>", f"<pre style='max-width:100%'>{html.escape(json.dumps(shown, indent=2))}</pre>"]


def strict_json(value: Any) -> Any:
    """NaN and infinity are not JSON: write them as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_report(report: dict[str, Any], out: Output) -> Path:
    """answers.jsonl, report.json and report.html, all or nothing (see `inhouse.outputs`)."""

    def write(folder: Path) -> None:
        with open(folder / "answers.jsonl", "w", encoding="utf-8") as fh:
            for x in report["examples"]:
                fh.write(json.dumps({k: x[k] for k in ("where", "question", "reference", "base", "tuned")},
                                    ensure_ascii=False) + "\n")
        (folder / "report.json").write_text(json.dumps(strict_json(report), indent=2, ensure_ascii=False,
                                                       default=str), encoding="utf-8")
        (folder / "report.html").write_text(render_html(report), encoding="utf-8")

    return out.write(write)
