"""Shared fixtures: builtin:tiny saved to disk so the real folder-loading path runs."""

import pytest

from inhouse.model import tiny


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    model, tok = tiny.build(seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private adapter library per test."""
    monkeypatch.setenv("INHOUSE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
