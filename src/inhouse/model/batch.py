"""Generate for several requests in one `model.generate` call, each with its own settings.

Requests in one batch may differ in everything a client can ask for: prompt,
adapter (PEFT's `adapter_names`), temperature, top_p, seed, stop strings and
max_new_tokens. transformers' generate takes one setting for the whole batch,
so two of its extension points carry the per-request part:

- `RowSampler` (a logits processor) samples each row with its own temperature,
  top_p and seed, and leaves only the chosen token for generate's greedy pick;
  greedy rows pass through untouched, so they match a request served alone.
- `RowTracker` (a stopping criterion) sees every new token: it ends a row at an
  end-of-turn token, a stop string or its own max_new_tokens, and hands the
  new text to the request's `on_text` callback (streaming).

A call can also be paused (`on_step` returns True): unfinished rows come back
as None and keep their progress in `Request.state`; passing the same requests
again continues them (their prompt plus what they generated is read again),
so a server can let new requests join instead of waiting for a whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig as HFGenerationConfig
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from inhouse.generation import Completion, GenerationConfig

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class Request:
    """One prompt to continue. `adapter` None means the model as loaded (or the base in a mixed batch)."""

    prompt_ids: list[int]
    config: GenerationConfig = field(default_factory=GenerationConfig)
    adapter: str | None = None
    on_text: Callable[[str], None] | None = None
    cancelled: Callable[[], bool] = lambda: False
    state: _Row | None = field(default=None, repr=False)  # progress, kept between paused calls


class RowSampler(LogitsProcessor):
    """Per-row temperature / top_p sampling with per-row seeds; greedy rows are left as they are."""

    def __init__(self, rows: Sequence[_Row], device: torch.device):
        self.rows = [i for i, r in enumerate(rows) if r.request.config.temperature > 0]
        self.temperature = torch.tensor([rows[i].request.config.temperature for i in self.rows], device=device)
        self.top_p = torch.tensor([rows[i].request.config.top_p for i in self.rows], device=device)
        self.generators = [rows[i].generator(device) for i in self.rows]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.rows:
            return scores
        probs = torch.softmax(_top_p(scores[self.rows] / self.temperature[:, None], self.top_p), dim=-1)
        chosen = torch.stack([torch.multinomial(p, 1, generator=g)[0] for p, g in zip(probs, self.generators)])
        out = scores.clone()
        out[self.rows] = float("-inf")
        out[self.rows, chosen] = 0.0
        return out


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    return gen


def _top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask tokens outside each row's nucleus (the most likely token always stays)."""
    if bool((top_p >= 1).all()):
        return logits
    ordered, index = torch.sort(logits, descending=True, dim=-1)
    cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
    drop = (cumulative - torch.softmax(ordered, dim=-1)) >= top_p[:, None]
    return logits.masked_fill(drop.scatter(-1, index, drop), float("-inf"))


class _Row:
    """One request's progress: generated ids, text emitted so far, and why it ended."""

    def __init__(self, request: Request, decode: Callable[[list[int]], str]):
        self.request, self.decode = request, decode
        self.ids: list[int] = []
        self.text = ""
        self.finish: str | None = None
        self.end_of_turn = False
        self._sent = 0  # characters handed to on_text
        self._prefix = self._read = 0  # incremental detokenisation offsets (as vLLM does it)
        self._stops = request.config.stop or []
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._generator: torch.Generator | None = None

    def generator(self, device: torch.device) -> torch.Generator:
        """The row's own random stream (seeded when the request has a seed); it survives a pause."""
        if self._generator is None:
            self._generator = _generator(self.request.config.seed, device)
        return self._generator

    @property
    def tracking(self) -> bool:
        """Text is followed token by token only when someone needs it: a stop string or a stream."""
        return bool(self._stops or self.request.on_text)

    def add(self, token: int, stop_ids: set[int]) -> None:
        if token in stop_ids:
            self.finish, self.end_of_turn = "stop", True
        else:
            self.ids.append(token)
            if len(self.ids) >= self.request.config.max_new_tokens:
                self.finish = "length"
        if self.finish is None and self.request.cancelled():
            self.finish = "stop"
        if self.finish is not None:
            self.close()
        elif self.tracking:
            self._extend(final=False)
            if self.finish is not None:  # a stop string
                self._emit(len(self.text))

    def close(self) -> None:
        """The row is over: take in the last text (even an incomplete character) and hand it out."""
        self.finish = self.finish or "length"
        if self.tracking:
            self._extend(final=True)
        self._emit(len(self.text))

    def _extend(self, final: bool) -> None:
        """Append the new text; a stop string ends the row and is cut off with what follows it."""
        before = self.decode(self.ids[self._prefix:self._read])
        after = self.decode(self.ids[self._prefix:])
        if not final and (len(after) <= len(before) or after.endswith("\ufffd")):
            return  # an incomplete character: wait for its other bytes
        self.text += after[len(before):]
        self._prefix, self._read = self._read, len(self.ids)
        # an occurrence ending in the new text starts after what was sent minus the held-back tail
        hits = [i for i in (self.text.find(s, max(0, self._sent - self._hold)) for s in self._stops) if i >= 0]
        if hits:
            self.text, self.finish = self.text[:min(hits)], "stop"
        elif not final:
            self._emit(len(self.text) - self._hold if self._stops else len(self.text))

    def _emit(self, upto: int) -> None:
        if self.request.on_text and upto > self._sent:
            self.request.on_text(self.text[self._sent:upto])
            self._sent = upto

    def result(self, prompt_tokens: int) -> Completion:
        text = self.text if self.tracking else self.decode(self.ids)
        generated = len(self.ids) + self.end_of_turn  # the end-of-turn token was generated too
        return Completion(text, prompt_tokens, generated, "length" if self.finish == "length" else "stop")


class RowTracker(StoppingCriteria):
    """Feeds each row's new token to its `_Row`; a row is done when its own limits say so."""

    def __init__(self, rows: list[_Row], stop_ids: set[int], on_step: Callable[[], bool] | None = None):
        self.rows, self.stop_ids, self.on_step = rows, stop_ids, on_step
        self.paused = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tokens = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, tokens):
            if row.finish is None:
                row.add(token, self.stop_ids)
        if self.on_step is not None and self.on_step():
            self.paused = True
            return torch.ones(len(self.rows), dtype=torch.bool, device=input_ids.device)
        return torch.tensor([r.finish is not None for r in self.rows], device=input_ids.device)


def generate(model, tokenizer, requests: Sequence[Request], stop_ids: set[int],
             on_step: Callable[[], bool] | None = None) -> list[Completion | None]:
    """Continue every request in one left-padded generate call; results in request order.

    `on_step` runs after each new token of the batch (the server sends a step's text in one message);
    when it returns True the call pauses, and unfinished requests come back as None."""
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    rows = [r.state or _Row(r, decode) for r in requests]
    for r, row in zip(requests, rows):
        r.state = row
    prompts = [r.prompt_ids + row.ids for r, row in zip(requests, rows)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sorted(stop_ids)[0]
    ids, mask = _left_padded(prompts, pad)
    left = max(r.config.max_new_tokens - len(row.ids) for r, row in zip(requests, rows))
    config = HFGenerationConfig(max_new_tokens=max(left, 1), do_sample=False, eos_token_id=sorted(stop_ids),
                                pad_token_id=pad)
    extra = {"adapter_names": [r.adapter or BASE for r in requests]} if _mixed(model, requests) else {}
    tracker = RowTracker(rows, stop_ids, on_step)
    with torch.inference_mode():
        model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), generation_config=config,
                       logits_processor=LogitsProcessorList([RowSampler(rows, model.device)]),
                       stopping_criteria=StoppingCriteriaList([tracker]), **extra)
    if not tracker.paused:
        for row in (row for row in rows if row.finish is None):
            row.close()
    return [row.result(len(r.prompt_ids)) if row.finish else None for row, r in zip(rows, requests)]


def _left_padded(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask


def _mixed(model, requests: Sequence[Request]) -> bool:
    """Whether rows choose adapters (a PEFT model serving several, or the base and an adapter)."""
    return hasattr(model, "peft_config") and any(r.adapter is not None for r in requests)
