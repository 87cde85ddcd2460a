"""Uploaded training files: stored once by content hash, validated like `inhouse data check`.

The client's file name is metadata only; the bytes live at `files/<sha256>`.
An upload is copied to a temporary file while it is hashed and counted, then
renamed into place, so a failed or oversized upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from inhouse import paths
from inhouse.errors import InhouseError, InvalidInputError
from inhouse.jobs.store import Store, new_id, now

CHUNK = 1 << 20
SHOWN_PROBLEMS = 5


class TooLarge(InvalidInputError):
    status = 413


def blob(sha256: str) -> Path:
    return paths.files() / sha256


def save_upload(store: Store, stream: BinaryIO, filename: str, purpose: str, limit: int) -> dict:
    """Store an upload (streamed, at most `limit` bytes) and its validation result; returns the file row."""
    if purpose != "fine-tune":
        raise InvalidInputError(f"purpose {purpose!r} is not supported here; upload training data with "
                                "purpose 'fine-tune'")
    sha, size = _copy(stream, limit)
    row = {"id": new_id("file"), "sha256": sha, "bytes": size, "created_at": now(), "filename": filename,
           "purpose": purpose}
    problems = validate(blob(sha), filename)
    row |= {"status": "error" if problems else "processed", "status_details": problems or None}
    return store.insert("files", row)


def _copy(stream: BinaryIO, limit: int) -> tuple[str, int]:
    folder = paths.files()
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"The file is larger than this server accepts ({limit // 2**20} MiB; "
                                   "see --max-file-mb).")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise InvalidInputError("The file is empty.")
        os.replace(tmp, blob(digest.hexdigest()))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest(), size


def validate(path: Path, filename: str) -> str:
    """'' for a usable file, else its problems as `inhouse data check` words them (file:line: code ...)."""
    from inhouse.data.formats import load_dataset, summarise
    from inhouse.train.pair_source import is_pair_file, read_pair_file

    try:
        if is_pair_file(path):  # preference pairs, for a dpo job
            return "" if read_pair_file(path) else f"{filename}: no usable examples"
        result = load_dataset(path)
    except InhouseError as e:
        return str(e).replace(str(path), filename)
    lines = summarise(result.problems)
    if not lines and not result.conversations:
        return f"{filename}: no usable examples"
    shown = lines[:SHOWN_PROBLEMS] + ([f"... and {len(lines) - SHOWN_PROBLEMS} more"] if len(lines) > SHOWN_PROBLEMS
                                      else [])
    return "\n".join(line.replace(str(path), filename) for line in shown)


def delete(store: Store, file_id: str) -> None:
    """Forget a file; its bytes go when no other upload has the same content."""
    row = store.get("files", file_id, "file")
    with store.connect() as db:
        db.execute("delete from files where id = ?", [file_id])
    if not store.select("select id from files where sha256 = ?", (row["sha256"],)):
        blob(row["sha256"]).unlink(missing_ok=True)
