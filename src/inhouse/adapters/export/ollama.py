"""An Ollama Modelfile for an exported model: FROM the GGUF (or a base), ADAPTER, TEMPLATE, stops.

The TEMPLATE is the model's own chat template translated to Go (`gotemplate`), so Ollama sends
the model exactly the prompt it was trained on. Values are quoted the way Ollama's Modelfile
parser reads them: it has no escapes, so a value holding `\"\"\"` or characters the parser drops
(non-printable ones) cannot be written and is refused instead of being silently changed.
`parse_modelfile` reads the documented format back, for tests and for checking a file by hand.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from inhouse import atomic
from inhouse.adapters.export.gotemplate import translate
from inhouse.errors import InvalidInputError

# The documented PARAMETER names and value types (docs/modelfile: "Valid Parameters and Values").
PARAMETERS: dict[str, type] = {"num_ctx": int, "repeat_last_n": int, "repeat_penalty": float, "temperature": float,
                               "seed": int, "stop": str, "num_predict": int, "draft_num_predict": int, "top_k": int,
                               "top_p": float, "min_p": float}
INSTRUCTIONS = ("from", "parameter", "template", "system", "adapter", "license", "message", "requires")
MESSAGE_ROLES = ("system", "user", "assistant")
KIND_NAMES = {int: "an integer", float: "a number", str: "text"}
MODELFILE, GUIDE = "Modelfile", "OLLAMA.md"


class ModelfileError(InvalidInputError):
    """A value cannot be written to, or read from, a Modelfile as given."""


def quote(value: str, what: str) -> str:
    """`"value"`, or `\"\"\"value\"\"\"` when it spans lines or holds a quote."""
    if '"""' in value:
        raise ModelfileError(f'{what} holds """, which ends a Modelfile value early; remove it')
    odd = next((c for c in value if not (c.isprintable() or c in "\t\n\r")), None)
    if odd is not None:
        raise ModelfileError(f"{what} holds the character U+{ord(odd):04X}, which Ollama's Modelfile parser drops")
    if "\n" in value or "\r" in value or '"' in value:
        return f'"""{value}"""'
    return f'"{value}"'


def bare_or_quoted(value: str, what: str) -> str:
    """A FROM/ADAPTER value as is when Ollama reads it back unchanged, else quoted."""
    plain = value == value.strip() and not value.startswith('"') and value.isprintable()
    return value if plain and value else quote(value, what)


def _parameter_lines(stop_tokens: list[str], parameters: dict | None) -> list[str]:
    lines = []
    for token in dict.fromkeys(stop_tokens):
        if not token:
            raise ModelfileError("an empty stop token would stop every answer at once; leave it out")
        lines.append(f"PARAMETER stop {quote(token, 'stop token ' + repr(token))}")
    for name, value in (parameters or {}).items():
        kind = PARAMETERS.get(name)
        if kind is None or name == "stop":
            hint = "pass stop tokens as stop_tokens" if name == "stop" else f"use one of {', '.join(PARAMETERS)}"
            raise ModelfileError(f"Ollama has no PARAMETER {name!r} to set here; {hint}")
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
            raise ModelfileError(f"PARAMETER {name} takes {KIND_NAMES[kind]}, not {value!r}")
        lines.append(f"PARAMETER {name} {value}")
    return lines


def _source(folder: Path, file: str, what: str) -> str:
    """A GGUF path as FROM/ADAPTER give it: relative to the Modelfile's folder when inside it."""
    path = Path(file) if Path(file).is_absolute() else folder / file
    if not path.is_file():
        raise ModelfileError(f"{what}: no file at {path}")
    inside = os.path.relpath(path.resolve(), folder.resolve())
    return "./" + Path(inside).as_posix() if not inside.startswith("..") else str(path.resolve())


def modelfile_text(folder: Path, *, gguf_model: str | None, base_ref: str | None, adapter_gguf: str | None,
                   template: str, stop_tokens: list[str], system: str | None, parameters: dict | None = None) -> str:
    """The Modelfile's text (checked, not yet written)."""
    if (gguf_model is None) == (base_ref is None):
        raise ModelfileError("FROM needs exactly one of a GGUF model file and a base model")
    source = _source(folder, gguf_model, "FROM") if gguf_model else base_ref
    lines = [f"FROM {bare_or_quoted(source, 'FROM')}"]
    if adapter_gguf:
        lines.append(f"ADAPTER {bare_or_quoted(_source(folder, adapter_gguf, 'ADAPTER'), 'ADAPTER')}")
    lines.append(f"TEMPLATE {quote(template, 'TEMPLATE')}")
    lines += _parameter_lines(stop_tokens, parameters)
    if system:
        lines.append(f"SYSTEM {quote(system, 'SYSTEM')}")
    return "\n".join(lines) + "\n"


def model_name(folder: Path) -> str:
    """A name `ollama create` accepts, from the folder's name (its final one when it is a staging folder)."""
    return re.sub(r"[^a-z0-9_.-]+", "-", atomic.final_name(folder).lower()).strip("-._") or "model"


def _guide(name: str, notes: tuple[str, ...]) -> str:
    return (f"# Run with Ollama\n\nIn this folder:\n\n    ollama create {name} -f {MODELFILE}\n    ollama run {name}\n\n"
            "The Modelfile's TEMPLATE is the model's chat template translated to Ollama's Go template:\n\n"
            + "".join(f"- {note}\n" for note in notes))


def write_ollama(folder: Path, *, gguf_model: str | None, base_ref: str | None, adapter_gguf: str | None,
                 chat_template: str, stop_tokens: list[str], bos_token: str | None, system: str | None,
                 parameters: dict | None = None, eos_token: str | None = None, engine_adds_bos: bool = True,
                 name: str | None = None) -> Path:
    """Write `Modelfile` and `OLLAMA.md` (how to create and run it) into `folder`; returns the Modelfile.

    `gguf_model`/`adapter_gguf` are paths (relative to `folder` or absolute); `base_ref` is an Ollama
    model name or a model folder, used when there is no GGUF model. Nothing is written when any part
    is refused."""
    folder = Path(folder)
    translation = translate(chat_template, bos_token=bos_token, eos_token=eos_token, engine_adds_bos=engine_adds_bos)
    if system and not translation.supports_system:
        raise ModelfileError("the chat template has no place for a system prompt, so SYSTEM would be dropped; "
                             "leave the system prompt out")
    text = modelfile_text(folder, gguf_model=gguf_model, base_ref=base_ref, adapter_gguf=adapter_gguf,
                          template=translation.template, stop_tokens=stop_tokens, system=system, parameters=parameters)
    parse_modelfile(text)  # what we write must read back under the documented format
    atomic.write_text(folder / MODELFILE, text)
    atomic.write_text(folder / GUIDE, _guide(name or model_name(folder), translation.notes))
    return folder / MODELFILE


# --- reading a Modelfile back (the documented format) -------------------------------------------

_BLANK = re.compile(r"(?:[ \t\r\n]+|#[^\r\n]*)*")
_CLOSE = {'"""': re.compile(r'"""[ \t]*(?:\r\n|\r|\n|$)'), '"': re.compile(r'"[ \t]*(?:\r\n|\r|\n|$)')}
_LINE_END = re.compile(r"\r\n|\r|\n|$")


def _word(text: str, pos: int, pattern: str, where: str) -> tuple[str, int]:
    """A word and the spaces after it (Ollama requires at least one)."""
    found = re.compile(pattern + r"(?=[ \t])[ \t]+").match(text, pos)
    if not found:
        raise ModelfileError(f"{where}: expected {pattern} and a space, found {text[pos:pos + 20]!r}")
    return found.group(0).strip(), found.end()


def _value(text: str, pos: int, where: str) -> tuple[str, int]:
    """The value at `pos`: \"\"\"...\"\"\" or "..." (may span lines) or the rest of the line; and where it ends."""
    for opening in ('"""', '"'):
        if text.startswith(opening, pos):
            end = _CLOSE[opening].search(text, pos + len(opening))
            if end is None:
                raise ModelfileError(f"{where}: a {opening} value is never closed")
            return text[pos + len(opening):end.start()], end.end()
    end = _LINE_END.search(text, pos)
    return text[pos:end.start()].strip(), end.end()


def _typed(name: str, value: str, where: str) -> Any:
    kind = PARAMETERS.get(name)
    if kind is None:
        raise ModelfileError(f"{where}: PARAMETER {name!r} is not one of {', '.join(PARAMETERS)}")
    try:
        return kind(value)
    except ValueError:
        raise ModelfileError(f"{where}: PARAMETER {name} takes {KIND_NAMES[kind]}, not {value!r}") from None


def _store(found: dict[str, Any], instruction: str, key: str, value: str, where: str) -> None:
    if instruction == "parameter":
        found["parameters"].setdefault(key, []).append(_typed(key, value, where))
    elif instruction == "message":
        if key not in MESSAGE_ROLES:
            raise ModelfileError(f"{where}: MESSAGE role {key!r} is not one of {', '.join(MESSAGE_ROLES)}")
        found["messages"].append({"role": key, "content": value})
    elif instruction in ("adapter", "license"):
        found[instruction].append(value)
    elif found[instruction] is not None:
        raise ModelfileError(f"{where}: a second {instruction.upper()}")
    else:
        found[instruction] = value


def parse_modelfile(text: str) -> dict[str, Any]:
    """Instructions by name (case-insensitive): from, template, system, requires (str or None),
    adapter, license (lists), parameters ({name: [typed values]}), messages ([{role, content}])."""
    found: dict[str, Any] = {"from": None, "template": None, "system": None, "requires": None, "adapter": [],
                             "license": [], "parameters": {}, "messages": []}
    pos = _BLANK.match(text, 0).end()
    while pos < len(text):
        where = f"Modelfile:{text.count(chr(10), 0, pos) + 1}"
        word, pos = _word(text, pos, r"[A-Za-z]+", where)
        if word.lower() not in INSTRUCTIONS:
            raise ModelfileError(f"{where}: unknown instruction {word!r} (one of {', '.join(INSTRUCTIONS)})")
        key = None
        if word.lower() in ("parameter", "message"):
            key, pos = _word(text, pos, r"[A-Za-z0-9_]+", where)
        value, pos = _value(text, pos, where)
        _store(found, word.lower(), key, value, where)
        pos = _BLANK.match(text, pos).end()
    if found["from"] is None:
        raise ModelfileError("Modelfile: no FROM instruction (it is required)")
    return found
