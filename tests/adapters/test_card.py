"""The README.md of every library entry is a model card written from its lineage."""

import json
import re
import shlex
from pathlib import Path

import yaml
from helpers import chat, write_jsonl
from huggingface_hub import ModelCard
from markdown_it import MarkdownIt

from inhouse import recipe as recipe_mod
from inhouse.adapters import registry
from inhouse.adapters.card import render, write_card
from inhouse.adapters.lineage import sha256_file
from inhouse.events import Events
from inhouse.train.sft import train

FACTS = [("Favourite colour?", "Blue."), ("Meaning of life?", "Forty-two."), ("Best day?", "Tuesday.")]
TEMPLATE = "[More Information Needed]"


def html(card) -> str:
    return MarkdownIt("commonmark").enable("table").render(card.text)


def yaml_blocks(text: str) -> list:
    return [yaml.safe_load(b) for b in re.findall(r"^```yaml\n(.*?)^```$", text, re.S | re.M)]


def trained(tmp_path, tiny_dir, **kw):
    data = write_jsonl(tmp_path / "facts.jsonl", [chat(q, a) for q, a in FACTS])
    val = write_jsonl(tmp_path / "val.jsonl", [chat(q, a) for q, a in FACTS[:2]])
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_file=data, validation_file=val, max_steps=2, **kw)
    return train(recipe, events=Events()).path, data


def test_lora_card_replaces_peft_template_with_lineage(tmp_path, tiny_dir, home):
    path, data = trained(tmp_path, tiny_dir, output_name="carded")
    info, card = registry.lineage(path).dump(), ModelCard.load(path / "README.md")
    assert TEMPLATE not in card.text
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
    assert "lora" in card.data.tags and card.data.base_model is None  # a local folder is no Hub id
    assert str(tiny_dir) in card.text and sha256_file(data) in card.text and str(data.resolve()) in card.text
    assert "3 train, 2 validation" in card.text
    assert f"{info['metrics']['validation_loss_before']:.6g}" in card.text
    assert f"{info['metrics']['validation_loss']:.6g}" in card.text
    assert info["versions"]["peft"] in card.text and info["finished_at"] in card.text
    assert yaml_blocks(card.text)[0] == info["recipe"]
    assert "inhouse chat carded" in card.text and f"PeftModel.from_pretrained(base, {str(path)!r})" in card.text


def test_full_fine_tune_card_loads_with_transformers(tmp_path, tiny_dir, home):
    path, _ = trained(tmp_path, tiny_dir, method="full", output_name="full")
    card = ModelCard.load(path / "README.md")
    assert card.data.library_name == "transformers" and "full" in card.data.tags
    assert f"AutoModelForCausalLM.from_pretrained({str(path)!r})" in card.text and "PeftModel" not in card.text


def test_checkpoint_published_by_a_job_has_a_card(tmp_path, tiny_dir, home):
    from inhouse.jobs.run import publish_checkpoint

    path, _ = trained(tmp_path, tiny_dir, output_name="src")
    job = {"id": "ftjob-1", "base": str(tiny_dir), "training_file": "file-9"}
    publish_checkpoint(str(path), "job-step-2", job, 2, {"step": 2, "train_loss": 1.5})
    card = ModelCard.load(registry.library() / "job-step-2" / "README.md")
    assert card.data.library_name == "peft" and "checkpoint" in card.data.tags
    assert "step 2" in card.text and "`ftjob-1`" in card.text and "| `train_loss` | 1.5 |" in card.text


def test_hub_base_model_and_its_license_reach_the_metadata(tmp_path):
    card = render({"name": "a", "kind": "lora", "base_model": "Qwen/Qwen2.5-0.5B", "license": "apache-2.0"},
                  Path("/x/a"), adapter=True)
    assert card.data.base_model == "Qwen/Qwen2.5-0.5B" and card.data.license == "apache-2.0"
    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: mit\n---\n# base\n")
    assert render({"name": "a", "base_model": str(base)}, Path("/x/a"), adapter=True).data.license == "mit"


def test_user_strings_cannot_break_the_markdown():
    name = "evil`|<b>bold</b>\nline"
    card = render({"name": name, "kind": "lora", "base_model": "b",
                   "data": [{"path": "/d/a|b<i>.jsonl", "sha256": "00"}], "metrics": {"loss|x": 1.0}},
                  Path("/tmp/it's \"here\""), adapter=True)
    page = html(card)
    assert "<b>" not in page and "<i>" not in page
    assert "<code>/d/a|b&lt;i&gt;.jsonl</code></td>" in page  # the pipe stayed inside its cell
    assert "<td><code>loss|x</code></td>\n<td>1</td>" in page
    assert ModelCard(card.content).data.tags == ["inhouse", "lora"]
    assert f"inhouse chat {shlex.quote(name)}\n" in card.text
    assert "from_pretrained('/tmp/it\\'s \"here\"')" in card.text


def test_card_tolerates_missing_keys_and_shows_unknown_ones():
    assert "# `bare`" in render({"name": "bare"}, Path("/x/bare"), adapter=False).text
    card = render({"name": "n", "best_step": 40, "early_stopped": True,
                   "data": [{"path": "t.jsonl", "sha256": "aa", "split": "train", "examples": 12}],
                   "speed": {"packing": True}}, Path("/x/n"), adapter=True)
    page = html(card)
    assert "<td><code>best_step</code></td>\n<td>40</td>" in page
    assert "<td><code>early_stopped</code></td>\n<td><code>True</code></td>" in page
    assert "<th>split</th>" in page and "<td>12</td>" in page
    assert yaml_blocks(card.text) == [{"speed": {"packing": True}}]  # under "Also recorded"


def test_merged_model_card_names_its_adapter(tmp_path, tiny_dir, home):
    import torch

    from inhouse.adapters.merge import merge

    path, data = trained(tmp_path, tiny_dir, output_name="m")
    out = merge("m", dtype=torch.float32)
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and "merged" in card.data.tags
    assert "adapter `m` merged" in card.text and sha256_file(data) in card.text
    assert json.loads((out / "inhouse.json").read_text())["merged_from"] == "m"


def test_a_file_name_that_is_not_utf8_is_written_escaped(tmp_path):
    odd = "/data/caf\udce9.jsonl"  # how Python spells the byte 0xe9 of a Latin-1 file name
    write_card(tmp_path, {"name": "n", "data": [{"path": odd, "sha256": "aa"}], "recipe": {"train_file": odd}},
               tmp_path / "n")
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "caf\\udce9.jsonl" in text and ModelCard.load(tmp_path / "README.md").data.library_name == "transformers"
