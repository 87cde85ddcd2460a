"""Turn pydantic fields into Typer options, so each recipe field is defined once.

A command decorated with `@model_options(Recipe)` gets one `--field-name`
flag per field, with the field's description and default as help. Flags
default to None ("not given") so YAML values are only overridden by flags
the user actually typed; the collected values arrive as `overrides`.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from inhouse.listsyntax import split_list


def _cli_type(annotation: Any) -> tuple[type, str]:
    """The flag's Python type and a hint for the help text (choices, list syntax)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _cli_type(args[0])
    if typing.get_origin(annotation) is Literal:
        return str, " One of: " + ", ".join(map(str, typing.get_args(annotation))) + "."
    if typing.get_origin(annotation) is list:
        return str, " Comma-separated (\\, for a comma)."
    if annotation in (int, float, str, bool, Path):
        return annotation, ""
    return str, ""


def _default_text(field: FieldInfo) -> str:
    default = field.default
    if isinstance(default, list):
        default = ",".join(map(str, default)) or None
    return "none" if default is None else str(default)


def _limit_text(field: FieldInfo) -> str:
    """The field's upper bound (`le=`/`lt=`) as help text, so `--help` documents the limit validation applies."""
    for rule in field.metadata:
        for name, word in (("le", "at most"), ("lt", "below")):
            bound = getattr(rule, name, None)
            if isinstance(bound, (int, float)) and not isinstance(bound, bool):
                return f" {word.capitalize()} {bound:,}."
    return ""


def _option(name: str, field: FieldInfo, group: FieldInfo | None = None) -> inspect.Parameter:
    """`group`: the optional config this required field belongs to (eval's retrieval settings for --kb): the
    flag is then optional, and giving it turns the group on, as the group's description says."""
    kind, hint = _cli_type(field.annotation)
    hint = _limit_text(field) + hint
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = "--" + str(extra.get("flag") or name.replace("_", "-"))
    decls = (f"{flag}/--no-{flag[2:]}",) if kind is bool else (flag, *([extra["short"]] if "short" in extra else []))
    if group is not None and field.is_required():
        hint, when = f"{hint} {group.description or ''}", "(default: none)"
    else:
        when = "(required)" if field.is_required() else f"(default: {_default_text(field)})"
    help_text = f"{field.description or ''}{hint} {when}"
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
        default=typer.Option(None, *decls, help=help_text, show_default=False, rich_help_panel="Settings"),
    )


def _flags(model: type[BaseModel], exclude: tuple[str, ...], at: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], FieldInfo]]:
    """(path, field) of every flag: a field that is itself a config contributes its own fields."""
    found = []
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        sub = _submodel(info.annotation)
        found += _flags(sub, exclude, (*at, name)) if sub else [((*at, name), info)]
    return found


def _optional_group(model: type[BaseModel], path: tuple[str, ...]) -> FieldInfo | None:
    """The outermost config around the field at `path` that may be left out, if any."""
    for name in path[:-1]:
        info = model.model_fields[name]
        if not info.is_required():
            return info
        model = _submodel(info.annotation) or model
    return None


def _submodel(annotation: Any) -> type[BaseModel] | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)


def _value(field: FieldInfo, value: Any) -> Any:
    """A list-valued field's flag is comma-separated text: `--pii-kinds EMAIL,PHONE`."""
    if isinstance(value, str) and _is_list(field.annotation):
        return split_list(value)
    return value


def _is_list(annotation: Any) -> bool:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _is_list(args[0])
    return typing.get_origin(annotation) is list


def nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    """{("generation", "seed"): 1} -> {"generation": {"seed": 1}}; values None (flag not given) left out."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        if value is None:
            continue
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def model_options(model: type[BaseModel], exclude: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: add the model's fields (and those of nested configs) as flags; the command receives
    `overrides=` as a nested dict of the flags the user gave.

    `exclude` names fields too structured for a flag (they stay YAML-only).
    """
    flags = _flags(model, exclude)
    if len({path[-1] for path, _ in flags}) != len(flags):
        raise TypeError(f"{model.__name__}: two nested fields share a flag name")

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "overrides"]
        fields = [_option(path[-1], info, _optional_group(model, path)) for path, info in flags]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            given = {path: _value(info, kwargs.pop(path[-1], None)) for path, info in flags}
            return command(**kwargs, overrides=nest(given))

        run.__signature__ = inspect.Signature(own + fields)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in own + fields}
        del run.__wrapped__  # make inspect use our signature, not the original's
        return run

    return wrap
