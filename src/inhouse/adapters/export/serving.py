"""Serve several LoRA adapters on one base model with vLLM or SGLang (multi-LoRA serving).

The adapters stay PEFT folders; what is written is how to start each server with all of them
loaded: the command line, the same settings as the server's `--config` YAML, and an OpenAI
client call that picks an adapter by name. Flag names and limits follow each server's documented
arguments: vLLM `--lora-modules` (JSON with `base_model_name`), `--max-lora-rank` (one of
`VLLM_MAX_LORA_RANKS`, from vllm/config/lora.py) and `--max-loras`; SGLang `--lora-paths NAME=PATH`,
`--max-lora-rank` and `--max-loras-per-batch` (which counts base-only requests as one adapter).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from inhouse import atomic
from inhouse.adapters import registry
from inhouse.errors import InvalidInputError, NotFoundError
from inhouse.model import refs

VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_PORT, SGLANG_PORT = 8000, 30000
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ServingError(InvalidInputError):
    """These adapters cannot be served together as asked."""


@dataclass(frozen=True)
class LoraModule:
    """One adapter as a multi-LoRA server loads it."""

    name: str
    path: Path
    rank: int
    base_model_name: str


def _adapter_config(path: Path) -> dict:
    file = path / "adapter_config.json"
    if not file.is_file():
        raise NotFoundError(f"{path}: no adapter_config.json (not a PEFT LoRA folder; a merged model is served "
                            "as a model of its own)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ServingError(f"{file}: cannot be read ({' '.join(str(exc).split())[:100]})") from None
    if not isinstance(config, dict) or not isinstance(config.get("r"), int):
        raise ServingError(f"{file}: no integer LoRA rank 'r'")
    return config


def lora_module(path: Path, name: str) -> LoraModule:
    """An adapter folder as a LoraModule: its largest rank (rank_pattern included) and the base
    it was trained on (lineage first, then PEFT's base_model_name_or_path)."""
    if not NAME.fullmatch(name):
        raise ServingError(f"adapter name {name!r} is not usable as a served model name; "
                           "use letters, digits, '.', '_' and '-'")
    path = Path(path).expanduser().resolve()
    config = _adapter_config(path)
    rank = max([config["r"], *(config.get("rank_pattern") or {}).values()])
    base = registry.lineage(path).base_model or config.get("base_model_name_or_path")
    if not base:
        raise ServingError(f"{path}: neither inhouse.json nor adapter_config.json names the base model")
    return LoraModule(name, path, rank, str(base))


def check_adapters(base: str, adapters: list[LoraModule]) -> None:
    """One base for all, distinct names, and a base an outside server can load."""
    if not adapters:
        raise ServingError("no adapters to serve; name at least one")
    if base == refs.TINY:
        raise ServingError(f"{refs.TINY} exists only inside inhouse; vLLM and SGLang need a model folder or hub id")
    names = [a.name for a in adapters]
    if len(set(names)) != len(names):
        raise ServingError(f"two adapters are both named {next(n for n in names if names.count(n) > 1)!r}; "
                           "give each its own name")
    for adapter in adapters:
        if refs.canonical(adapter.base_model_name) != refs.canonical(base):
            raise ServingError(f"adapter {adapter.name!r} was trained on {adapter.base_model_name!r}, not {base!r}; "
                               "adapters served together must share one base")


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds an adapter of this rank."""
    fitting = [choice for choice in VLLM_MAX_LORA_RANKS if choice >= rank]
    if not fitting:
        raise ServingError(f"vLLM serves LoRA ranks up to {VLLM_MAX_LORA_RANKS[-1]}; this adapter has rank {rank}")
    return fitting[0]


def _lora_module_json(base: str, adapter: LoraModule) -> str:
    return json.dumps({"name": adapter.name, "path": str(adapter.path), "base_model_name": base})


def vllm_config(base: str, adapters: list[LoraModule]) -> dict:
    """`vllm serve --config` settings (long flag names as keys; list items become separate values)."""
    check_adapters(base, adapters)
    return {"model": base, "enable-lora": True, "lora-modules": [_lora_module_json(base, a) for a in adapters],
            "max-lora-rank": vllm_max_lora_rank(max(a.rank for a in adapters)), "max-loras": len(adapters)}


def sglang_config(base: str, adapters: list[LoraModule]) -> dict:
    """`python -m sglang.launch_server --config` settings."""
    check_adapters(base, adapters)
    return {"model-path": base, "enable-lora": True, "lora-paths": [f"{a.name}={a.path}" for a in adapters],
            "max-lora-rank": max(a.rank for a in adapters), "max-loras-per-batch": len(adapters) + 1}


def _argv(config: dict) -> list[str]:
    argv: list[str] = []
    for key, value in config.items():
        values = value if isinstance(value, list) else [] if value is True else [value]
        argv += [f"--{key}", *map(str, values)]
    return argv


def vllm_command(base: str, adapters: list[LoraModule]) -> list[str]:
    """`vllm serve BASE --enable-lora --lora-modules '{...}' ... --max-lora-rank R --max-loras N` as argv."""
    config = vllm_config(base, adapters)
    return ["vllm", "serve", config.pop("model"), *_argv(config)]


def sglang_command(base: str, adapters: list[LoraModule]) -> list[str]:
    """`python -m sglang.launch_server --model-path BASE --enable-lora --lora-paths NAME=PATH ...` as argv."""
    return ["python", "-m", "sglang.launch_server", *_argv(sglang_config(base, adapters))]


def client_snippet(model: str, port: int) -> str:
    """A Python OpenAI-client call that asks the server for `model` (an adapter, by name)."""
    return ("from openai import OpenAI\n\n"
            f'client = OpenAI(base_url="http://localhost:{port}/v1", api_key="unused")\n'
            f"reply = client.chat.completions.create(\n    model={json.dumps(model)},\n"
            f'    messages=[{{"role": "user", "content": "Hello!"}}],\n)\n'
            "print(reply.choices[0].message.content)\n")


def _guide(base: str, adapters: list[LoraModule]) -> str:
    first = adapters[0].name
    listed = ", ".join(f"{a.name} (rank {a.rank}, {a.path})" for a in adapters)
    return (f"# Serve {len(adapters)} adapter(s) on {base}\n\nAdapters: {listed}\n\n"
            f"## vLLM\n\n    {shlex.join(vllm_command(base, adapters))}\n\n"
            "(`sh vllm.sh`), or `vllm serve --config vllm.yaml`. Ask for an adapter by its name:\n\n"
            + _indent(client_snippet(first, VLLM_PORT))
            + f"\n## SGLang\n\n    {shlex.join(sglang_command(base, adapters))}\n\n"
            "(`sh sglang.sh`), or `python -m sglang.launch_server --config sglang.yaml`. Ask for BASE:ADAPTER "
            "(older SGLang: the base, with `extra_body={\"lora_path\": ADAPTER}`):\n\n"
            + _indent(client_snippet(f"{base}:{first}", SGLANG_PORT)))


def _indent(text: str) -> str:
    return "".join(f"    {line}\n" if line else "\n" for line in text.splitlines())


def write_serving(folder: Path, base: str, adapters: list[LoraModule]) -> list[Path]:
    """Write into `folder` each server's launch command (`vllm.sh`, `sglang.sh`: the one command line),
    its `--config` YAML, and SERVING.md with both and the client calls."""
    folder = Path(folder)
    files = {"vllm.sh": shlex.join(vllm_command(base, adapters)) + "\n",
             "vllm.yaml": _yaml(vllm_config(base, adapters)),
             "sglang.sh": shlex.join(sglang_command(base, adapters)) + "\n",
             "sglang.yaml": _yaml(sglang_config(base, adapters)), "SERVING.md": _guide(base, adapters)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic.write_text(folder / name, text)
    return [folder / name for name in files]


def _yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 16)
