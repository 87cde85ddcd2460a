"""All-or-nothing writes: build in a staging folder or temp file, then rename into place.

A crash or Ctrl-C leaves the old artifact (or nothing), never half of a new one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_folder(out: Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Run `write(staging)` and rename the staging folder to `out`.

    Raises FileExistsError when `out` exists and `overwrite` is False (checked
    before any work and again before the rename).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        write(staged)
        _swap(staged, out, overwrite)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out


def _swap(staged: Path, out: Path, overwrite: bool) -> None:
    if not out.exists():
        os.replace(staged, out)
        return
    if not overwrite:
        raise FileExistsError(out)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(staged, out)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Temp file, fsync, rename: after a crash the file is the old one or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
