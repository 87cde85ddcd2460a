"""Where a PostgreSQL knowledge base lives, and how to reach it: the --store value as store.json records
it (never a password), and a small per-process pool of autocommit connections, so a server does not
connect per request."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inhouse import atomic
from inhouse.errors import InhouseError, InvalidInputError

INSTALL = "PostgreSQL knowledge bases need psycopg and pgvector: pip install 'inhouse[postgres]'"


def sql() -> Any:
    """psycopg's `sql` module; without the extra installed, the one-line hint to install it."""
    try:
        import psycopg  # noqa: F401
        from psycopg import sql
    except ImportError:
        raise InhouseError(INSTALL) from None
    return sql


# -- where the knowledge base lives -------------------------------------------------------------


def is_store_spec(text: str | None) -> bool:
    """A --store value naming PostgreSQL: a postgresql:// URL or env:VAR (a variable holding one)."""
    return bool(text) and (text.startswith(("postgresql://", "postgres://", "env:")))


def location(spec: str, kb_name: str) -> dict[str, Any]:
    """What store.json records for --store `spec`: never a password (a URL with one is refused)."""
    if spec.startswith("env:"):
        var = spec[4:]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            raise InvalidInputError(f"--store env:{var}: name an environment variable (letters, digits, _)")
        return {"backend": "postgresql", "dsn_env": var, "table": table_name(kb_name)}
    sql()
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(spec)
    except Exception:  # the message would quote the URL
        raise InvalidInputError("--store: not a valid postgresql:// connection string") from None
    if params.pop("password", None):  # an empty one (user:@host) is no secret
        raise InvalidInputError("--store: the connection string holds a password, and inhouse never writes one "
                                "down; drop it from the URL and set PGPASSWORD (or ~/.pgpass), or pass the whole "
                                "URL in an environment variable: --store env:VARIABLE")
    return {"backend": "postgresql", "dsn": make_conninfo(**params), "table": table_name(kb_name)}


def table_name(kb_name: str) -> str:
    """The chunks table of a knowledge base: readable, within PostgreSQL's 63 bytes, distinct per name."""
    name = atomic.final_name(Path(kb_name))
    slug = re.sub(r"[^a-z0-9_]+", "_", name.lower())[:30]
    return f"kb_{slug}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def shown(loc: Mapping[str, Any]) -> str:
    """The location for messages: the password-free conninfo, or the variable's name."""
    where = f"${loc['dsn_env']}" if loc.get("dsn_env") else repr(loc.get("dsn", ""))
    return f"postgresql {where}, table {loc['table']}"


def conninfo(loc: Mapping[str, Any]) -> str:
    if loc.get("dsn_env"):
        value = os.environ.get(loc["dsn_env"])
        if not value:
            raise InhouseError(f"the knowledge base lives in PostgreSQL at ${loc['dsn_env']}, which is not set; "
                               "export it (the connection string) and try again")
        return value
    return loc["dsn"]


# -- connections: a small per-process pool, so a server does not connect per request ------------

pool: dict[tuple[int, str], list[Any]] = {}
pool_lock = threading.Lock()


def connect(loc: Mapping[str, Any], autocommit: bool) -> Any:
    sql()
    import psycopg

    try:
        conn = psycopg.connect(conninfo(loc), autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as e:  # libpq's message names host and user, never the password
        raise InhouseError(f"cannot connect to {shown(loc)}: {first_line(e)}") from None
    register_vector(conn)
    return conn


@contextmanager
def reader(loc: Mapping[str, Any]) -> Iterator[Any]:
    """An autocommit connection (each statement sees the latest published state) for one operation."""
    key = (os.getpid(), conninfo(loc))  # read each time: a variable that changed or went away is noticed
    with pool_lock:
        conn = pool.get(key, []).pop() if pool.get(key) else None
    if conn is None or conn.closed or conn.broken:
        conn = connect(loc, autocommit=True)
    try:
        yield conn
    except BaseException:
        conn.close()  # a half-read cursor or a failed statement: do not hand it on
        raise
    with pool_lock:
        pool.setdefault(key, []).append(conn)


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def register_vector(conn: Any) -> None:
    """pgvector's adapter, once per connection; the type exists only after the first write made it."""
    import psycopg
    from pgvector.psycopg import register_vector as register

    if conn.adapters.types.get("vector") is not None:
        return
    try:
        register(conn)
    except psycopg.ProgrammingError:
        if not conn.autocommit:
            conn.rollback()
