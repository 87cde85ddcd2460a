"""`inhouse quickstart`: the whole journey on the shipped sample data, offline.

check the data -> fine-tune a LoRA adapter -> validation loss before/after ->
answers to held-out questions from the base model and from the adapter.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from inhouse import recipe as recipe_mod
from inhouse.errors import InhouseError


def examples_dir() -> Path:
    """The repository's examples/ (the README installs inhouse from a clone)."""
    here = Path(os.environ.get("INHOUSE_EXAMPLES") or Path(__file__).resolve().parents[2] / "examples")
    if not (here / "support.jsonl").is_file():
        raise InhouseError(f"sample data not found in {here}; run from a clone of the inhouse repository "
                           "or set INHOUSE_EXAMPLES to its examples/ folder")
    return here


def quickstart(model: str | None = None, say: Callable[[str], None] = print, questions: int = 3) -> Path:
    """Run the journey; returns the published adapter's folder."""
    from inhouse.data.check import check_dataset, format_report
    from inhouse.adapters.load import load_chat_model
    from inhouse.events import ConsoleEvents
    from inhouse.model.load import load_tokenizer
    from inhouse.model.template import apply_template_choice, token_counter
    from inhouse.train.sft import load_splits, train

    examples = examples_dir()
    recipe = recipe_mod.build(examples / ("quickstart.yaml" if model else "quickstart-tiny.yaml"),
                              base_model=model, output_name=f"quickstart-{datetime.now():%Y%m%d-%H%M%S}")
    say(f"[1/4] data: checking {recipe.train_file}")
    tokenizer = load_tokenizer(recipe.base_model)
    apply_template_choice(tokenizer, recipe.chat_template)
    report = check_dataset(recipe.train_file, token_counter(tokenizer), recipe.max_seq_length)
    say(format_report(report))
    if not report.ok:
        raise InhouseError("the sample data has problems; see above")

    say(f"\n[2/4] training: LoRA r={recipe.lora_r} on {recipe.base_model}, {recipe.epochs:g} epochs")
    result = train(recipe, events=ConsoleEvents(say=lambda s: say("  " + s)))

    m = result.metrics
    say(f"\n[3/4] validation loss: {m['validation_loss_before']:.4f} before -> {m['validation_loss']:.4f} after "
        f"(the best checkpoint: step {m['published_step']} of {m['steps']}; {m['train_seconds']:.0f} s, "
        f"{m['tokens_per_second']:,.0f} tokens/s)")

    say(f"\n[4/4] answers to held-out questions (greedy), base model vs adapter {result.name!r}")
    _, held_out = load_splits(recipe)
    chat = load_chat_model(str(result.path))
    for conv in held_out[:questions]:
        prompt = [m for m in conv.as_chat() if m["role"] != "assistant"][:2]
        with chat.model.disable_adapter():
            base = chat.reply(prompt, max_new_tokens=160)
        tuned = chat.reply(prompt, max_new_tokens=160)
        say(f"\n  question: {prompt[-1]['content']}\n  base:    {_one_line(base)}\n  adapter: {_one_line(tuned)}")

    say(f"\ndone. adapter: {result.path}\n      lineage: {result.path / 'inhouse.json'}\n"
        f"      try:     inhouse chat {result.name}")
    return result.path


def _one_line(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
