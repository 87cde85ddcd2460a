"""Render conversations with the model's chat template and build the loss mask.

The mask is derived from the template itself, not from per-model rules: for
each assistant turn we render the conversation up to the generation prompt and
up to the end of that turn; the characters in between belong to the assistant
(its content, the end-of-turn token, and whatever whitespace the template puts
after it). Tokens are mapped to characters through the fast tokenizer's offsets.
Within a turn we train from its first content token up to and including the
first end-of-turn token, and nothing after it (so a trailing newline the
template adds is not trained). A template for which this cannot work raises
`TemplateError` instead of silently training the wrong tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from transformers import PreTrainedTokenizerBase

from inhouse.data.conversation import Conversation
from inhouse.errors import InhouseError
from inhouse.model import tiny

IGNORE = -100

# End-of-turn markers of the common template families; any of them present in
# a tokenizer's vocabulary as a single token counts as a stop token.
KNOWN_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>",
                     "</s>", "<|endoftext|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>")

BUILTIN_TEMPLATES = {"chatml": tiny.CHATML_TEMPLATE, "llama3": tiny.LLAMA3_TEMPLATE,
                     "chatml-tools": tiny.CHATML_TOOLS_TEMPLATE}


class TemplateError(InhouseError):
    """The chat template cannot be masked correctly for this data."""


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass(frozen=True)
class TurnSpan:
    """Character span of one assistant turn in the rendered text."""

    start: int
    end: int
    weight: int
    content: str


def apply_template_choice(tokenizer: PreTrainedTokenizerBase, choice: str | None) -> None:
    """Set the tokenizer's chat template from a recipe value (None keeps the model's)."""
    if choice:
        if choice in BUILTIN_TEMPLATES:
            tokenizer.chat_template = BUILTIN_TEMPLATES[choice]
        elif Path(choice).is_file():
            tokenizer.chat_template = Path(choice).read_text(encoding="utf-8")
        else:
            raise InhouseError(f"chat_template {choice!r} is neither {' nor '.join(BUILTIN_TEMPLATES)} "
                               "nor a path to a Jinja template file")
    if not getattr(tokenizer, "chat_template", None):
        raise InhouseError("this model's tokenizer has no chat template (a base model?); "
                           "set chat_template: chatml (or a path to a .jinja file) in the recipe")


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, extra: int | list[int] | None = None) -> set[int]:
    """Token ids that end an assistant turn: EOS, generation EOS, known end-of-turn tokens."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, extra):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    vocab = tokenizer.get_vocab()
    added = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}))
    ids.update(vocab[t] for t in KNOWN_END_OF_TURN if t in vocab and t in added)
    return ids


def render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation_prompt: bool = False,
           tools: tuple | list | None = None) -> str:
    extra = {"tools": list(tools)} if tools else {}
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt, **extra)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"the chat template failed on this conversation: {exc}") from exc


def token_counter(tokenizer: PreTrainedTokenizerBase) -> Callable[[Conversation], int]:
    """Length of a conversation in tokens, exactly as training will see it."""
    return lambda conv: len(tokenizer(render(tokenizer, conv.as_chat(), tools=conv.tools),
                                      add_special_tokens=False)["input_ids"])


def assistant_spans(conv: Conversation, tokenizer: PreTrainedTokenizerBase) -> tuple[str, list[TurnSpan]]:
    """The rendered text and the character span of every assistant turn in it."""
    chat = conv.as_chat()
    full = render(tokenizer, chat, tools=conv.tools)
    spans = []
    for i, msg in enumerate(conv.messages):
        if msg.role != "assistant":
            continue
        before = render(tokenizer, chat[:i], generation_prompt=True, tools=conv.tools)
        upto = render(tokenizer, chat[: i + 1], tools=conv.tools)
        if not (full.startswith(before) and full.startswith(upto) and len(upto) > len(before)):
            raise TemplateError(
                f"{conv.where}: the chat template renders turn {i} differently once later turns follow, "
                "so its tokens cannot be located; use a template that renders history unchanged "
                "(e.g. chat_template: chatml)")
        spans.append(TurnSpan(len(before), len(upto), msg.weight, msg.content))
    return full, spans


def encode(conv: Conversation, tokenizer: PreTrainedTokenizerBase, stop_ids: set[int]) -> Encoded:
    """Token ids and labels: only assistant tokens (weight 1) plus their end-of-turn token."""
    full, spans = assistant_spans(conv, tokenizer)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE] * len(ids)
    for turn, span in enumerate(spans):
        if span.weight == 0:
            continue
        inside = [k for k, (a, b) in enumerate(offsets) if b > span.start and a < span.end]
        eot = next((k for k in inside if ids[k] in stop_ids), None)
        if eot is None:
            raise TemplateError(
                f"{conv.where}: the chat template puts no end-of-turn token inside assistant turn {turn + 1} "
                f"(expected one of {sorted(tokenizer.convert_ids_to_tokens(sorted(stop_ids)))}); "
                "the end-of-turn token would fall outside the loss mask and the model would never learn "
                "to stop. Use a template that closes every assistant turn (e.g. chat_template: chatml)")
        for k in inside:
            if k > eot:
                break
            labels[k] = ids[k]
    return Encoded(list(ids), labels)


def _labelled_runs(enc: Encoded) -> list[list[int]]:
    """Maximal runs of consecutive trained tokens (one per trained assistant turn)."""
    runs: list[list[int]] = []
    prev = False
    for tok_id, label in zip(enc.input_ids, enc.labels):
        on = label != IGNORE
        if on and not prev:
            runs.append([])
        if on:
            runs[-1].append(tok_id)
        prev = on
    return runs


def check_mask(conv: Conversation, enc: Encoded, tokenizer: PreTrainedTokenizerBase,
               stop_ids: set[int]) -> None:
    """Verify one encoded example independently of how the mask was built."""
    trained = [m for m in conv.messages if m.role == "assistant" and m.weight]
    runs = _labelled_runs(enc)
    if len(runs) != len(trained):
        raise TemplateError(f"{conv.where}: {len(trained)} trained assistant turns but {len(runs)} "
                            "trained token runs; the template merges or splits turns")
    for msg, run in zip(trained, runs):
        text = tokenizer.decode(run, skip_special_tokens=False)
        if run[-1] not in stop_ids:
            raise TemplateError(f"{conv.where}: a trained turn does not end with an end-of-turn token")
        if msg.content.strip() not in text:
            raise TemplateError(f"{conv.where}: the trained tokens do not reproduce the assistant text "
                                f"({msg.content[:40]!r}...); the template rewrites content")
        for call in msg.tool_calls:
            if call.name not in text:
                raise TemplateError(f"{conv.where}: the call of {call.name!r} is not in the trained tokens; "
                                    "the chat template does not render tool calls" + TOOL_HINT)
    trained_text = "".join(tokenizer.decode(r, skip_special_tokens=False) for r in runs)
    for msg in conv.messages:
        foreign = msg.role != "assistant" or not msg.weight
        if foreign and len(msg.content.strip()) >= 8 and msg.content.strip() in trained_text \
                and not any(msg.content.strip() in t.content for t in trained):
            raise TemplateError(f"{conv.where}: text of a {msg.role} turn ended up in the loss mask")


def preflight(convs: list[Conversation], tokenizer: PreTrainedTokenizerBase, stop_ids: set[int],
              sample: int = 16) -> None:
    """Check the mask on real examples before any compute is spent.

    Multi-turn examples and ones with untrained (weight 0) turns go first:
    they are where templates go wrong.
    """
    ranked = sorted(convs, key=lambda c: (-len(c.messages), -sum(1 for m in c.messages if not m.weight)))
    with_tools = [c for c in convs if c.tools or any(m.tool_calls for m in c.messages)][:sample]
    for conv in ranked[:sample] + convs[:2] + with_tools:
        check_tools(conv, tokenizer)
        check_mask(conv, encode(conv, tokenizer, stop_ids), tokenizer, stop_ids)


TOOL_HINT = ("; use a model whose template renders tools (Qwen2.5, Llama 3.1 and later) or "
             "chat_template: chatml-tools")


def check_tools(conv: Conversation, tokenizer: PreTrainedTokenizerBase) -> None:
    """A template that ignores tools would train the model on answers to calls it never sees."""
    if not conv.tools and not any(m.tool_calls or m.role == "tool" for m in conv.messages):
        return
    full = render(tokenizer, conv.as_chat(), tools=conv.tools)
    for tool in conv.tools:
        name = ((tool.get("function") or tool) if isinstance(tool, dict) else {}).get("name")
        if name and name not in full:
            raise TemplateError(f"{conv.where}: the chat template does not render the tool definitions "
                                f"({name!r} is missing)" + TOOL_HINT)
    for msg in conv.messages:
        if msg.role == "tool" and msg.content.strip() and msg.content.strip() not in full:
            raise TemplateError(f"{conv.where}: the chat template does not render tool results" + TOOL_HINT)


def mask_segments(conv: Conversation, tokenizer: PreTrainedTokenizerBase, stop_ids: set[int]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, trained) runs: the loss mask made visible."""
    full, _ = assistant_spans(conv, tokenizer)
    offsets = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    labels = encode(conv, tokenizer, stop_ids).labels
    runs: list[tuple[str, bool]] = []
    cursor = 0
    for (_, end), label in zip(offsets, labels):
        piece, trained = full[cursor:end], label != IGNORE
        cursor = max(cursor, end)
        if runs and runs[-1][1] == trained:
            runs[-1] = (runs[-1][0] + piece, trained)
        elif piece:
            runs.append((piece, trained))
    if cursor < len(full):
        runs.append((full[cursor:], False))
    return runs
