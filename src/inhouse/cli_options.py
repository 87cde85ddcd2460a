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


def _cli_type(annotation: Any) -> tuple[type, str]:
    """The flag's Python type and a hint for the help text (choices, list syntax)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _cli_type(args[0])
    if typing.get_origin(annotation) is Literal:
        return str, " One of: " + ", ".join(map(str, typing.get_args(annotation))) + "."
    if typing.get_origin(annotation) is list:
        return str, ""
    if annotation in (int, float, str, bool, Path):
        return annotation, ""
    return str, ""


def _default_text(field: FieldInfo) -> str:
    default = field.default
    if isinstance(default, list):
        default = ",".join(map(str, default))
    return "none" if default is None else str(default)


def _option(name: str, field: FieldInfo) -> inspect.Parameter:
    kind, hint = _cli_type(field.annotation)
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = "--" + str(extra.get("flag") or name.replace("_", "-"))
    decls = (f"{flag}/--no-{flag[2:]}",) if kind is bool else (flag,)
    help_text = f"{field.description or ''}{hint} (default: {_default_text(field)})"
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
        default=typer.Option(None, *decls, help=help_text, show_default=False, rich_help_panel="Recipe"),
    )


def model_options(model: type[BaseModel], exclude: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: add the model's fields as flags; the command receives `overrides=`.

    `exclude` names fields too structured for a flag (they stay YAML-only).
    """
    names = [n for n in model.model_fields if n not in exclude]

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "overrides"]
        fields = [_option(n, model.model_fields[n]) for n in names]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            overrides = {n: kwargs.pop(n) for n in names if n in kwargs}
            return command(**kwargs, overrides=overrides)

        run.__signature__ = inspect.Signature(own + fields)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in own + fields}
        del run.__wrapped__  # make inspect use our signature, not the original's
        return run

    return wrap
