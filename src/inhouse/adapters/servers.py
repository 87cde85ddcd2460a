"""Running `inhouse serve` processes, each registered by a small JSON file under INHOUSE_HOME/servers.

A server's file names its process and the adapters its generating process has loaded, so that
removing an adapter (`inhouse adapters rm`, DELETE /v1/adapters/NAME) can refuse while a server
uses it. A file whose process is gone (a server killed with -9) is stale: it is ignored, and the
next server to register clears it. A process is recognised by its pid and, where /proc tells, its
start time, so a pid the system gave to another program later does not count as the server.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from inhouse import atomic, paths
from inhouse.adapters.lineage import now

log = logging.getLogger("inhouse.serve")


def started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(pid: int, start: str | None) -> bool:
    """Whether the registered process still runs: the pid exists and, when recorded, started then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: the pid exists
        pass
    return start is None or started(pid) in (None, start)


class Registration:
    """This process's file; `update` is called from the engine's reader thread as adapters load."""

    def __init__(self, **info: Any):
        self.pid = os.getpid()
        self.path = paths.servers() / f"{self.pid}.json"
        self.info = {"pid": self.pid, "started": started(self.pid), "since": now(), **info, "adapters": []}
        self.lock = threading.Lock()

    def update(self, adapters: list[str]) -> None:
        """Rewrite the file; a failed write is logged, never raised (serving matters more than the notice)."""
        with self.lock:
            self.info["adapters"] = sorted(adapters)
            try:
                atomic.write_json(self.path, self.info)
            except OSError as e:
                log.warning("could not register this server in %s: %s", self.path, e)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def register(adapters: list[str] | None = None, **info: Any) -> Registration:
    """Announce this server (base model, address...); stale files of dead servers are cleared first."""
    paths.servers().mkdir(parents=True, exist_ok=True)
    for stale in _files(live=False):
        stale.unlink(missing_ok=True)
    registration = Registration(**info)
    registration.update(adapters or [])
    return registration


def live() -> list[dict[str, Any]]:
    """The registrations of servers that are running now."""
    return [_read(path) for path in _files(live=True)]


def _files(live: bool) -> list[Path]:
    found = sorted(paths.servers().glob("*.json")) if paths.servers().is_dir() else []
    return [path for path in found if _is_live(_read(path)) == live]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_live(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    return isinstance(pid, int) and pid > 0 and alive(pid, info.get("started"))
