"""`inhouse eval`: base model vs adapter on held-out conversations, honestly.

For each held-out conversation the last assistant message is the reference and
everything before it the prompt (a file of preference pairs: its chosen answers, plus
the adapter's reward accuracy and margin, inhouse.eval.preference; with --kb, a
question/answer file: its answerable questions asked closed-book, plus the closed-book
vs retrieval-augmented table of inhouse.eval.rag_eval). Both models answer
(batched, greedy by default), then: reference loss/perplexity/token accuracy, text and
JSON metrics, optional LLM-as-judge, a forgetting check, and a report.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from inhouse import outputs, paths
from inhouse.adapters import registry
from inhouse.adapters.lineage import now
from inhouse.data.conversation import Conversation, Message
from inhouse.data.formats import load_conversations
from inhouse.data.qa import QAItem
from inhouse.data.schema import load_schema
from inhouse.errors import InhouseError
from inhouse.events import Events, Stopped
from inhouse.eval import metrics
from inhouse.eval.config import EvalConfig
from inhouse.eval.preference import chosen_conversations, held_out_pairs, preference_metrics
from inhouse.adapters.load import load_chat_model
from inhouse.model.generate import ChatModel
from inhouse.model.template import encode
from inhouse.rag.store import resolve_kb
from inhouse.train.dataset import PadCollator

REPORT_KIND = "evaluation report"


@dataclass
class EvalResult:
    path: Path
    report: dict[str, Any]


def split_prompt(conv: Conversation) -> tuple[list[dict[str, str]], str]:
    """Prompt = messages before the last assistant turn; reference = that turn."""
    chat = conv.as_chat()
    last = max(i for i, m in enumerate(chat) if m["role"] == "assistant")
    return chat[:last], chat[last]["content"]


def base_context(chat: ChatModel):
    """Switch the adapter off for 'base' numbers (PEFT's own context manager)."""
    disable = getattr(chat.model, "disable_adapter", None)
    if disable is None:
        raise InhouseError(f"{chat.name} is not an adapter on a base model; evaluate a LoRA/QLoRA adapter")
    return disable()


def generate_all(chat: ChatModel, prompts: list[list[dict]], config: EvalConfig, label: str,
                 events: Events) -> list[str]:
    out: list[str] = []
    for i in tqdm(range(0, len(prompts), config.batch_size), desc=f"generating ({label})", unit="batch"):
        if events.should_stop():
            raise Stopped("evaluation stopped on request; no report was written")
        out += [c.text for c in chat.complete_batch(prompts[i:i + config.batch_size], config.generation)]
        events.log("progress", done=len(out), total=len(prompts), unit=f"answers ({label})")
    return out


@torch.inference_mode()
def reference_loss(chat: ChatModel, convs: list[Conversation], batch_size: int) -> dict[str, float]:
    """Loss, perplexity and token accuracy on the reference answers (mask as in training)."""
    collate = PadCollator(chat.tokenizer.pad_token_id)
    encoded = [encode(c, chat.tokenizer, chat.stop_ids) for c in convs]
    sums: dict[str, float] | None = None
    for i in range(0, len(encoded), batch_size):
        batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded[i:i + batch_size]])
        batch = {k: v.to(chat.model.device) for k, v in batch.items()}
        logits = chat.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        part = metrics.token_metrics(logits, batch["labels"])
        sums = part if sums is None else {k: sums[k] + part[k] for k in sums}
    return metrics.finalize_token_metrics(sums)


def side(chat: ChatModel, convs, prompts, refs, config: EvalConfig, validator, use_adapter: bool,
         events: Events, answers: list[str] | None = None) -> dict[str, Any]:
    """Everything measured for one side (base or tuned); `answers` when they were generated already."""
    label = "tuned" if use_adapter else "base"
    events.say(f"eval: {'answering with' if answers is None else 'scoring'} the {label} model")
    with contextlib.nullcontext() if use_adapter else base_context(chat):
        answers = generate_all(chat, prompts, config, label, events) if answers is None else answers
        loss = reference_loss(chat, convs, config.batch_size)
    scores = metrics.score_answers(answers, refs, validator=validator, refusal_phrases=config.refusal_phrases)
    return {"answers": answers, "metrics": loss | scores}


def evaluate(adapter: str, config: EvalConfig, events: Events | None = None) -> EvalResult:
    """Base vs adapter on `config.data`; writes answers, report.json and report.html."""
    from inhouse.eval.rag_eval import evaluate_rag, load_questions
    from inhouse.eval.report import write_report

    events = events or Events()
    questions = load_questions(config) if config.search else None  # KB and oracles checked before the model loads
    pairs = None if questions else held_out_pairs(config.data, config.max_examples)
    convs = held_out_conversations(config, pairs, questions)
    adapter_path = registry.resolve(adapter)
    target = claim_output(config, registry.lineage(adapter_path).name or adapter_path.name, adapter_path)
    chat = load_chat_model(adapter)
    prompts, refs = [split_prompt(c)[0] for c in convs], [split_prompt(c)[1] for c in convs]
    validator = load_schema(config.schema_file) if config.schema_file else None
    rag = evaluate_rag(chat, questions, config, events) if questions else None
    base = side(chat, convs, prompts, refs, config, validator, False, events, rag and rag.closed_book("base"))
    tuned = side(chat, convs, prompts, refs, config, validator, True, events, rag and rag.closed_book("tuned"))
    if pairs:
        tuned["metrics"] |= preference_metrics(chat, pairs, registry.lineage(adapter_path), config.batch_size)
    report = {"adapter": chat.name, "data": str(config.data), "n": len(convs),
              "config": config.model_dump(mode="json"), "base": base["metrics"], "tuned": tuned["metrics"],
              "examples": _examples(convs, prompts, refs, base["answers"], tuned["answers"]),
              "lineage": registry.lineage(adapter_path).dump()}
    if rag:
        report["rag"] = rag.as_report()
    if config.judge:
        report["judge"] = _judge(config.judge, prompts, refs, base["answers"], tuned["answers"])
    report["forgetting"] = _forgetting(chat, config)
    result = EvalResult(write_report(report, target), report)
    record_evaluation(adapter_path, result)
    return result


def record_evaluation(adapter_path: Path, result: EvalResult) -> None:
    """A library adapter's lineage lists its evaluations (report folder, numbers, when); a folder outside
    the library is an input the user owns, and is never written to."""
    from inhouse.eval.summary import summary_rows

    inside = outputs.real(adapter_path).parent == outputs.real(registry.library())
    if not inside or not (adapter_path / registry.LINEAGE).is_file():
        return
    summary = {name: {"base": b, "tuned": t, "delta": d} for name, b, t, d in summary_rows(result.report)
               if isinstance(t, (int, float)) or isinstance(b, (int, float))}
    rag = result.report.get("rag")
    extra = {"rag": {"conditions": rag["conditions"], "retrieval": rag["retrieval"]}} if rag else {}
    registry.record(adapter_path, "evaluations", {"report": str(result.path), "data": result.report["data"],
                                                  "n": result.report["n"], "metrics": summary, **extra, "at": now()})


def held_out_conversations(config: EvalConfig, pairs, questions) -> list[Conversation]:
    """What base and tuned answer: the chosen answers of pairs, the answerable questions of a QA file
    (closed-book: the question alone), or the held-out conversations."""
    if pairs:
        return chosen_conversations(pairs)
    if questions is None:
        return load_conversations(config.data)[: config.max_examples]
    return [qa_conversation(questions.items[i]) for i in questions.answerable]


def qa_conversation(item: QAItem) -> Conversation:
    source, _, line = item.where.rpartition(":")
    return Conversation((Message("user", item.question), Message("assistant", item.answer)), source, int(line))


def claim_output(config: EvalConfig, name: str, adapter_path: Path) -> outputs.Output:
    """The report folder, checked before minutes of generation: never an input's place."""
    out = config.out or paths.evals() / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    inputs = [config.data, config.schema_file, config.reference_file, config.multiple_choice, adapter_path,
              resolve_kb(config.search.kb) if config.search else None]
    return outputs.claim(out, REPORT_KIND, inputs, config.overwrite)


def _examples(convs, prompts, refs, base_answers, tuned_answers) -> list[dict[str, Any]]:
    rows = []
    for conv, prompt, ref, b, t in zip(convs, prompts, refs, base_answers, tuned_answers):
        pb, pt = metrics.per_example(b, ref), metrics.per_example(t, ref)
        rows.append({"where": conv.where, "question": prompt[-1]["content"] if prompt else "", "reference": ref,
                     "base": b, "tuned": t, "base_scores": pb, "tuned_scores": pt,
                     "delta_f1": pt["f1"] - pb["f1"]})
    return sorted(rows, key=lambda r: r["delta_f1"])  # worst regressions first


def _judge(ref: str, prompts, refs, base_answers, tuned_answers) -> dict[str, Any]:
    from inhouse.eval.judge import judge_all, load_judge

    judge = load_judge(ref)
    out = {}
    for label, answers in (("base", base_answers), ("tuned", tuned_answers)):
        items = [{"question": p[-1]["content"], "answer": a, "reference": r,
                  "context": next((m["content"] for m in p if m["role"] == "system"), None)}
                 for p, a, r in zip(prompts, answers, refs)]
        summary = judge_all(judge, items)
        out[label] = {"means": summary.means, "n": summary.n, "unparsed": summary.n_unparsed,
                      "raw": [j.raw for j in summary.judgements]}
    return out


def _forgetting(chat: ChatModel, config: EvalConfig) -> dict[str, Any]:
    from inhouse.eval.forgetting import default_reference_text, forgetting_check, load_multiple_choice

    text = config.reference_file.read_text(encoding="utf-8") if config.reference_file else default_reference_text()
    items = load_multiple_choice(config.multiple_choice) if config.multiple_choice else None
    result = forgetting_check(chat.model, chat.tokenizer, text, items, threshold=config.forgetting_threshold)
    return json.loads(json.dumps(result, default=lambda o: o.__dict__))
