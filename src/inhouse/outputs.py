"""Where a command may write: output paths that can never eat a user's files.

Every command that writes a folder (prepare, eval, merge, export, a folder
knowledge base, the server's stores) claims its output here *before* doing any
work, naming the inputs it reads. The rules:

- an output that is, contains or lies inside one of the inputs is refused,
  with or without --overwrite (symlinks are resolved first);
- an existing file is never an output folder;
- an existing, non-empty folder is replaced only with --overwrite, and only
  when it carries inhouse's marker file of the same kind: inhouse replaces
  what inhouse wrote, nothing else.

The marker is written into every output folder so that a later --overwrite
can recognise it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from inhouse import atomic
from inhouse.errors import ConflictError, InvalidInputError

MARKER = ".inhouse-output.json"


def real(path: str | os.PathLike) -> Path:
    """The path with every symlink resolved (also when its tail does not exist yet)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_not_overlapping(out: Path, inputs: Iterable[str | os.PathLike | None], flag: str = "--out") -> None:
    """Refuse an output that is, contains or is inside an input."""
    target = real(out)
    for given in inputs:
        if given is None:
            continue
        source = real(given)
        if source == target:
            raise InvalidInputError(f"{flag} {out} is the input {given}; choose a new folder for the output")
        if _within(source, target):
            raise InvalidInputError(f"{flag} {out} contains the input {given}; writing there could destroy it, "
                                    "choose a new folder for the output")
        if _within(target, source):
            raise InvalidInputError(f"{flag} {out} is inside the input {given}; choose a folder outside it")


def marker_kind(folder: Path) -> str | None:
    """The kind recorded by inhouse's marker in `folder`, or None when it has none (or it is unreadable)."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_replaceable(out: Path, kind: str, overwrite: bool, flag: str = "--out") -> None:
    """An existing output may go only when it is empty, or inhouse's own `kind` output and --overwrite."""
    if not os.path.lexists(out):
        return
    if not out.is_dir():
        raise InvalidInputError(f"{flag} {out} is an existing file; {flag} takes a folder (give a new path)")
    if is_empty_dir(out):
        return
    found = marker_kind(out)
    if found != kind:
        what = f"holds another kind of output ({found})" if found else "was not written by inhouse"
        raise ConflictError(f"{flag} {out} exists and {what}; it is never replaced: choose a new folder")
    if not overwrite:
        raise ConflictError(f"{flag} {out} already holds an earlier {kind}; pass --overwrite to replace it, "
                            "or choose another folder")


@dataclass(frozen=True)
class Output:
    """A claimed output folder: `write` fills it all at once (staging folder, then rename)."""

    path: Path
    kind: str
    overwrite: bool = False
    flag: str = "--out"

    def write(self, fill: Callable[[Path], None]) -> Path:
        """Build the folder with `fill(staging)` plus the marker; re-check the target just before the swap."""
        check_replaceable(self.path, self.kind, self.overwrite, self.flag)

        def build(folder: Path) -> None:
            fill(folder)
            atomic.write_json(folder / MARKER, {"kind": self.kind, "written_by": "inhouse"})

        return atomic.write_folder(self.path, build, replace=lambda: check_replaceable(
            self.path, self.kind, self.overwrite, self.flag))


def claim(out: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike | None] = (),
          overwrite: bool = False, flag: str = "--out") -> Output:
    """Check an output folder before any work is done; raises InhouseError with a one-line reason."""
    out = Path(out).expanduser()
    check_not_overlapping(out, inputs, flag)
    check_replaceable(out, kind, overwrite, flag)
    return Output(real(out), kind, overwrite, flag)
