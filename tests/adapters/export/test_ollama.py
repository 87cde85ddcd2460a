"""The Modelfile: documented format, values that read back unchanged, a TEMPLATE Go renders like Jinja."""

import pytest
from adapters.export.chat_templates import FAMILIES
from transformers.utils.chat_template_utils import render_jinja_template

from inhouse import atomic
from inhouse.adapters.export.gotemplate import TemplateTranslationError, to_go_template
from inhouse.adapters.export.ollama import ModelfileError, parse_modelfile, quote, write_ollama

SYSTEM = "You answer in one sentence.\nYou never guess."
CHAT = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Italy?"}]


def export(folder, name="gemma", **changes):
    chat_template, specials = FAMILIES[name]
    (folder / "model.gguf").write_bytes(b"GGUF")
    (folder / "adapter.gguf").write_bytes(b"GGUF")
    options = dict(gguf_model="model.gguf", base_ref=None, adapter_gguf=None, chat_template=chat_template,
                   stop_tokens=["<end_of_turn>", "<eos>"], bos_token=specials.get("bos_token"),
                   eos_token=specials.get("eos_token"), system=SYSTEM, parameters={"temperature": 0.7, "num_ctx": 4096})
    return write_ollama(folder, **(options | changes))


def test_the_modelfile_holds_every_instruction_in_the_documented_format(tmp_path):
    path = export(tmp_path, adapter_gguf=str(tmp_path / "adapter.gguf"))
    assert path == tmp_path / "Modelfile"
    found = parse_modelfile(path.read_text(encoding="utf-8"))
    chat_template, specials = FAMILIES["gemma"]
    assert found["from"] == "./model.gguf" and found["adapter"] == ["./adapter.gguf"]
    assert found["template"] == to_go_template(chat_template, **specials)
    assert found["parameters"] == {"stop": ["<end_of_turn>", "<eos>"], "temperature": [0.7], "num_ctx": [4096]}
    assert found["system"] == SYSTEM
    guide = (tmp_path / "OLLAMA.md").read_text(encoding="utf-8")
    assert f"ollama create {tmp_path.name.lower()} -f Modelfile" in guide and "ollama run " in guide
    assert "folded into the first user message" in guide


def test_the_model_is_named_after_the_export_folder_even_while_it_is_being_staged(tmp_path):
    out = atomic.write_folder(tmp_path / "Support Bot.v2", export)
    assert "ollama create support-bot.v2 -f Modelfile" in (out / "OLLAMA.md").read_text(encoding="utf-8")


def test_from_a_base_model_name_when_there_is_no_gguf(tmp_path):
    found = parse_modelfile(export(tmp_path, gguf_model=None, base_ref="gemma3:1b", system=None).read_text())
    assert found["from"] == "gemma3:1b" and found["system"] is None and found["adapter"] == []


@pytest.mark.parametrize("name", ["gemma", "qwen2.5", "mistral", "llama2"])
def test_the_written_template_and_system_render_in_go_as_jinja_renders_them(tmp_path, go_render, name):
    chat_template, specials = FAMILIES[name]
    found = parse_modelfile(export(tmp_path, name).read_text(encoding="utf-8"))
    expected, _ = render_jinja_template(conversations=[[{"role": "system", "content": SYSTEM}, *CHAT]],
                                        chat_template=chat_template, add_generation_prompt=True, **specials)
    assert go_render(found["template"], CHAT, system=found["system"]) == \
        expected[0].removeprefix(specials.get("bos_token", ""))


TRICKY = ['"quoted" start', 'ends with a quote"', '"', '""', "  spaces at the edges  ", "two\nlines",
          'mid "quote" and """'[:-3], "tab\there", "unicode ✓ 世界", "{{ .System }}"]


@pytest.mark.parametrize("value", TRICKY)
def test_quoted_values_read_back_unchanged(value):
    found = parse_modelfile(f"FROM x\nSYSTEM {quote(value, 'SYSTEM')}\nPARAMETER stop {quote(value, 'stop')}\n")
    assert found["system"] == value and found["parameters"]["stop"] == [value]


@pytest.mark.parametrize("change, words", [
    ({"chat_template": FAMILIES["mistral-v0.1"][0], "bos_token": "<s>", "eos_token": "</s>"}, "no place for a system"),
    ({"base_ref": "gemma3"}, "exactly one"),
    ({"gguf_model": None}, "exactly one"),
    ({"gguf_model": "missing.gguf"}, "no file at"),
    ({"adapter_gguf": "missing-adapter.gguf"}, "no file at"),
    ({"parameters": {"temprature": 0.7}}, "no PARAMETER 'temprature'"),
    ({"parameters": {"num_ctx": "4096"}}, "takes an integer"),
    ({"parameters": {"top_k": True}}, "takes an integer"),
    ({"parameters": {"stop": "x"}}, "stop_tokens"),
    ({"system": 'say """hi"""'}, '"""'),
    ({"system": "no\u00a0break"}, r"U\+00A0"),
    ({"stop_tokens": [""]}, "empty stop token"),
])
def test_what_cannot_be_written_is_refused_before_anything_is_written(tmp_path, change, words):
    with pytest.raises(ModelfileError, match=words) as caught:
        export(tmp_path, **change)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "Modelfile").exists() and not (tmp_path / "OLLAMA.md").exists()


def test_an_untranslatable_chat_template_is_refused(tmp_path):
    with pytest.raises(TemplateTranslationError):
        export(tmp_path, chat_template="{% for m in messages %}{{ m['content'] | upper }}{% endfor %}")
    assert not (tmp_path / "Modelfile").exists()


def test_the_parser_follows_the_documented_format():
    text = ('# a comment\nfrom llama3.2\n\nparameter temperature 1\nPARAMETER stop "AI assistant:"\n'
            'Template """{{ .Prompt }}\n"""\nLICENSE """\nMIT\n"""\nMESSAGE user Is Toronto in Canada?\n'
            'MESSAGE assistant yes\nREQUIRES 0.14.0\n')
    found = parse_modelfile(text)
    assert found["from"] == "llama3.2" and found["template"] == "{{ .Prompt }}\n" and found["license"] == ["\nMIT\n"]
    assert found["parameters"] == {"temperature": [1.0], "stop": ["AI assistant:"]}
    assert found["messages"] == [{"role": "user", "content": "Is Toronto in Canada?"},
                                 {"role": "assistant", "content": "yes"}]
    assert found["requires"] == "0.14.0"


@pytest.mark.parametrize("text, words", [
    ("PARAMETER temperature 1\n", "no FROM"),
    ("FROM x\nTEMPLTE y\n", "unknown instruction 'TEMPLTE'"),
    ("FROM x\nPARAMETER num_gpus 1\n", "'num_gpus' is not one of"),
    ("FROM x\nPARAMETER num_ctx lots\n", "takes an integer"),
    ("FROM x\nMESSAGE tool hi\n", "role 'tool'"),
    ('FROM x\nSYSTEM """never closed\n', "never closed"),
    ("FROM x\nTEMPLATE a\nTEMPLATE b\n", "a second TEMPLATE"),
    ("FROM\n", "expected"),
])
def test_the_parser_refuses_what_ollama_would_not_accept(text, words):
    with pytest.raises(ModelfileError, match=words):
        parse_modelfile(text)
