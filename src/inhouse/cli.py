"""The `inhouse` command: wires typed functions to flags; no logic of its own."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import click
import typer

try:  # typer 0.2x raises its own copy of click's exceptions, which are not click's classes
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover - an older typer raises click's own
    _TyperClickException = click.ClickException

from inhouse import world
from inhouse.adapters.export.config import ExportConfig
from inhouse.cli_options import model_options
from inhouse.data.prepare_config import ColumnConfig, PrepareConfig
from inhouse.data.raft_config import RaftConfig
from inhouse.listsyntax import split_list
from inhouse.eval.config import EvalConfig
from inhouse.errors import InhouseError
from inhouse.generation import GenerationConfig
from inhouse.rag.config import STORE_HELP, AskConfig, SearchConfig, TuneConfig
from inhouse.recipe import Recipe, build_config
from inhouse.serve.config import ServeConfig

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Fine-tune open LLMs on your own data, on your own hardware.")
data_app = typer.Typer(no_args_is_help=True, help="Check, scan and prepare training data.")
app.add_typer(data_app, name="data")
rag_app = typer.Typer(no_args_is_help=True, help="Index documents and search them (retrieval-augmented generation).")
app.add_typer(rag_app, name="rag")
jobs_app = typer.Typer(no_args_is_help=True, help="Fine-tuning jobs submitted to `inhouse serve` (the same queue).")
app.add_typer(jobs_app, name="jobs")
adapters_app = typer.Typer(help="The adapter library (INHOUSE_HOME/adapters): list, show, tag, compare, remove.")
app.add_typer(adapters_app, name="adapters")

@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """Global options (read early by `main`)."""


@data_app.command("check")
@model_options(ColumnConfig)
def data_check(
    file: Path = typer.Argument(..., help="Data file: chat/Alpaca/prompt-completion/ShareGPT JSON(L), CSV or Parquet; "
                                "or preference pairs (prompt/chosen/rejected, OpenAI's preferred_output)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model whose tokenizer and chat template "
                                        "measure the lengths (without it: structure only, nothing to load)."),
    max_seq_length: int = typer.Option(Recipe.model_fields["max_seq_length"].default,
                                       help="Report examples longer than this many tokens (with --model)."),
    chat_template: Optional[str] = typer.Option(None, help=Recipe.model_fields["chat_template"].description),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Validate a data file (and, with --model, its token lengths); exit 1 on any problem."""
    from inhouse.data.check import check_file, format_report

    columns = build_config(ColumnConfig, None, **(overrides or {})).columns()
    report = check_file(file, _token_counter(model, chat_template), max_seq_length, columns)
    typer.echo(format_report(report))
    raise typer.Exit(0 if report.ok else 1)


def _token_counter(model: str | None, chat_template: str | None):
    """The model's token counter, or None: a check without --model loads no deep-learning library."""
    if model is None:
        if chat_template:
            raise InhouseError("--chat-template needs --model (the tokenizer it renders for)")
        return None
    from inhouse.model.load import load_tokenizer
    from inhouse.model.template import apply_template_choice, token_counter

    tokenizer = load_tokenizer(model)
    apply_template_choice(tokenizer, chat_template)
    return token_counter(tokenizer)


@data_app.command("scan")
@model_options(ColumnConfig)
def data_scan(
    file: Path = typer.Argument(..., help="Data file to scan for PII (nothing is written)."),
    kinds: Optional[str] = typer.Option(None, help="Comma-separated kinds (default: all): EMAIL,PHONE,CARD,..."),
    pii_allow: Optional[str] = typer.Option(None, help=PrepareConfig.model_fields["pii_allow"].description
                                            + " Comma-separated; shown as allowed and counted apart."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """List PII findings (type, file:line, masked value) without changing anything; exit 1 when some
    records are not valid examples (they are scanned all the same)."""
    from inhouse.data.pii import format_scan, parse_allow, scan_file

    wanted = set(split_list(kinds)) if kinds else None
    columns = build_config(ColumnConfig, None, **(overrides or {})).columns()
    report = scan_file(file, wanted, columns, allow=parse_allow(split_list(pii_allow or "")))
    typer.echo(format_scan(report))
    raise typer.Exit(1 if report.unusable else 0)


@data_app.command("prepare")
@model_options(PrepareConfig, exclude=("rules",))
def data_prepare(
    file: Path = typer.Argument(..., help="Raw data: chat/Alpaca/prompt-completion/ShareGPT JSON(L), CSV or Parquet; "
                                "or preference pairs (written as OpenAI's preference JSONL)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for train/validation/test JSONL and the report."),
    recipe_file: Optional[Path] = typer.Option(None, "--recipe", help="YAML with these options (and rules:)."),
    overwrite: bool = typer.Option(False, help="Replace --out when it holds an earlier inhouse preparation "
                                   "(never any other folder)."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Normalise, deduplicate, redact PII, check structured outputs, cap lengths, split; with a report."""
    from inhouse.data.prepare import claim_output, prepare, write_prepared

    config = build_config(PrepareConfig, recipe_file, **(overrides or {}))
    target = claim_output(out, file, config, overwrite, recipe_file)
    prepared = prepare(file, config)
    folder = write_prepared(prepared, file, config, target)
    removed, changed = prepared.counts["examples_removed"], prepared.counts["examples_changed"]
    typer.echo(f"{prepared.counts['loaded']} {prepared.unit} read; {removed} removed, {changed} changed; train "
               f"{len(prepared.train)}, validation {len(prepared.validation)}, test {len(prepared.test)}")
    typer.echo(f"written to {folder} (report: {folder / 'report.md'})")


@data_app.command("raft")
@model_options(RaftConfig)
def data_raft(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for train/validation JSONL (chat), heldout.jsonl "
                             "(questions) and report.json."),
    overwrite: bool = typer.Option(False, help="Replace --out when it holds earlier inhouse RAFT data (never any "
                                   "other folder)."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """RAFT training data: each question with its oracle chunk among distractors, answers that cite and
    quote it as `ask` does, held out by document."""
    from inhouse.data.raft import build_raft, claim_output, describe, write_raft
    from inhouse.events import ConsoleEvents

    config = build_config(RaftConfig, None, **(overrides or {}))
    target = claim_output(out, config, overwrite)
    data = build_raft(config, ConsoleEvents(progress=False))
    folder = write_raft(data, target)
    typer.echo(describe(data.report))
    typer.echo(f"written to {folder} (report: {folder / 'report.json'})")


@app.command("train")
@model_options(Recipe)
def train_cmd(
    recipe_file: Optional[Path] = typer.Argument(None, metavar="[RECIPE.yaml]",
                                                help="Recipe file; flags override its values."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run (needs --output-name)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Fine-tune a base model on your data; the result lands in the adapter library."""
    from inhouse import recipe as recipe_mod
    from inhouse.model.refs import resolve_model

    recipe = recipe_mod.build(recipe_file, **(overrides or {}))
    resolve_model(recipe.base_model)  # a wrong name is answered before the deep-learning libraries load
    from inhouse.train import distributed

    if distributed.needs_launch(recipe):  # --devices N: N processes under torchrun, this command in each
        raise typer.Exit(distributed.relaunch(recipe, sys.argv[1:], resume))
    from inhouse.events import ConsoleEvents
    from inhouse.train.sft import train

    result = train(recipe, resume=resume, events=ConsoleEvents(progress=not quiet))
    if world.current().is_main:
        typer.echo(f"adapter {result.name!r} saved to {result.path}")


@app.command("eval")
@model_options(EvalConfig)
def eval_cmd(
    adapter: str = typer.Argument(..., help="Adapter name or folder (LoRA/QLoRA): compared with its base model."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Base vs tuned on held-out data: metrics, optional judge, forgetting check, HTML report; with --kb,
    closed-book vs retrieval-augmented answers side by side."""
    from inhouse.adapters.registry import resolve

    config = build_config(EvalConfig, None, **(overrides or {}))
    resolve(adapter)  # a wrong name is answered before the deep-learning libraries load
    from inhouse.eval.run import evaluate
    from inhouse.eval.summary import format_summary

    result = evaluate(adapter, config)
    typer.echo(format_summary(result.report))
    typer.echo(f"report: {result.path / 'report.html'}")


@app.command("generate")
@model_options(GenerationConfig)
def generate_cmd(
    adapter: str = typer.Argument(..., help="Adapter name or folder, or a base model (builtin:tiny, path, hub id)."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Answer one prompt with the adapter on its base model."""
    from inhouse.adapters.load import load_chat_model

    config = build_config(GenerationConfig, None, **(overrides or {}))
    chat = load_chat_model(adapter)
    typer.echo(chat.reply([{"role": "user", "content": prompt}], config))


@app.command("chat")
@model_options(GenerationConfig)
def chat_cmd(
    adapter: str = typer.Argument(..., help="Adapter name or folder, or a base model."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Talk to an adapter interactively (/reset clears the history, /exit or Ctrl-D quits)."""
    from inhouse.chat import interactive

    interactive(adapter, build_config(GenerationConfig, None, **(overrides or {})))


JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of text.")


@adapters_app.callback(invoke_without_command=True)
def adapters_root(ctx: typer.Context) -> None:
    """Without a command: `inhouse adapters list`."""
    if ctx.invoked_subcommand is None:
        adapters_list(tag=None, as_json=False)


@adapters_app.command("list")
def adapters_list(tag: Optional[str] = typer.Option(None, "--tag", help="Only the entries with this tag."),
                  as_json: bool = JSON_OPTION) -> None:
    """Every entry, newest first: base, method, data files, validation loss, size on disk, created, tags."""
    import json

    from inhouse.adapters.listing import format_list, summaries
    from inhouse.adapters.registry import library

    rows = summaries(tag)
    typer.echo(json.dumps([r.model_dump() for r in rows], indent=2) if as_json else format_list(rows, library()))


@adapters_app.command("show")
def adapters_show(name: str = typer.Argument(..., help="Library name or adapter folder."),
                  as_json: bool = JSON_OPTION) -> None:
    """An entry's whole lineage, and what was made from it.

    Data files with their sha256, the recipe, metrics and loss history, package versions, the job that
    made it, and the evaluations and exports made from it."""
    import json

    from inhouse.adapters.listing import details, format_show

    info = details(name)
    typer.echo(json.dumps(info, indent=2, ensure_ascii=False) if as_json else format_show(info))


@adapters_app.command("diff")
def adapters_diff(a: str = typer.Argument(..., help="Library name or adapter folder."),
                  b: str = typer.Argument(..., help="Library name or adapter folder."),
                  as_json: bool = JSON_OPTION) -> None:
    """How B differs from A: the recipe fields that differ, and the metrics with both values and B - A."""
    import dataclasses
    import json

    from inhouse.adapters.diff import diff, format_diff
    from inhouse.adapters.listing import named

    changes = diff(named(a), named(b))
    typer.echo(json.dumps(dataclasses.asdict(changes), indent=2) if as_json else format_diff(changes))


@adapters_app.command("tag")
def adapters_tag(name: str = typer.Argument(..., help="Library name."),
                 label: str = typer.Argument(..., metavar="TAG", help="A label, e.g. prod or v2 (no spaces)."),
                 remove: bool = typer.Option(False, "--remove", help="Remove the tag instead of adding it.")) -> None:
    """Tag an entry: tags show in `list` and `show`, and `list --tag TAG` lists only the entries with it."""
    from inhouse.adapters.registry import entry_folder, tag

    tags = tag(entry_folder(name), label, remove).tags
    typer.echo(f"{name}: {'tags ' + ', '.join(tags) if tags else 'no tags'}")


@adapters_app.command("rm")
def adapters_rm(name: str = typer.Argument(..., help="Library name."),
                yes: bool = typer.Option(False, "--yes", "-y", help="Remove without asking.")) -> None:
    """Delete an entry, after asking; refused while a job or a server uses it.

    In use means: a queued or running fine-tuning job trains on it or publishes it (its checkpoints
    too), or a running `inhouse serve` has it loaded."""
    from inhouse.adapters.listing import human_size, size_on_disk
    from inhouse.adapters.registry import entry_folder
    from inhouse.adapters.remove import check_unused, remove

    folder = entry_folder(name)
    check_unused(name)  # before asking: a refusal should not wait for an answer
    if not yes and not _confirmed(f"remove {name!r} ({folder}, {human_size(size_on_disk(folder))})?"):
        typer.echo("nothing removed (answer y, or pass --yes)", err=True)
        raise typer.Exit(1)
    remove(name)
    typer.echo(f"removed {name!r}")


def _confirmed(question: str) -> bool:
    """The user's yes; no answer (end of input, Ctrl-C) is a no."""
    try:
        return typer.confirm(question, default=False)
    except (click.exceptions.Abort, typer.Abort):
        return False


@rag_app.command("index")
def rag_index(
    folder: Path = typer.Argument(..., help="Folder of txt, md, html, pdf and docx files."),
    kb: str = typer.Option(..., "--kb", help="Knowledge base name (under INHOUSE_HOME/kb) or a folder path."),
    embedder: Optional[str] = typer.Option(None, help="Embedding model: a tuned embedder's name (rag tune-embedder), "
                                           "a local sentence-transformers folder, or all-MiniLM-L6-v2 (the default, "
                                           "offline; an existing knowledge base keeps its own)."),
    follow_links: bool = typer.Option(False, "--follow-links", help="Also index files that links inside the "
                                      "folder point to outside it (skipped and reported by default)."),
    reindex: bool = typer.Option(False, "--reindex", help="Rebuild the whole knowledge base (with --embedder, else "
                                 "its own embedder), replacing it only once complete: the way to change embedders."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Index a folder; re-running embeds only new or changed documents."""
    from inhouse.rag.index import index

    if not folder.is_dir():
        raise InhouseError(f"{folder}: no such folder")
    clock = time.perf_counter()
    report = index(folder, kb, embedder=embedder, follow_links=follow_links, reindex=reindex, store=store)
    seconds = max(time.perf_counter() - clock, 1e-9)
    done = len(report.added) + len(report.changed)
    typer.echo(f"{len(report.added)} added, {len(report.changed)} changed, {len(report.removed)} removed, "
               f"{report.unchanged} unchanged; {report.chunks_written} chunks written in {seconds:.1f} s "
               f"({done / seconds:.1f} documents/s, {report.chunks_written / seconds:.1f} chunks/s)"
               + (f" ({report.resumed} documents were already written by an interrupted run)" if report.resumed else ""))
    for path, reason in report.skipped_files:
        typer.echo(f"skipped {path}: {reason}")


@rag_app.command("attach")
def rag_attach(
    kb: str = typer.Argument(..., help="Name of the knowledge base, as it was indexed on the other machine."),
    store: str = typer.Option(..., "--store", help="The PostgreSQL database it lives in: postgresql://USER@HOST/DB "
                              "(no password: PGPASSWORD or ~/.pgpass) or env:VARIABLE."),
) -> None:
    """Use a knowledge base that another machine indexed into PostgreSQL (servers sharing one database)."""
    from inhouse.rag.pgstore import attach
    from inhouse.rag.store import kb_path

    found = attach(kb_path(kb), store)
    meta = found.meta()
    typer.echo(f"attached {kb}: {meta.get('chunks')} chunks, embedder {meta.get('embedder_name')}, "
               f"updated {meta.get('updated_at')}")


@rag_app.command("tune-embedder")
@model_options(TuneConfig)
def rag_tune_embedder(
    kb: str = typer.Option(..., "--kb", help="Knowledge base to tune for: its chunks make the pairs (or hold the "
                           "passages --questions points at)."),
    questions: Optional[Path] = typer.Option(None, "--questions", help="QA file (JSONL): question, and passage (or "
                                             "text, chunk_id, doc_path) on each line; without it, pairs are made "
                                             "from the chunks."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Library name of the tuned embedder "
                                      "(default: <kb>-tuned)."),
    overwrite: bool = typer.Option(False, help="Replace an earlier tuned embedder of that name (knowledge bases "
                                   "indexed with it then need --reindex)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Fine-tune the knowledge base's embedder on (question, passage) pairs with in-batch negatives; the
    result lands in the embedder library (INHOUSE_HOME/embedders)."""
    config = build_config(TuneConfig, None, **(overrides or {}))
    from inhouse.events import ConsoleEvents
    from inhouse.rag.tune import tune_embedder

    result = tune_embedder(kb, pairs_file=questions, name=out, config=config, overwrite=overwrite,
                           events=ConsoleEvents(say=typer.echo, progress=not quiet))
    root = result.lineage.knowledge_base.get("root") or "FOLDER"
    typer.echo(f"re-index with it: inhouse rag index {root} --kb {kb} --embedder {result.name} --reindex")


@rag_app.command("search")
@model_options(SearchConfig)
def rag_search(
    query: str = typer.Argument(..., help="What to look for."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Show the best-matching chunks with their source and score; with --min-similarity, also whether
    `inhouse ask` would answer from them or refuse."""
    from inhouse.rag.search import search

    config = build_config(SearchConfig, None, **(overrides or {}))
    hits = search(config.kb, query, **config.search_kwargs())
    for n, hit in enumerate(hits, 1):
        where = f"{hit.doc_path}:{hit.start}-{hit.end}" + (f" ({hit.heading_path})" if hit.heading_path else "")
        typer.echo(f"[{n}] {hit.score:.4f} {where}\n    {' '.join(hit.text.split())[:300]}")
    if not hits:
        typer.echo("no chunk matches" + (" --where" if config.where else ""))
    if "min_similarity" in (overrides or {}):
        from inhouse.rag.answer import gate_verdict

        typer.echo(gate_verdict(config, query, hits))


@rag_app.command("eval")
@model_options(SearchConfig, exclude=("where", "min_similarity", "k"))
def rag_eval(
    queries: Path = typer.Option(..., help="Queries: TREC topics, TSV, JSONL or Cranfield cran.qry."),
    qrels: Path = typer.Option(..., help="Relevance judgements: TREC qrels or Cranfield cranqrel."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Recall@k, nDCG@10 and MRR of the knowledge base on judged queries."""
    from inhouse.rag.metrics import evaluate_kb, format_metrics
    from inhouse.rag.qrels import read_qrels, read_queries

    config = build_config(SearchConfig, None, **(overrides or {}))
    search_kw = {k: v for k, v in config.search_kwargs().items() if k != "k"}
    clock = time.perf_counter()
    result = evaluate_kb(config.kb, read_queries(queries), read_qrels(qrels), **search_kw)
    seconds = max(time.perf_counter() - clock, 1e-9)
    typer.echo(format_metrics(result))
    searched = result["queries"] + result["skipped"]
    typer.echo(f"time       {seconds:.1f} s ({searched / seconds:.1f} queries/s)")


@app.command("ask")
@model_options(AskConfig)
def ask_cmd(
    question: str = typer.Argument(..., help="The question."),
    adapter: Optional[str] = typer.Option(None, help="Adapter to answer with (default: --model)."),
    model: str = typer.Option(Recipe.model_fields["base_model"].default, help="Base model when no adapter is given."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Answer from the knowledge base with numbered citations, or say the answer is not there."""
    from inhouse.adapters.load import load_chat_model
    from inhouse.rag.answer import answer, format_answer

    config = build_config(AskConfig, None, **(overrides or {}))
    chat = load_chat_model(adapter or model)
    typer.echo(format_answer(answer(question, chat, config.search, config.generation)))


@app.command("merge")
def merge_cmd(
    adapter: str = typer.Argument(..., help="Adapter name or folder (LoRA or QLoRA)."),
    name: Optional[str] = typer.Option(None, help="Library name of the merged model (default: <adapter>-merged)."),
    dtype: str = typer.Option("bfloat16", help="Weights dtype of the merged model: bfloat16, float16 or float32."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the merged model to this new folder "
                                       "instead of the library."),
    overwrite: bool = typer.Option(False, help="Replace --out when it holds an earlier inhouse merged model."),
) -> None:
    """Merge an adapter into its base model (reloaded in 16/32-bit, never 4-bit) for export."""
    from inhouse.adapters.registry import resolve

    if dtype not in ("bfloat16", "float16", "float32"):
        raise InhouseError(f"--dtype {dtype}: use bfloat16, float16 or float32")
    resolve(adapter)  # a wrong name is answered before the deep-learning libraries load
    import torch

    from inhouse.adapters.merge import merge

    typer.echo(f"merged model saved to {merge(adapter, name, getattr(torch, dtype), out, overwrite)}")


@app.command("export")
@model_options(ExportConfig)
def export_cmd(
    adapters: list[str] = typer.Argument(..., help="Adapter name(s) or folder(s); several only with --to vllm."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Export an adapter to run elsewhere: a merged model, GGUF for llama.cpp, Ollama, or vLLM/SGLang."""
    from inhouse.adapters.export.run import check_refs
    from inhouse.adapters.registry import resolve

    config = build_config(ExportConfig, None, **(overrides or {}))
    check_refs(adapters, config.to)
    for ref in adapters:
        resolve(ref)  # a wrong name is answered before the deep-learning libraries load
    from inhouse.adapters.export.run import export
    from inhouse.events import ConsoleEvents

    result = export(adapters, config, events=ConsoleEvents(progress=False))
    typer.echo(f"exported to {result.path}")
    for file in result.files:
        typer.echo(f"  {file}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    if result.commands:
        typer.echo("run it with:")
        for command in result.commands:
            typer.echo(f"  {command}")


@app.command("serve")
@model_options(ServeConfig)
def serve_cmd(overrides: dict[str, Any] | None = None) -> None:
    """An OpenAI-compatible API (chat, completions, embeddings, vector stores) over the base model,
    its adapters in the library and the knowledge bases."""
    from inhouse.serve.run import serve

    serve(build_config(ServeConfig, None, **(overrides or {})))


@app.command("quickstart")
def quickstart_cmd(
    model: Optional[str] = typer.Option(None, "--model", help="A real local model folder instead of builtin:tiny."),
) -> None:
    """The whole journey offline: check sample data, fine-tune, compare, generate."""
    from inhouse.quickstart import quickstart

    quickstart(model)


def quiet_libraries() -> None:
    """Upstream deprecation chatter is for us, not for users. Set through the environment and warning
    filters, so a command that never needs transformers never imports it (`data check` starts at once)."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft|transformers|torch")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # transformers' "Loading weights" bars read this at import; ours show the work that matters
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@jobs_app.command("list")
def jobs_list(limit: int = typer.Option(20, min=1, max=10_000, help="Most recent first; how many.")) -> None:
    """Jobs with their status and the model each produced."""
    from inhouse.jobs.store import Store

    rows, _ = Store().page("jobs", None, limit)
    typer.echo(f"{len(rows)} job(s)")
    for job in rows:
        typer.echo(f"  {job['id']}  {job['status']:<16} {job['model']} -> {job['fine_tuned_model'] or '-'}  "
                   f"file={job['training_file']}")


@jobs_app.command("show")
def jobs_show(job_id: str = typer.Argument(..., help="The job's id (ftjob-...).")) -> None:
    """One job as the API returns it."""
    import json

    from inhouse.jobs.store import Store
    from inhouse.serve.openai import job_object

    typer.echo(json.dumps(job_object(Store().get("jobs", job_id, "fine-tuning job")), indent=2))


@jobs_app.command("events")
def jobs_events(job_id: str = typer.Argument(..., help="The job's id (ftjob-...)."),
                limit: int = typer.Option(1000, min=1, max=100_000, help="How many, newest last.")) -> None:
    """A job's events in the order they happened."""
    from datetime import datetime

    from inhouse.jobs.store import Store

    store = Store()
    store.get("jobs", job_id, "fine-tuning job")
    rows, _ = store.events(job_id, None, limit)
    for event in reversed(rows):
        when = datetime.fromtimestamp(event["created_at"]).strftime("%H:%M:%S")
        typer.echo(f"{when} {event['level']:<5} {event['message']}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str = typer.Argument(..., help="The job's id (ftjob-...).")) -> None:
    """Cancel a queued or running job (a running one stops at its next step and publishes nothing)."""
    from inhouse.jobs.spec import cancel
    from inhouse.jobs.store import Store

    typer.echo(f"{job_id}: {cancel(Store(), job_id)['status']}")


def quiet_environment() -> None:
    """The command-line program (not the library) quiets the Rust logs of tokenizers and lancedb;
    set before either is imported, as both read the variable once."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("LANCE_LOG", "error")


def main() -> None:
    """Entry point: one-line errors and exit code 1; tracebacks only with --debug."""
    debug = "--debug" in sys.argv or os.environ.get("INHOUSE_DEBUG") == "1"
    quiet_environment()
    asks_for_help = len(sys.argv) < 2 or any(a in ("--help", "-h") for a in sys.argv[1:])
    if not debug and not asks_for_help:  # help needs no library: do not import transformers for it
        quiet_libraries()
    try:
        code = app(standalone_mode=False)
    except InhouseError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        code = 1
    except (click.ClickException, _TyperClickException) as exc:
        exc.show()
        code = exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort, typer.Abort):
        typer.echo("interrupted", err=True)
        code = 130
    except Exception as exc:  # noqa: BLE001 - the promise is: no traceback without --debug
        if debug:
            raise
        typer.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
