"""Jinja chat template -> Ollama TEMPLATE: Go's own text/template must render what Jinja renders."""

import pytest
from adapters.export.chat_templates import FAMILIES, LLAMA3
from transformers.utils.chat_template_utils import render_jinja_template

from inhouse.adapters.export.gotemplate import TemplateTranslationError, go_string, ollama_view, render_layout, \
    translate
from inhouse.model import template, tiny

SYSTEM = [{"role": "system", "content": "You are terse.\nNever apologise."}]
TURNS = [("Capital of France?", "Paris."), ("And of Italy?", "Rome.\nIt is old."), ("Spain?", "Madrid.")]
UNICODE = [("Grüße aus Köln — ça va? 世界 🌍", "Très bien ✓ ¡olé!"), ("Ω≈ç√∫ ‘quotes’ “more”", "नमस्ते")]
BRACES = [("{{ .System }} {{ range .Messages }}{{ end }} and {% raw %}",
           '}}{{ "x" }} {{- $x := 1 }}'),
          ('"""triple""" \\ back\\slash', "{#- comment #}")]


def chat(pairs, last_user="Thanks, one more?"):
    messages = [m for q, a in pairs for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    return messages + ([{"role": "user", "content": last_user}] if last_user else [])


CHATS = {"three-turns": chat(TURNS), "one-turn": chat([]), "unicode": chat(UNICODE, "Ünïcödé?"),
         "braces": chat(BRACES, "{{ .Prompt }}?")}


def jinja(name, messages, prefill=False):
    """What transformers renders (inhouse's own `template.render` for the builtin:tiny templates)."""
    chat_template, specials = FAMILIES[name]
    if name in ("chatml", "llama3") and not prefill:
        return template.render(tiny.build_tokenizer(chat_template), messages, generation_prompt=True)
    out, _ = render_jinja_template(conversations=[messages], chat_template=chat_template,
                                   add_generation_prompt=not prefill, continue_final_message=prefill, **specials)
    return out[0].removeprefix(specials.get("bos_token", ""))


def go_template(name):
    chat_template, specials = FAMILIES[name]
    return translate(chat_template, **specials)


@pytest.mark.parametrize("system", [True, False], ids=["system", "no-system"])
@pytest.mark.parametrize("conversation", sorted(CHATS))
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_go_renders_what_jinja_renders(go_render, name, conversation, system):
    translation = go_template(name)
    messages = (SYSTEM if system else []) + CHATS[conversation]
    if system and not translation.supports_system:
        pytest.skip(f"{name} has no system role")
    expected = jinja(name, messages)
    assert go_render(translation.template, messages) == expected
    assert render_layout(translation.layout, *ollama_view(messages)) == expected


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_final_assistant_message_is_continued_like_jinja_continue_final_message(go_render, name):
    messages = SYSTEM * go_template(name).supports_system + chat(TURNS[:2], last_user=None)
    assert go_render(go_template(name).template, messages) == jinja(name, messages, prefill=True)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_modelfile_system_prompt_reaches_the_template_like_a_system_message(go_render, name):
    if not go_template(name).supports_system:
        pytest.skip(f"{name} has no system role")
    messages = chat(TURNS)
    rendered = go_render(go_template(name).template, messages, system=SYSTEM[0]["content"])
    assert rendered == jinja(name, SYSTEM + messages)


def test_a_template_without_a_system_role_drops_system_messages_instead_of_failing(go_render):
    translation = go_template("mistral-v0.1")
    assert not translation.supports_system and "system prompt: nowhere" in translation.notes[0]
    assert go_render(translation.template, SYSTEM + chat(TURNS)) == jinja("mistral-v0.1", chat(TURNS))


def test_runs_of_one_role_are_merged_as_ollama_merges_them(go_render):
    split = [{"role": "user", "content": "Part one."}, {"role": "user", "content": "Part two."}]
    joined = [{"role": "user", "content": "Part one.\n\nPart two."}]
    assert go_render(go_template("qwen2.5").template, split) == jinja("qwen2.5", joined)


def test_the_bos_the_engine_adds_is_left_out_unless_the_engine_adds_none():
    stripped = translate(LLAMA3, bos_token="<|begin_of_text|>").template
    kept = translate(LLAMA3, bos_token="<|begin_of_text|>", engine_adds_bos=False).template
    assert "<|begin_of_text|>" not in stripped and kept.count("<|begin_of_text|>") == 2  # with and without system


def test_what_each_family_does_with_the_system_prompt():
    where = {name: go_template(name).notes[0].removeprefix("system prompt: ") for name in FAMILIES}
    assert where == {"chatml": "in a turn of its own", "llama3": "in a turn of its own",
                     "qwen2.5": "in a turn of its own", "gemma": "folded into the first user message",
                     "llama2": "folded into the first user message", "mistral": "folded into the last user message",
                     "mistral-v0.1": "nowhere (the template has no system role)"}
    assert go_template("qwen2.5").layout.head.count("You are Qwen") == 1  # the default system prompt is kept


ODD = 'tab\there "quotes" """triple""" back\\slash {{ braces }} nbsp\u00a0 zwsp\u200b cr\r emoji 🌍 end{'


def test_literal_text_survives_go_parsing_and_the_modelfile(go_render):
    """Literal pieces Go or Ollama's Modelfile parser would mangle are written as Go strings."""
    odd = ODD.replace("{{", "{ {").replace("\\", "\\\\")  # as a Jinja string literal: no delimiters, escapes
    chat_template = ("{% for m in messages %}{{ '<|u|>' + m['content'] + '" + odd + "' }}"
                     "{% endfor %}{% if add_generation_prompt %}{{ '<|a|>' }}{% endif %}")
    translation = translate(chat_template)
    assert '"""' not in translation.template
    assert all(c.isprintable() or c in "\n\t" for c in translation.template)
    messages = chat(TURNS[:1])
    expected, _ = render_jinja_template(conversations=[messages], chat_template=chat_template,
                                        add_generation_prompt=True)
    assert go_render(translation.template, messages) == expected[0]
    assert go_render("{{ " + go_string(ODD) + " }}", []) == ODD


REFUSED = {
    "branches on content": "{% for m in messages %}{{ '<' + m['role'] + '>' }}{% if '\\n' in m['content'] %}[lines]"
                           "{% endif %}{{ m['content'] + '</s>' }}{% endfor %}"
                           "{% if add_generation_prompt %}<assistant>{% endif %}",
    "rewrites history": "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}[old]{% endif %}"
                        "{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}",
    "rewrites content": "{% for m in messages %}{{ '<' + m['role'] + '>' + (m['content'] | upper) + '</s>' }}"
                         "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
    "numbered turns": "{% for m in messages %}{{ loop.index ~ '. ' + m['role'] + ': ' + m['content'] + '\n' }}"
                      "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}",
    "content twice": "{% for m in messages %}{{ m['content'] + m['content'] }}{% endfor %}",
    "system at the end": "{% for m in messages if m['role'] != 'system' %}{{ m['role'] + ': ' + m['content'] + '\n' }}"
                         "{% endfor %}{% if messages[0]['role'] == 'system' %}{{ 'rules: ' + messages[0]['content'] }}"
                         "{% endif %}",
    "no user turns": "{{ raise_exception('nope') }}",
    "eos without eos_token": "{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}",
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_untranslatable_templates_are_refused_in_one_line(case):
    with pytest.raises(TemplateTranslationError) as caught:
        translate(REFUSED[case])
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400
