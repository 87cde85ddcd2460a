"""Removing a library entry, which is refused while something uses it.

Users are fine-tuning jobs still queued or running (training on the entry as their base, or about to
publish it or its checkpoints) and running servers with it loaded (`inhouse.adapters.servers`).
The folder goes in one rename (`atomic.delete_folder`): a crash never leaves half an adapter under
its name.
"""

from __future__ import annotations

from pathlib import Path

from inhouse import atomic, outputs, paths
from inhouse.adapters import registry, servers
from inhouse.errors import ConflictError


def users(name: str) -> list[str]:
    """What uses the entry now, each as a short phrase; empty when it may go."""
    return [*_jobs(name), *_servers(name)]


def _jobs(name: str) -> list[str]:
    from inhouse.jobs.store import ACTIVE, Store

    db = paths.jobs() / "inhouse.sqlite3"
    if not db.is_file():  # no job was ever submitted: nothing to open (and nothing created)
        return []
    rows = Store(db).select(f"select * from jobs where status in ({', '.join('?' * len(ACTIVE))})", ACTIVE)
    folder = outputs.real(registry.library() / name)
    found = []
    for job in rows:
        if job["output_name"] == name or name.startswith(f"{job['output_name']}-step-"):
            found.append(f"fine-tuning job {job['id']} ({job['status']}) publishes it")
        elif outputs.real(job["base"]) == folder:
            found.append(f"fine-tuning job {job['id']} ({job['status']}) trains on it")
    return found


def _servers(name: str) -> list[str]:
    return [f"inhouse serve (pid {s['pid']}) has it loaded" for s in servers.live() if name in s.get("adapters", [])]


def check_unused(name: str) -> None:
    """ConflictError naming each user, and what to do about it."""
    jobs, serving = _jobs(name), _servers(name)
    if jobs or serving:
        fixes = ["let the job finish or cancel it (inhouse jobs cancel ID)"] * bool(jobs) + ["stop the server"] * bool(serving)
        raise ConflictError(f"adapter {name!r} is in use: {'; '.join(jobs + serving)}; {' and '.join(fixes)}, "
                            "then remove it")


def remove(name: str) -> Path:
    """Delete the library entry `name`; refused (ConflictError) while a job or a server uses it."""
    folder = registry.entry_folder(name)
    check_unused(name)
    with registry.locked(folder):  # a record() under way finishes first
        atomic.delete_folder(folder)
    return folder
