"""Metadata filters as parameterised SQL, with the same forms as the embedded store: a column's value,
a list of values, {"glob": pattern}, or an SQL string passed through."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from inhouse.errors import InvalidInputError
from inhouse.rag import pgconn
from inhouse.rag.store import COLUMNS, like_pattern


def pg_where(where: str | Mapping[str, Any] | None) -> tuple[Any, list[Any]]:
    """A filter as parameterised SQL and its values; an SQL string passes through, as in LanceStore."""
    sql = pgconn.sql()
    if not where:
        return sql.SQL("TRUE"), []
    if isinstance(where, str):
        return sql.SQL("({})").format(sql.SQL(where.replace("%", "%%"))), []
    parts, params = [], []
    for col, value in where.items():
        part, values = _condition(col, value)
        parts.append(part)
        params += values
    return sql.SQL(" AND ").join(parts), params


def _condition(col: str, value: Any) -> tuple[Any, list[Any]]:
    sql = pgconn.sql()
    if col not in COLUMNS:
        raise InvalidInputError(f"cannot filter on {col!r}; columns: {', '.join(COLUMNS)}")
    many = isinstance(value, (list, tuple, set, frozenset))
    values = list(value) if many else [value]
    plain = [v for v in values if not isinstance(v, Mapping)]
    globs = [like_pattern(v["glob"]) for v in values if isinstance(v, Mapping)]
    ident = sql.Identifier(col)
    tests = [sql.SQL("{} LIKE %s ESCAPE '\\'").format(ident) for _ in globs]
    params: list[Any] = list(globs)
    if plain or not values:
        tests.insert(0, sql.SQL("{} = ANY(%s)").format(ident))
        params.insert(0, plain)
    return sql.SQL("({})").format(sql.SQL(" OR ").join(tests)), params


@contextmanager
def filter_errors(where: Any) -> Iterator[None]:
    """A filter the database rejects is the user's input: one line, no SQL state dump."""
    import psycopg

    try:
        yield
    except (psycopg.errors.SyntaxError, psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction,
            psycopg.errors.DataError, psycopg.errors.DatatypeMismatch) as e:
        raise InvalidInputError(f"bad filter {where!r}: {pgconn.first_line(e)}") from None
