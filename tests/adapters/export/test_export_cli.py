"""`inhouse export` end to end on a trained adapter: each target's folder, its manifest, the lineage
record, the refusals, and nothing written when an export fails."""

import json

import pytest
from export_helpers import gguf_logits, llama_cpp
from helpers import chat, hashes, run_cli, write_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from inhouse import recipe as recipe_mod
from inhouse.adapters import registry
from inhouse.events import Events
from inhouse.train.sft import train


@pytest.fixture
def adapter(tmp_path, tiny_dir, home):
    data = write_jsonl(tmp_path / "d.jsonl", [chat("Best day?", "Tuesday."), chat("Colour?", "Blue.")])
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=30,
                              learning_rate=1e-2, lora_dropout=0, output_name="m")
    return train(recipe, events=Events()).path


def exported(tmp_path, *args):
    code, out, err = run_cli("export", "m", *args)
    assert code == 0, err
    return out


def test_merged_folder_has_weights_template_and_every_stop_token(tmp_path, adapter):
    out = exported(tmp_path, "--to", "merged", "--out", tmp_path / "merged")
    assert f"exported to {tmp_path / 'merged'}" in out
    folder = tmp_path / "merged"
    assert (folder / "model.safetensors").is_file() and not (folder / "adapter_config.json").exists()
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    stops = GenerationConfig.from_pretrained(folder).eos_token_id
    assert sorted(tok.convert_ids_to_tokens(stops)) == ["<|endoftext|>", "<|eot_id|>", "<|im_end|>"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tok.apply_chat_template([{"role": "user", "content": "Best day?"}], add_generation_prompt=True,
                                  return_dict=False)
    answer = model.generate(__import__("torch").tensor([ids]), max_new_tokens=20, do_sample=False)[0, len(ids):]
    assert tok.decode(answer, skip_special_tokens=True) == "Tuesday."
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["target"] == "merged" and "model.safetensors" in manifest["files"]
    [record] = registry.lineage(adapter).exports
    assert record["target"] == "merged" and record["path"] == str(folder)


def test_gguf_export_writes_model_lora_and_base_that_llama_cpp_runs(tmp_path, adapter):
    llama_cpp()
    out = exported(tmp_path, "--to", "gguf", "--quant", "f16", "--with-base", "--out", tmp_path / "g")
    folder = tmp_path / "g"
    assert {"m-f16.gguf", "m-lora.gguf", "base-f16.gguf", "export.json"} <= {p.name for p in folder.iterdir()}
    assert "llama.cpp tokenises like the model's tokenizer" in out
    assert "llama-server -m base-f16.gguf --lora m-lora.gguf" in out
    ids = list(range(40, 80))
    merged = gguf_logits(folder / "m-f16.gguf", ids)
    with_lora = gguf_logits(folder / "base-f16.gguf", ids, lora_path=str(folder / "m-lora.gguf"))
    assert abs(merged - with_lora).max() < 2e-2  # the same adapter, applied two ways
    assert registry.lineage(adapter).exports[0]["files"] == sorted(p.name for p in folder.iterdir()
                                                                      if p.name not in ("export.json",) and
                                                                      not p.name.startswith("."))


def test_bad_requests_fail_in_one_line_and_write_nothing(tmp_path, adapter):
    before = hashes(adapter)
    cases = [(["--to", "gguff", "--out", tmp_path / "x"], "--to"),
             (["--to", "merged", "--quant", "q8_0", "--out", tmp_path / "x"], "quant applies to GGUF exports"),
             (["--to", "gguf", "--quant", "q3", "--out", tmp_path / "x"], "--quant"),
             (["--to", "gguf", "--out", adapter], "--out")]
    for args, message in cases:
        code, out, err = run_cli("export", "m", *args)
        assert code != 0 and message in err and "Traceback" not in err, (args, err)
    code, _, err = run_cli("export", "nope", "--to", "gguf", "--out", tmp_path / "x")
    assert code != 0 and "no adapter 'nope'" in err
    code, _, err = run_cli("export", "m", "m", "--to", "gguf", "--out", tmp_path / "x")
    assert code != 0 and "several adapters of one base go --to vllm" in err
    assert not (tmp_path / "x").exists() and hashes(adapter) == before


def test_q4_k_m_without_llama_cpp_says_what_to_install(tmp_path, adapter, monkeypatch):
    from inhouse.adapters.export import quantize

    monkeypatch.setattr(quantize, "llama_cpp_module", lambda: None)
    code, _, err = run_cli("export", "m", "--to", "gguf", "--quant", "q4_k_m", "--out", tmp_path / "q")
    assert code == 1 and "llama-cpp-python" in err and not (tmp_path / "q").exists()


def test_a_failed_export_leaves_no_folder(tmp_path, adapter, monkeypatch):
    from inhouse.adapters.export import gguf_model
    from inhouse.errors import InhouseError

    def broken(*args, **kwargs):
        raise InhouseError("simulated failure half-way")

    monkeypatch.setattr(gguf_model, "write_model", broken)
    code, _, err = run_cli("export", "m", "--to", "gguf", "--out", tmp_path / "g")
    assert code == 1 and "simulated failure" in err
    assert not (tmp_path / "g").exists() and not list(tmp_path.glob(".g*"))
    assert "exports" not in registry.lineage(adapter) or registry.lineage(adapter).exports == []


@pytest.mark.parametrize("config", [{"modules_to_save": ["lm_head"]}, {"target_modules": ["q_proj", "embed_tokens"]}],
                         ids=["trained-head", "lora-on-embeddings"])
def test_adapters_that_train_the_head_or_embeddings_merge_exactly_and_skip_the_gguf_lora(tmp_path, tiny_dir, home,
                                                                                       config):
    """The merged folder and the merged GGUF carry such adapters; the adapter-only GGUF LoRA is left out
    with the reason in the notes, rather than written wrong."""
    import torch
    from peft import LoraConfig, get_peft_model

    from inhouse.adapters.export.config import ExportConfig
    from inhouse.adapters.export.run import export
    from inhouse.model.load import load_model

    torch.manual_seed(0)
    settings = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False} | config
    peft = get_peft_model(load_model(str(tiny_dir), torch.float32), LoraConfig(**settings)).eval()
    if "modules_to_save" in config:
        with torch.no_grad():
            peft.base_model.model.lm_head.modules_to_save["default"].weight.mul_(1.5)
    peft.save_pretrained(tmp_path / "adapter")
    ids = torch.arange(30, 70)[None]
    with torch.no_grad():
        want = peft(ids).logits
    merged = export([str(tmp_path / "adapter")], ExportConfig(to="merged", out=tmp_path / "merged"))
    model = AutoModelForCausalLM.from_pretrained(merged.path, dtype=torch.float32)
    with torch.no_grad():
        got = model(ids).logits
        assert ((got - want).norm() / want.norm()).item() < 2e-2  # merged in bf16: rounding only
    result = export([str(tmp_path / "adapter")], ExportConfig(to="gguf", quant="f32", out=tmp_path / "g"))
    assert not list(result.path.glob("*-lora.gguf")) and any("no GGUF LoRA" in n for n in result.notes)
    llama_cpp()
    got = gguf_logits(next(result.path.glob("*-f32.gguf")), ids[0].tolist())
    assert abs(got - want[0].numpy()).max() < 1e-3


def test_ollama_folder_runs_from_its_own_gguf_or_base_plus_adapter(tmp_path, adapter):
    from inhouse.adapters.export.ollama import parse_modelfile

    exported(tmp_path, "--to", "ollama", "--quant", "f16", "--out", tmp_path / "o")
    parsed = parse_modelfile((tmp_path / "o" / "Modelfile").read_text())
    assert (tmp_path / "o" / "m-f16.gguf").is_file() and "ollama create m -f Modelfile" in (tmp_path / "o" / "OLLAMA.md").read_text()
    assert parsed["from"] == "./m-f16.gguf" and parsed["adapter"] == []
    assert parsed["parameters"]["stop"] == ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"]
    assert parsed["template"].startswith("{{ if .System }}<|im_start|>system")
    exported(tmp_path, "--to", "ollama", "--quant", "q8_0", "--with-base", "--system", "Be brief.", "--out", tmp_path / "b")
    parsed = parse_modelfile((tmp_path / "b" / "Modelfile").read_text())
    assert (parsed["from"], parsed["adapter"], parsed["system"]) == ("./base-q8_0.gguf", ["./m-lora.gguf"], "Be brief.")
    assert [e["target"] for e in registry.lineage(adapter).exports] == ["ollama", "ollama"]


def test_vllm_serves_several_adapters_of_one_base(tmp_path, adapter, tiny_dir):
    data = write_jsonl(tmp_path / "d2.jsonl", [chat("Hi?", "Hello.")])
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_fraction=0, max_steps=2,
                              lora_r=16, output_name="m2")
    second = train(recipe, events=Events()).path
    code, out, err = run_cli("export", "m", "m2", "--to", "vllm", "--out", tmp_path / "v")
    assert code == 0, err
    command = (tmp_path / "v" / "vllm.sh").read_text()
    assert "--enable-lora" in command and '"name": "m"' in command and '"name": "m2"' in command
    assert "--max-lora-rank 16" in command and "--max-loras 2" in command and str(tiny_dir) in command
    assert "sglang.launch_server" in (tmp_path / "v" / "sglang.sh").read_text()
    assert registry.lineage(adapter).exports[0]["target"] == registry.lineage(second).exports[0]["target"] == "vllm"
