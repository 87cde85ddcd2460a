"""Held-out preference pairs in `inhouse eval`: the tuned model's implicit reward, beside the SFT metrics.

Given a file of pairs, the evaluation answers the prompts and scores the chosen answers as it scores
any reference answer (loss, perplexity, token accuracy, text metrics), and adds what DPO is for: the
reward accuracy and mean margin of the adapter against its reference (`inhouse.train.rewards`). The
reference is the base (the adapter switched off), or, for an adapter trained with `reference:
adapter`, the library adapter it started from, loaded beside it.
"""

from __future__ import annotations

from pathlib import Path

from inhouse.adapters import registry
from inhouse.adapters.lineage import Lineage
from inhouse.data.conversation import Conversation
from inhouse.data.preference import PreferencePair
from inhouse.errors import NotFoundError
from inhouse.model.generate import ChatModel
from inhouse.recipe import Recipe
from inhouse.train.pair_source import is_pair_file, read_pair_file
from inhouse.train.pairs import answer_side, batches, encode_pair
from inhouse.train.rewards import REF_ADAPTER, score_pairs


def held_out_pairs(data: Path, limit: int | None) -> list[PreferencePair] | None:
    """The file's pairs (the first `limit`), or None when it holds conversations."""
    return read_pair_file(data)[:limit] if is_pair_file(data) else None


def chosen_conversations(pairs: list[PreferencePair]) -> list[Conversation]:
    """Each prompt with its chosen answer: what the SFT metrics score."""
    return [answer_side(p, "chosen") for p in pairs]


def preference_metrics(chat: ChatModel, pairs: list[PreferencePair], lineage: Lineage,
                       batch_size: int) -> dict[str, float | int | None]:
    """Reward accuracy and mean margin of the adapter over its reference, with the run's beta."""
    recipe = lineage.trained().recipe or {}
    beta = recipe.get("dpo_beta", Recipe.model_fields["dpo_beta"].default)
    if recipe.get("reference") == "adapter":
        load_reference(chat, recipe.get("init_adapter"))
    encoded = [encode_pair(p, chat.tokenizer, chat.stop_ids) for p in pairs]
    scores = score_pairs(chat.model, batches(encoded, chat.tokenizer.pad_token_id, batch_size), beta)
    return {"reward_accuracy": scores.reward_accuracy, "reward_margin": scores.reward_margin, "pairs": scores.pairs}


def load_reference(chat: ChatModel, name: str | None) -> None:
    """The adapter a `reference: adapter` run measured against, loaded beside the tuned one."""
    try:
        path = registry.resolve(name or "")
    except NotFoundError:
        raise NotFoundError(f"{chat.name} was trained against adapter {name!r} (reference: adapter), which is no "
                            "longer in the library; its reward accuracy cannot be measured") from None
    chat.model.load_adapter(path, adapter_name=REF_ADAPTER)
