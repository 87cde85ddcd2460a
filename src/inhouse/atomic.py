"""All-or-nothing writes: build in a staging folder or temp file, then rename into place.

A crash or Ctrl-C leaves the old artifact (or nothing), never half of a new one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_folder(out: Path, write: Callable[[Path], None], replace: Callable[[], None] | None = None) -> Path:
    """Run `write(staging)` and rename the staging folder to `out`.

    When `out` exists, `replace()` is called just before the swap: it raises to
    refuse (the default refuses with FileExistsError), or returns to let the
    old folder go. Staging folders that a killed run left beside `out` are
    removed first.
    """
    out = Path(out)
    if out.exists() and replace is None:
        raise FileExistsError(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))
    try:
        write(staged)
        _swap(staged, out, replace)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out


def final_name(folder: Path) -> str:
    """The name `folder` will have once in place: a staging folder of `write_folder` gives its target's
    name (a writer that names things after its folder must not take the temporary name)."""
    staged = re.fullmatch(r"\.(.+)\.staging-\d+-[^.]+", folder.name)
    return staged.group(1) if staged else folder.name


def _swap(staged: Path, out: Path, replace: Callable[[], None] | None) -> None:
    if not os.path.lexists(out):
        os.replace(staged, out)
        return
    if replace is None:
        raise FileExistsError(out)
    replace()
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{staged.name.rsplit('-', 1)[-1]}")
    os.replace(out, old)
    os.replace(staged, out)
    shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def delete_folder(path: Path) -> bool:
    """Remove a folder as one step: renamed to a hidden `.NAME.trash-*` beside it, then deleted, so a crash
    midway never leaves half of it under its real name (the next write or delete there clears the rest).
    False when there was nothing to remove."""
    path = Path(path)
    remove_stale(path)
    trash = path.with_name(f".{path.name}.trash-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return False
    if trash.is_symlink():
        trash.unlink()
    shutil.rmtree(trash, ignore_errors=True)
    return True


def remove_stale(out: Path) -> list[Path]:
    """Delete `.NAME.staging-*` / `.NAME.old-*` / `.NAME.trash-*` folders whose process is gone; returns them.

    A run killed between the two renames of a swap left the previous folder as `.old-*` and
    nothing at `out`: that folder is put back instead of deleted. Trash is never put back.
    """
    removed = []
    for kind in ("old", "staging", "trash"):
        for leftover in sorted(out.parent.glob(f".{glob_escape(out.name)}.{kind}-*")):
            owner = leftover.name.rsplit(f".{kind}-", 1)[-1].split("-", 1)[0]
            if owner.isdigit() and _alive(int(owner)):
                continue  # a live run is writing it right now
            if kind == "old" and not os.path.lexists(out):
                os.replace(leftover, out)
                continue
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


def glob_escape(name: str) -> str:
    """A file name as a glob pattern that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def dumps(data: Any, **options: Any) -> str:
    """JSON text that always encodes as UTF-8: readable non-ASCII, but a lone surrogate (from a
    non-UTF-8 file name) is written as an escape instead of failing the whole write."""
    text = json.dumps(data, default=str, ensure_ascii=False, **options)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, default=str, **options)
    return text


def write_json(path: Path, data: Any) -> None:
    """JSON through `write_text`: after a crash the file is the old one or the new one, never a mix."""
    write_text(path, dumps(data, indent=2))


def write_text(path: Path, text: str, errors: str = "strict") -> None:
    """Temp file, fsync, rename: after a crash the file is the old one or the new one, never a mix
    (`errors`: how characters UTF-8 cannot encode are written; newlines are written as given)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", errors=errors, newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
