"""vLLM and SGLang multi-LoRA launch files, checked against the servers' documented arguments."""

import argparse
import json
import shlex

import pytest
import yaml
from peft import LoraConfig, get_peft_model

from inhouse.adapters.export.serving import VLLM_MAX_LORA_RANKS, ServingError, client_snippet, lora_module, \
    sglang_command, vllm_command, vllm_max_lora_rank, write_serving
from inhouse.errors import NotFoundError
from inhouse.model.load import load_model

BASE = "Qwen/Qwen2.5-0.5B-Instruct"


def adapter(folder, r=8, base=BASE, lineage_base=None, rank_pattern=None):
    folder.mkdir(parents=True)
    config = {"r": r, "lora_alpha": 2 * r, "base_model_name_or_path": base, "target_modules": ["q_proj", "v_proj"],
              "peft_type": "LORA", "rank_pattern": rank_pattern or {}}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    if lineage_base:
        (folder / "inhouse.json").write_text(json.dumps({"name": folder.name, "base_model": lineage_base}))
    return folder


@pytest.fixture
def two(tmp_path):
    return [lora_module(adapter(tmp_path / "support dept", r=12), "support"),
            lora_module(adapter(tmp_path / "legal", r=8, base="/elsewhere", lineage_base=BASE,
                                rank_pattern={"v_proj": 40}), "legal-v2")]


def vllm_parser():
    """vLLM's documented LoRA flags (vllm serve --help, docs/features/lora.md)."""
    parser = argparse.ArgumentParser(prog="vllm", exit_on_error=False)
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--enable-lora", action="store_true")
    parser.add_argument("--lora-modules", nargs="+", type=json.loads)
    parser.add_argument("--max-lora-rank", type=int, choices=VLLM_MAX_LORA_RANKS)
    parser.add_argument("--max-loras", type=int)
    return parser


def sglang_parser():
    """SGLang's documented LoRA flags (docs/advanced_features/server_arguments.md)."""
    parser = argparse.ArgumentParser(prog="sglang", exit_on_error=False)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--enable-lora", action="store_true")
    parser.add_argument("--lora-paths", nargs="+")
    parser.add_argument("--max-lora-rank", type=int)
    parser.add_argument("--max-loras-per-batch", type=int)
    return parser


def test_an_adapter_folder_gives_its_largest_rank_and_the_base_it_was_trained_on(two):
    support, legal = two
    assert (support.rank, support.base_model_name, support.path.is_absolute()) == (12, BASE, True)
    assert (legal.rank, legal.base_model_name) == (40, BASE)  # rank_pattern counts; lineage beats adapter_config


def test_a_real_peft_folder_reads(tmp_path, tiny_dir):
    model = get_peft_model(load_model(str(tiny_dir)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(tmp_path / "peft")
    module = lora_module(tmp_path / "peft", "tiny-lora")
    assert module.rank == 4 and module.base_model_name == str(tiny_dir)
    command = vllm_command(str(tiny_dir), [module])
    assert command[command.index("--max-lora-rank") + 1] == "8"


@pytest.mark.parametrize("rank, served", [(1, 1), (2, 8), (8, 8), (9, 16), (16, 16), (17, 32), (33, 64), (64, 64),
                                          (65, 128), (200, 256), (256, 256), (257, 320), (320, 320), (321, 512),
                                          (512, 512)])
def test_vllm_max_lora_rank_is_the_smallest_accepted_value_that_holds_the_rank(rank, served):
    assert vllm_max_lora_rank(rank) == served


def test_ranks_above_what_vllm_serves_are_refused():
    with pytest.raises(ServingError, match="up to 512"):
        vllm_max_lora_rank(513)


def test_the_vllm_command_parses_under_the_documented_flags_and_survives_the_shell(two):
    argv = vllm_command(BASE, two)
    assert shlex.split(shlex.join(argv)) == argv
    args = vllm_parser().parse_args(argv[1:])
    assert args.model == BASE and args.enable_lora and args.max_loras == 2 and args.max_lora_rank == 64
    assert args.lora_modules == [{"name": a.name, "path": str(a.path), "base_model_name": BASE} for a in two]


def test_the_sglang_command_parses_under_the_documented_flags_and_survives_the_shell(two):
    argv = sglang_command(BASE, two)
    assert argv[:3] == ["python", "-m", "sglang.launch_server"] and shlex.split(shlex.join(argv)) == argv
    args = sglang_parser().parse_args(argv[3:])
    assert args.model_path == BASE and args.enable_lora and args.max_lora_rank == 40
    assert args.max_loras_per_batch == 3  # both adapters and base-only requests in one batch
    assert [p.split("=", 1) for p in args.lora_paths] == [[a.name, str(a.path)] for a in two]


def config_argv(config: dict) -> list[str]:
    """What `--config FILE` turns into, as vLLM's and SGLang's loaders document it."""
    argv = []
    for key, value in config.items():
        if value is True:
            argv.append(f"--{key}")
        elif isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def test_the_config_files_say_what_the_commands_say(tmp_path, two):
    paths = write_serving(tmp_path / "out", BASE, two)
    assert [p.name for p in paths] == ["vllm.sh", "vllm.yaml", "sglang.sh", "sglang.yaml", "SERVING.md"]
    vllm_sh, vllm_yaml, sglang_sh, sglang_yaml, guide = (p.read_text(encoding="utf-8") for p in paths)
    assert shlex.split(vllm_sh) == vllm_command(BASE, two) and shlex.split(sglang_sh) == sglang_command(BASE, two)
    vllm = yaml.safe_load(vllm_yaml)
    assert ["vllm", "serve", vllm.pop("model"), *config_argv(vllm)] == vllm_command(BASE, two)
    sglang = yaml.safe_load(sglang_yaml)
    assert ["python", "-m", "sglang.launch_server", *config_argv(sglang)] == sglang_command(BASE, two)
    assert shlex.join(vllm_command(BASE, two)) in guide and shlex.join(sglang_command(BASE, two)) in guide
    assert 'model="support"' in guide and f'model="{BASE}:support"' in guide


def test_the_client_snippet_is_python_that_asks_for_the_adapter_by_name():
    snippet = client_snippet("support", 8000)
    compile(snippet, "snippet", "exec")
    assert 'model="support"' in snippet and "http://localhost:8000/v1" in snippet


def test_adapters_of_different_bases_are_not_served_together(tmp_path, two):
    other = lora_module(adapter(tmp_path / "other", base="meta-llama/Llama-3.2-1B"), "other")
    with pytest.raises(ServingError, match="'other' was trained on 'meta-llama/Llama-3.2-1B'"):
        vllm_command(BASE, [*two, other])
    with pytest.raises(ServingError, match="share one base"):
        write_serving(tmp_path / "out", BASE, [*two, other])
    assert not (tmp_path / "out").exists()


def test_a_base_folder_matches_however_it_is_spelt(tmp_path, monkeypatch):
    (tmp_path / "base").mkdir()
    monkeypatch.chdir(tmp_path)
    module = lora_module(adapter(tmp_path / "a", base="base"), "a")
    assert vllm_command(str(tmp_path / "base"), [module])[2] == str(tmp_path / "base")


@pytest.mark.parametrize("base, names, words", [
    ("builtin:tiny", ["a"], "exists only inside inhouse"),
    (BASE, ["a", "a"], "both named 'a'"),
    (BASE, [], "no adapters"),
])
def test_what_no_server_could_run_is_refused(tmp_path, base, names, words):
    modules = [lora_module(adapter(tmp_path / f"{n}{i}"), n) for i, n in enumerate(names)]
    with pytest.raises(ServingError, match=words):
        vllm_command(base, modules)


def test_unusable_names_and_folders_are_refused(tmp_path):
    with pytest.raises(ServingError, match="served model name"):
        lora_module(adapter(tmp_path / "a"), "my adapter=1")
    with pytest.raises(NotFoundError, match="no adapter_config.json"):
        lora_module(tmp_path, "a")
