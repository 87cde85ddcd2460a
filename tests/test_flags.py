"""Every config field reaches its command as a flag: listed in --help, and parsed into the config."""

import types
import typing
from pathlib import Path
from typing import Literal

import pytest
from helpers import run_cli
from pydantic import BaseModel

from inhouse import cli_options
from inhouse.data.prepare import PrepareConfig
from inhouse.data.raft_config import RaftConfig
from inhouse.eval.config import EvalConfig
from inhouse.generation import GenerationConfig
from inhouse.rag.config import AskConfig, SearchConfig, TuneConfig
from inhouse.recipe import Recipe, TrainFile

# command words, config, fields that are not flags, positional arguments the command needs
COMMANDS = [
    (["train"], Recipe, (), []),
    (["data", "prepare"], PrepareConfig, ("rules",), ["d.jsonl", "--out", "o"]),
    (["data", "raft"], RaftConfig, (), ["--out", "o"]),
    (["eval"], EvalConfig, (), ["some-adapter"]),
    (["generate"], GenerationConfig, (), ["builtin:tiny", "--prompt", "hi"]),
    (["chat"], GenerationConfig, (), ["builtin:tiny"]),
    (["ask"], AskConfig, (), ["a question?"]),
    (["rag", "search"], SearchConfig, (), ["a query"]),
    (["rag", "eval"], SearchConfig, ("where", "min_similarity", "k"), ["--queries", "q", "--qrels", "r"]),
    (["rag", "tune-embedder"], TuneConfig, (), ["--kb", "handbook"]),
]
REQUIRED = {"data": "held.jsonl", "kb": "handbook"}  # what a required field gets when it is not the one tested
# Recipe fields valid only beside others: a DPO setting is refused without method dpo
COMPANIONS = {"reference": ["--method", "dpo", "--init-adapter", "a"], "init_adapter": ["--method", "dpo"],
              "dpo_qlora": ["--method", "dpo"]}
# RAFT needs its questions from somewhere: a file, or a teacher with a count
RAFT_COMPANIONS = {"generate": ["--teacher", "t"], "teacher": ["--generate", "1"]}


def flags(config, exclude):
    return cli_options._flags(config, exclude)


def sample(path, info):
    """A valid flag value for a field, and what the config should then hold."""
    name, annotation = path[-1], info.annotation
    if name == "where":
        return ["doc_path=handbook/*,page=3"], {"doc_path": {"glob": "handbook/*"}, "page": 3}
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kind = [a for a in typing.get_args(annotation) if a is not type(None)][0] if optional else annotation
    if typing.get_origin(kind) is Literal:
        choice = typing.get_args(kind)[-1]
        return [str(choice)], choice
    if typing.get_origin(kind) is list:
        if typing.get_args(kind)[0] is TrainFile:
            return ["a.jsonl:2,b.jsonl:max_examples=5"], [TrainFile(path="a.jsonl", weight=2),
                                                          TrainFile(path="b.jsonl", max_examples=5)]
        if typing.get_origin(typing.get_args(kind)[0]) is Literal:
            choices = typing.get_args(typing.get_args(kind)[0])
            return [f"{choices[0]},{choices[-1]}"], [choices[0], choices[-1]]
        if typing.get_args(kind)[0] is float:
            return ["0.5,2"], [0.5, 2.0]
        return (["EMAIL,PHONE"], ["EMAIL", "PHONE"]) if name == "pii_kinds" else (["a, b"], ["a", "b"])
    if kind is bool:
        return [], not (info.default or False)
    if kind is int:
        low = max([getattr(m, "ge", 3) for m in info.metadata] + [3])
        return [str(low)], low
    if kind is float:
        return ["0.5"], 0.5
    if kind is Path:
        return ["some/file.txt"], Path("some/file.txt")
    return ["x-value"], "x-value"


class Captured(BaseException):  # not an Exception: passes through the CLI's error handler
    def __init__(self, config):
        self.config = config


@pytest.fixture
def capture(monkeypatch):
    """build_config builds the config, then stops the command before any work is done."""
    from inhouse import recipe

    real = recipe.build_config

    def build(cls, file=None, /, **overrides):
        raise Captured(real(cls, file, **overrides))

    monkeypatch.setattr(recipe, "build_config", build)
    monkeypatch.setattr("inhouse.cli.build_config", build)


def field_of(config: BaseModel, path):
    for key in path:
        config = getattr(config, key)
    return config


@pytest.mark.parametrize("words,config,exclude,args", COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_help_lists_every_field_once_with_default_or_required(words, config, exclude, args):
    code, out, err = run_cli(*words, "--help", env={"COLUMNS": "250"})
    assert code == 0, err
    assert "PydanticUndefined" not in out
    for path, info in flags(config, exclude):
        flag = cli_options._option(path[-1], info).default.param_decls[0].split("/")[0]
        assert flag in out, (flag, words)
    assert "(required)" in out or not any(info.is_required() for _, info in flags(config, exclude))


@pytest.mark.parametrize("words,config,exclude,args", COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_every_flag_reaches_its_field(words, config, exclude, args, capture, tmp_path):
    for path, info in flags(config, exclude):
        flag = cli_options._option(path[-1], info).default.param_decls[0]
        values, expected = sample(path, info)
        if info.annotation is bool or bool in typing.get_args(info.annotation):
            flag = flag.split("/")[0 if expected else 1]
        needed = [f"--{k}={v}" for k, v in REQUIRED.items()
                  if k != path[-1] and k in {p[-1] for p, i in flags(config, exclude) if i.is_required()}]
        with pytest.raises(Captured) as got:
            companions = COMPANIONS.get(path[-1], []) if config is Recipe else []
            if config is RaftConfig:
                companions = RAFT_COMPANIONS.get(path[-1], ["--questions", "q.jsonl"] * (path[-1] != "questions"))
            result = run_cli(*words, *args, flag, *values, *needed, *companions, env={"INHOUSE_HOME": str(tmp_path)})
            pytest.fail(f"{words} {flag} {values}: {result}")
        assert field_of(got.value.config, path) == expected, (words, flag)


def test_list_flags_take_a_comma_as_backslash_comma(capture, tmp_path):
    with pytest.raises(Captured) as got:
        run_cli("data", "prepare", "d.jsonl", "--out", "o", "--pii-allow", r"re:^\d{1\,3} , @acme.com,,")
    assert got.value.config.pii_allow == [r"re:^\d{1,3}", "@acme.com"]
