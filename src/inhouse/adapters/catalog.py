"""What a server serves: one base model and every adapter in the library trained on it.

The catalog knows ids, folders, chat templates and stop tokens; it holds no
weights (those live in the generating process, `inhouse.adapters.pool`), so
the HTTP side stays light. Clients name models by id: the base's id, or a
library name. Nothing a client sends is ever read as a filesystem path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from inhouse.adapters import registry
from inhouse.adapters.lineage import Lineage
from inhouse.adapters.load import base_of
from inhouse.errors import NotFoundError
from inhouse.model import load as model_load
from inhouse.model import refs
from inhouse.model.batch import BASE
from inhouse.model.generate import ChatModel
from inhouse.model.template import stop_token_ids


@dataclass(frozen=True)
class ServedModel:
    """What /v1/models lists: the base (parent None) or an adapter on it."""

    id: str
    created: int
    parent: str | None
    path: Path | None


def same_model(a: str, b: str) -> bool:
    """Whether two model references name the same model (folders compared by their real path); no hub
    lookup, so listing adapters never waits on the network."""
    return refs.canonical(a) == refs.canonical(b)


class Catalog:
    def __init__(self, base: str, name: str | None = None, tokenizer: PreTrainedTokenizerBase | None = None,
                 eos: int | list[int] | None = None):
        """`tokenizer`: the base's, when it is not loaded from `base` (benchmarks); `eos`: the model's
        generation config's end tokens (the generating process reports them)."""
        self.base_ref = base if tokenizer is not None else model_load.resolve(base)
        self.base_id = name or base
        self.tokenizer = model_load.prepare_tokenizer(tokenizer or model_load.load_tokenizer(base))
        self.stop_ids = stop_token_ids(self.tokenizer, eos)
        self.tokenizers: dict[str, tuple[PreTrainedTokenizerBase, set[int]]] = {}
        self.started = int(datetime.now().timestamp())
        self.lock = threading.Lock()

    # -- what is served --------------------------------------------------------

    def adapters(self) -> list[ServedModel]:
        """Every LoRA adapter in the library trained on this base, newest first."""
        found = (self._served(e.path, e.lineage) for e in registry.list_adapters() if not e.broken)
        return [s for s in found if s is not None]

    def _served(self, path: Path, info: Lineage) -> ServedModel | None:
        """The adapter at `path` if it is a LoRA adapter trained on this base."""
        if not (path / "adapter_config.json").is_file() or not same_model(base_of(path, info), self.base_ref):
            return None
        return ServedModel(path.name, _timestamp(info.finished_at, path), self.base_id, path)

    def models(self) -> list[ServedModel]:
        return [ServedModel(self.base_id, self.started, None, None), *self.adapters()]

    def find(self, model_id: str) -> ServedModel:
        """The base or one adapter by its id; NotFoundError for anything else (paths included)."""
        if model_id in (self.base_id, self.base_ref):
            return ServedModel(self.base_id, self.started, None, None)
        folder = registry.library() / model_id
        served = self._served(folder, registry.lineage(folder)) if _plain(model_id) and folder.is_dir() else None
        if served is None:
            raise NotFoundError(f"The model '{model_id}' does not exist or is not served here "
                                f"(this server serves {self.base_id} and the adapters trained on it)")
        return served

    # -- using a model -----------------------------------------------------------

    def folder(self, model_id: str) -> str | None:
        """The adapter folder behind an id (None for the base)."""
        served = self.find(model_id)
        return str(served.path) if served.path else None

    def chat_model(self, model_id: str) -> ChatModel:
        """What rendering a prompt needs (no weights: model is None): the chat template the adapter was
        trained with and its stop tokens, read once."""
        served = self.find(model_id)
        if served.parent is None:
            return ChatModel(None, self.tokenizer, self.stop_ids, served.id, BASE)
        tokenizer, stops = self._tokenizer(served)
        return ChatModel(None, tokenizer, stops, served.id, served.id)

    def _tokenizer(self, served: ServedModel) -> tuple[PreTrainedTokenizerBase, set[int]]:
        """The adapter's own tokenizer (its chat template is the one it was trained with) and stop tokens;
        an adapter folder saved without a tokenizer (made by another tool) uses the base's."""
        if not any((served.path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            return self.tokenizer, self.stop_ids
        with self.lock:
            if served.id not in self.tokenizers:
                tokenizer = model_load.prepare_tokenizer(AutoTokenizer.from_pretrained(served.path))
                self.tokenizers[served.id] = (tokenizer, self.stop_ids | stop_token_ids(tokenizer))
            return self.tokenizers[served.id]

def _plain(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0") and not name.startswith(".")


def _timestamp(iso: str | None, path: Path) -> int:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp())
    except ValueError:
        return int(path.stat().st_mtime)
