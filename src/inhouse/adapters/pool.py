"""One base model per process, its adapters attached on first use.

Loading the base once and attaching adapters (read in PEFT's format) as
stacked LoRA weights keeps one copy of the base in memory, and a batch may mix
adapters and the base row by row (`inhouse.model.multilora`). At most
`max_adapters` stay loaded; the least recently used leaves first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from inhouse.errors import InvalidInputError
from inhouse.model import load as model_load
from inhouse.model.multilora import MultiLora


class ModelPool:
    def __init__(self, base: str, max_adapters: int = 8, loader: Callable[[], tuple] | None = None):
        """`loader` returns (model, tokenizer) instead of loading `base` (benchmarks with random weights)."""
        self.model, self.tokenizer = loader() if loader else model_load.load(base)
        model_load.prepare_tokenizer(self.tokenizer)
        self.model.eval()
        self.max_adapters = max_adapters
        self.lora = MultiLora(self.model, max_adapters + 1)
        self.loaded: OrderedDict[str, Path] = OrderedDict()  # name -> folder, least recently used first

    def attach(self, adapters: dict[str, Path]) -> None:
        """Load these adapters (name -> folder) into LoRA slots, evicting the least recently used others."""
        if len(adapters) > self.max_adapters:
            raise InvalidInputError(f"{len(adapters)} adapters in one batch, but --max-adapters is {self.max_adapters}")
        for name, path in adapters.items():
            if self.loaded.get(name) != Path(path):
                if name in self.loaded:  # the same name now means another folder
                    self._evict(name)
                while len(self.loaded) >= self.max_adapters:
                    self._evict(next(n for n in self.loaded if n not in adapters))
                self.lora.load(name, path)
                self.loaded[name] = Path(path)
            self.loaded.move_to_end(name)

    def _evict(self, name: str) -> None:
        self.lora.unload(name)
        del self.loaded[name]

    def select(self, names: list[str | None]) -> AbstractContextManager:
        """Context: each row of the next generate call uses its adapter (None: the base alone)."""
        return self.lora.use(names)
