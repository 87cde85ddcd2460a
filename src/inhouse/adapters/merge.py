"""Merge a LoRA/QLoRA adapter into its base model for export.

The base is always reloaded in bf16 (never 4-bit) and merged there: merging
into quantised weights would round the adapter's update away.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoTokenizer

from inhouse import outputs
from inhouse.adapters import registry
from inhouse.adapters.load import base_of
from inhouse.adapters.lineage import Lineage, now, versions
from inhouse.errors import InhouseError
from inhouse.model import load as model_load
from inhouse.model.template import stop_token_ids


def is_adapter_folder(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def merged_model(ref: str, dtype: torch.dtype = torch.bfloat16):
    """(merged model, tokenizer, adapter lineage with its `path`) without writing anything."""
    path = registry.resolve(ref)
    if not is_adapter_folder(path):
        raise InhouseError(f"{path} is already a full model (nothing to merge)")
    info = registry.lineage(path)
    base = base_of(path, info)
    model = PeftModel.from_pretrained(model_load.load_model(base, dtype), path).merge_and_unload()
    # inhouse saves the tokenizer (and its chat template) with every adapter; another tool's folder may not
    has_own = any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(path) if has_own else model_load.load_tokenizer(base)
    # Every token that ends a turn, so a merged folder stops where the adapter did in any engine.
    model.generation_config.eos_token_id = sorted(stop_token_ids(tokenizer, model.generation_config.eos_token_id))
    return model, tokenizer, info.model_copy(update={"path": str(path)})


def _inputs(ref: str) -> list[Path]:
    """The adapter folder and, when it is a folder, its base model: what --out must never touch."""
    path = registry.resolve(ref)
    base = Path(str(registry.lineage(path).base_model or ""))
    return [path, *([base] if str(base) not in ("", ".") and base.exists() else [])]


OUTPUT_KIND = "merged model"


def merged_lineage(info: Lineage, name: str, dtype: str) -> Lineage:
    """What a merged model records, for `inhouse merge` and `inhouse export --to merged` alike."""
    return Lineage(name=name, kind="merged", base_model=info.base_model, merged_from=info.name, merged_dtype=dtype,
                   parent=info, versions=versions(), finished_at=now())


def merge(ref: str, name: str | None = None, dtype: torch.dtype = torch.bfloat16, out: Path | None = None,
          overwrite: bool = False) -> Path:
    """Write the merged model into the library as `<adapter>-merged`, or into the folder `out` (atomically)."""
    target = outputs.claim(out, OUTPUT_KIND, _inputs(ref), overwrite) if out else None
    model, tokenizer, info = merged_model(ref, dtype)
    name = name or f"{info.name or Path(info.model_extra['path']).name}-merged"
    lineage = merged_lineage(info, name, str(dtype).removeprefix("torch."))

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return registry.publish(name, write, lineage, target)
