"""A fresh PostgreSQL database per test (or module) on the session's embedded server (tests/conftest.py)."""

import uuid
from contextlib import contextmanager


@contextmanager
def fresh_database(server):
    """A new database on `server` for the block, as a password-free postgresql:// URL (what --store takes)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(admin)
    try:
        yield f"postgresql://{params.get('user', 'postgres')}@/{name}?host={params['host']}"
    finally:
        from inhouse.rag import pgconn

        pgconn.pool.clear()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
