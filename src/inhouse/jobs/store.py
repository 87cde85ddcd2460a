"""The durable record of uploaded files and fine-tuning jobs: one SQLite database under the home folder.

WAL mode, so the server's readers never wait for the job process writing
events; every write is one short transaction. Rows are plain dicts with JSON
columns decoded; `inhouse.serve.openai` turns them into OpenAI's objects.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inhouse import paths
from inhouse.errors import NotFoundError

SCHEMA = """
create table if not exists files (
  id text primary key, sha256 text not null, bytes integer not null, created_at integer not null,
  filename text not null, purpose text not null, status text not null, status_details text);
create table if not exists jobs (
  id text primary key, created_at integer not null, status text not null, model text not null,
  base text not null, training_file text not null, validation_file text, suffix text, seed integer not null, metadata text,
  hyperparameters text not null, method text not null, recipe text not null, output_name text not null,
  fine_tuned_model text, trained_tokens integer, started_at integer, finished_at integer,
  estimated_finish integer, error text, pid integer, cancel_requested integer not null default 0,
  attempts integer not null default 0, devices text);
create table if not exists events (
  job_id text not null, seq integer not null, id text not null, created_at integer not null,
  level text not null, message text not null, type text not null, data text, primary key (job_id, seq));
create table if not exists checkpoints (
  id text primary key, job_id text not null, step integer not null, created_at integer not null,
  metrics text not null, model text not null);
"""
ADDED = {"jobs": {"devices": "text"}}  # columns newer than a store's first version
JSON_COLUMNS = ("devices", "metadata", "hyperparameters", "method", "recipe", "error", "data", "metrics")
ACTIVE = ("validating_files", "queued", "running")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


class Store:
    def __init__(self, path: Path | None = None):
        self.path = Path(path or paths.jobs() / "inhouse.sqlite3")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.executescript(SCHEMA)
            _add_columns(db)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """One short-lived connection: safe from any thread or process."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("pragma journal_mode=wal")
            db.execute("pragma busy_timeout=30000")
            yield db
        finally:
            db.close()

    # -- rows -------------------------------------------------------------------------------------

    def insert(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        encoded = {k: _encode(k, v) for k, v in row.items()}
        with self.connect() as db:
            db.execute(f"insert into {table} ({', '.join(encoded)}) values ({', '.join('?' * len(encoded))})",
                       list(encoded.values()))
        return row

    def update(self, table: str, key: str, **values: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.connect() as db:
            db.execute(f"update {table} set {sets} where id = ?", [*(_encode(k, v) for k, v in values.items()), key])

    def get(self, table: str, key: str, noun: str) -> dict[str, Any]:
        with self.connect() as db:
            row = db.execute(f"select * from {table} where id = ?", [key]).fetchone()
        if row is None:
            raise NotFoundError(f"No {noun} found with id '{key}'.")
        return _decode(row)

    def select(self, sql: str, args: list | tuple = ()) -> list[dict[str, Any]]:
        with self.connect() as db:
            return [_decode(r) for r in db.execute(sql, list(args)).fetchall()]

    def page(self, table: str, after: str | None, limit: int, where: str = "1=1", args: tuple = ()) -> tuple[list, bool]:
        """Newest first, `limit` rows after the row `after` (OpenAI's cursor pagination)."""
        if after:
            created = self.select(f"select created_at from {table} where id = ?", (after,))
            if created:
                where += " and (created_at < ? or (created_at = ? and id < ?))"
                args = (*args, created[0]["created_at"], created[0]["created_at"], after)
        rows = self.select(f"select * from {table} where {where} order by created_at desc, id desc limit ?",
                           (*args, limit + 1))
        return rows[:limit], len(rows) > limit

    # -- jobs -------------------------------------------------------------------------------------

    def add_event(self, job_id: str, message: str, level: str = "info", kind: str = "message",
                  data: dict | None = None) -> None:
        with self.connect() as db:
            db.execute("begin immediate")
            seq = db.execute("select coalesce(max(seq), 0) + 1 from events where job_id = ?", [job_id]).fetchone()[0]
            db.execute("insert into events values (?, ?, ?, ?, ?, ?, ?, ?)",
                       [job_id, seq, new_id("ftevent"), now(), level, message, kind, _encode("data", data)])
            db.execute("commit")

    def events(self, job_id: str, after: str | None, limit: int) -> tuple[list, bool]:
        """Newest first, like OpenAI's API; `after` is an event id."""
        where, args = "job_id = ?", [job_id]
        if after:
            seq = self.select("select seq from events where id = ?", (after,))
            if seq:
                where += " and seq < ?"
                args.append(seq[0]["seq"])
        rows = self.select(f"select * from events where {where} order by seq desc limit ?", (*args, limit + 1))
        return rows[:limit], len(rows) > limit

    def transition(self, job_id: str, old: tuple[str, ...], new: str, **values: Any) -> bool:
        """Move a job from one of `old` states to `new` (with other columns), atomically; False if it had moved."""
        sets = ", ".join(["status = ?", *(f"{k} = ?" for k in values)])
        with self.connect() as db:
            done = db.execute(f"update jobs set {sets} where id = ? and status in ({', '.join('?' * len(old))})",
                              [new, *(_encode(k, v) for k, v in values.items()), job_id, *old]).rowcount
        return done == 1


def _add_columns(db: sqlite3.Connection) -> None:
    """A store made by an older inhouse gains the newer columns (in one transaction: the server and a job
    process may open it at once)."""
    db.execute("begin immediate")
    for table, columns in ADDED.items():
        have = {row["name"] for row in db.execute(f"pragma table_info({table})")}
        for name, kind in columns.items():
            if name not in have:
                db.execute(f"alter table {table} add column {name} {kind}")
    db.execute("commit")


def _encode(column: str, value: Any) -> Any:
    return json.dumps(value) if column in JSON_COLUMNS and value is not None else value


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    return {k: (json.loads(row[k]) if k in JSON_COLUMNS and row[k] is not None else row[k]) for k in row.keys()}
