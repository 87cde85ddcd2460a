"""What each export target writes into the staging folder (see run.export for the folder's life)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inhouse.adapters import registry
from inhouse.adapters.export.config import ExportConfig
from inhouse.adapters.export.stops import Stops, find_stops
from inhouse.adapters.export.verify import check_tokenisation
from inhouse.adapters.export.vocab import adds_special
from inhouse.adapters.lineage import Lineage
from inhouse.errors import InhouseError
from inhouse.events import Events, Stopped


def load(path: Path, dtype: Any = None) -> tuple[Any, Any, Lineage]:
    """(merged or full model, tokenizer, lineage); adapters are merged into their base reloaded at `dtype`
    (float32 by default: the adapter's update is added before any rounding)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inhouse.adapters.merge import is_adapter_folder, merged_model

    dtype = dtype or torch.float32
    if is_adapter_folder(path):
        return merged_model(str(path), dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(path), registry.lineage(path).model_copy(update={"path": str(path)})


def entry_name(path: Path, info: Lineage) -> str:
    return str(info.name or path.name)


def stops_of(model: Any, tokenizer: Any) -> Stops:
    return find_stops(tokenizer, model.generation_config.eos_token_id)


def write_merged(folder: Path, path: Path, result: Any, events: Events) -> None:
    """A Hugging Face folder: safetensors, tokenizer with its chat template, and a generation config
    that lists every stop token (transformers, vLLM and TGI stop on any of them)."""
    from inhouse.adapters.merge import merged_lineage

    events.say(f"merging {path.name} into its base (bf16)")
    model, tokenizer, info = load(path, _bf16())
    stops = stops_of(model, tokenizer)
    model.generation_config.eos_token_id = list(stops.ids)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    lineage = merged_lineage(info, f"{entry_name(path, info)}-merged", "bfloat16")
    registry.write_lineage(folder, lineage, result.path)
    result.commands = [f"python -c \"from transformers import pipeline; print(pipeline('text-generation', "
                       f"'{result.path}')([{{'role': 'user', 'content': 'Hello'}}]))\"",
                       f"vllm serve {result.path}"]
    result.notes.append(f"stop tokens in generation_config.json: {', '.join(stops.texts)}")


def _bf16():
    import torch

    return torch.bfloat16


def _progress(events: Events, what: str):
    def on_tensor(done: int, total: int) -> None:
        events.log("progress", done=done, total=total, unit=f"tensors ({what})")
        if events.should_stop():
            raise Stopped("export cancelled; nothing was written")
    return on_tensor


def gguf_model_file(folder: Path, model: Any, tokenizer: Any, name: str, quant: str, events: Events,
                    stem: str) -> str:
    """Write `<stem>-<quant>.gguf`; K-quants go through an f16 file that llama.cpp quantises."""
    from inhouse.adapters.export.gguf_model import write_model
    from inhouse.adapters.export.quantize import K_QUANTS, quantize

    stops = stops_of(model, tokenizer)
    file = folder / f"{stem}-{quant}.gguf"
    if quant in K_QUANTS:
        staged = folder / f".{stem}-f16.gguf"
        write_model(model, tokenizer, staged, "f16", stops, name, _progress(events, stem))
        events.say(f"quantising {file.name} with llama.cpp")
        quantize(staged, file, quant)
        staged.unlink()
    else:
        write_model(model, tokenizer, file, quant, stops, name, _progress(events, stem))
    return file.name


def write_gguf(folder: Path, path: Path, config: ExportConfig, result: Any, events: Events) -> dict[str, Any]:
    """The merged model as GGUF, the adapter alone as a GGUF LoRA (when it has that form) and, with
    `with_base`, the base the LoRA applies to. Returns what the Ollama target builds on."""
    from inhouse.adapters.merge import is_adapter_folder

    events.say(f"loading {path.name}")
    model, tokenizer, info = load(path)
    name, quant = entry_name(path, info), config.gguf_quant
    stops = stops_of(model, tokenizer)
    made = {"model": gguf_model_file(folder, model, tokenizer, name, quant, events, name), "stops": stops,
            "tokenizer": tokenizer, "info": info, "lora": None, "base": None}
    result.notes.append(check_tokenisation(folder / made["model"], tokenizer))
    result.commands.append(f"llama-cli -m {made['model']} -cnv")
    if is_adapter_folder(path):
        made["lora"] = _lora(folder, path, model.config, name, result)
        del model
        if config.with_base and made["lora"]:
            made["base"] = _base(folder, path, info, tokenizer, quant, events)
            result.commands.append(f"llama-server -m {made['base']} --lora {made['lora']}")
    result.notes.append(f"end-of-generation tokens: {', '.join(stops.texts)}")
    return made


def _lora(folder: Path, path: Path, model_config: Any, name: str, result: Any) -> str | None:
    from inhouse.adapters.export.gguf_lora import write_lora

    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    file = folder / f"{name}-lora.gguf"
    try:
        write_lora(path, config, model_config, file, name)
    except InhouseError as e:
        result.notes.append(f"no GGUF LoRA: {e}")
        return None
    return file.name


def _base(folder: Path, path: Path, info: dict[str, Any], tokenizer: Any, quant: str, events: Events) -> str:
    import torch

    from inhouse.adapters.load import base_of
    from inhouse.model import load as model_load

    events.say("writing the base model as GGUF (for --lora)")
    base = model_load.load_model(base_of(path, info), torch.float32)
    return gguf_model_file(folder, base, tokenizer, f"{entry_name(path, info)}-base", quant, events, "base")


def write_ollama(folder: Path, path: Path, config: ExportConfig, result: Any, events: Events) -> None:
    from inhouse.adapters.export.ollama import write_ollama as modelfile

    made = write_gguf(folder, path, config, result, events)
    tokenizer, stops = made["tokenizer"], made["stops"]
    use_lora = bool(made["lora"] and made["base"])
    name = entry_name(path, made["info"])
    modelfile(folder, gguf_model=made["base"] if use_lora else made["model"], base_ref=None,
              adapter_gguf=made["lora"] if use_lora else None, chat_template=tokenizer.chat_template,
              stop_tokens=list(stops.texts), bos_token=tokenizer.bos_token, system=config.system,
              eos_token=tokenizer.eos_token, engine_adds_bos=adds_special(tokenizer)["bos"], name=name)
    result.commands = [f"cd {result.path} && ollama create {name} -f Modelfile", f"ollama run {name}"]


def write_vllm(folder: Path, paths: list[Path], result: Any) -> None:
    from inhouse.adapters.export.serving import lora_module, write_serving
    from inhouse.adapters.load import base_of

    modules = [lora_module(p, entry_name(p, registry.lineage(p))) for p in paths]
    bases = {str(base_of(p, registry.lineage(p))) for p in paths}
    if len(bases) > 1:
        raise InhouseError(f"vLLM serves several adapters on one base; these have {len(bases)}: {', '.join(sorted(bases))}")
    written = write_serving(folder, bases.pop(), modules)
    result.commands = [Path(p).read_text(encoding="utf-8").strip() for p in written if Path(p).suffix == ".sh"]
