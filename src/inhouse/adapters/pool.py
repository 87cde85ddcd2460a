"""One base model per process, its adapters attached on first use.

A server answers for the base and for every adapter in the library trained on
it. Loading the base once and attaching adapters (read in PEFT's format) as
stacked LoRA weights keeps one copy of the base in memory, and a batch may mix
adapters and the base row by row (`inhouse.model.multilora`). At most
`max_adapters` stay loaded; the least recently used leaves first.

Clients name models by id: the base's id, or a library name. Nothing a client
sends is ever read as a filesystem path.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from inhouse.adapters import registry
from inhouse.adapters.load import base_of
from inhouse.errors import InhouseError, InvalidInputError, NotFoundError
from inhouse.model import load as model_load
from inhouse.model.batch import BASE
from inhouse.model.generate import ChatModel
from inhouse.model.multilora import MultiLora
from inhouse.model.template import stop_token_ids


@dataclass(frozen=True)
class ServedModel:
    """What /v1/models lists: the base (parent None) or an adapter on it."""

    id: str
    created: int
    parent: str | None
    path: Path | None


def same_model(a: str, b: str) -> bool:
    """Whether two model references name the same model (folders compared by their real path)."""
    try:
        return model_load.resolve(a) == model_load.resolve(b)
    except InhouseError:
        return a == b


class ModelPool:
    def __init__(self, base: str, max_adapters: int = 8, name: str | None = None, loaded: tuple | None = None):
        """`loaded` = (model, tokenizer) already in memory under the name `base` (benchmarks)."""
        self.base_ref = base if loaded else model_load.resolve(base)
        self.base_id = name or base
        self.max_adapters = max_adapters
        self.model, self.tokenizer = loaded or model_load.load(base)
        self.model.eval()
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config.eos_token_id)
        self.lora = MultiLora(self.model, max_adapters + 1)
        self.loaded: OrderedDict[str, Path] = OrderedDict()  # library name -> folder, oldest first
        self.tokenizers: dict[str, tuple[PreTrainedTokenizerBase, set[int]]] = {}
        self.started = int(datetime.now().timestamp())
        self.lock = threading.RLock()
        self._serial = 0

    # -- what is served --------------------------------------------------------

    def adapters(self) -> list[ServedModel]:
        """Every LoRA adapter in the library trained on this base, newest first."""
        found = (self._served(Path(e["path"]), e) for e in registry.list_adapters() if not e.get("broken"))
        return [s for s in found if s is not None]

    def _served(self, path: Path, info: dict) -> ServedModel | None:
        """The adapter at `path` if it is a LoRA adapter trained on this base."""
        if not (path / "adapter_config.json").is_file() or not same_model(base_of(path, info), self.base_ref):
            return None
        return ServedModel(path.name, _timestamp(info.get("finished_at"), path), self.base_id, path)

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

    def chat_model(self, model_id: str) -> ChatModel:
        """A ChatModel view for rendering prompts and generating; the adapter's weights are attached by
        `attach` (in the generating thread), its tokenizer (chat template) is read here, once."""
        served = self.find(model_id)
        if served.parent is None:
            return ChatModel(self.model, self.tokenizer, self.stop_ids, served.id, BASE)
        tokenizer, stops = self._tokenizer(served)
        return ChatModel(self.model, tokenizer, stops, served.id, served.id)

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

    def attach(self, model_ids: set[str]) -> None:
        """Load these adapters into the model's LoRA slots, evicting the least recently used others."""
        wanted = {m for m in model_ids if m != BASE}
        if len(wanted) > self.max_adapters:
            raise InvalidInputError(f"{len(wanted)} adapters in one batch, but --max-adapters is {self.max_adapters}")
        with self.lock:
            for name in wanted:
                if name not in self.loaded:
                    while len(self.loaded) >= self.max_adapters:
                        oldest = next(n for n in self.loaded if n not in wanted)
                        self.lora.unload(oldest)
                        del self.loaded[oldest]
                    path = self.find(name).path
                    self.lora.load(name, path)
                    self.loaded[name] = path
                self.loaded.move_to_end(name)

    def select(self, model_ids: list[str]):
        """Context: each row of the next generate call uses its model's adapter (the base: none)."""
        return self.lora.use([None if m == BASE else m for m in model_ids])


def _plain(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0") and not name.startswith(".")


def _timestamp(iso: str | None, path: Path) -> int:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp())
    except ValueError:
        return int(path.stat().st_mtime)
