"""The folders under INHOUSE_HOME (default ~/.inhouse), named in one place.

adapters/  the library of fine-tuned results (one folder each, with inhouse.json)
runs/      checkpoints of training runs in progress (what --resume continues); a run's tensorboard/ logs stay
mlruns/    the local MLflow file store (tracking: mlflow, unless MLFLOW_TRACKING_URI says otherwise)
evals/     evaluation reports
kb/        knowledge bases
embedders/ tuned embedders (sentence-transformers folders, each with inhouse.json)
files/     files uploaded to the server (by content hash)
jobs/      the fine-tuning job store
models/    model folders the server's clients may name (models/NAME)
servers/   one file per running `inhouse serve`: its pid and the adapters it has loaded
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("INHOUSE_HOME") or Path.home() / ".inhouse").expanduser()


def adapters() -> Path:
    return home() / "adapters"


def runs() -> Path:
    return home() / "runs"


def mlruns() -> Path:
    return home() / "mlruns"


def evals() -> Path:
    return home() / "evals"


def kbs() -> Path:
    return home() / "kb"


def embedders() -> Path:
    """Embedders tuned by `inhouse rag tune-embedder`; an index names one by its folder name."""
    return home() / "embedders"


def files() -> Path:
    return home() / "files"


def jobs() -> Path:
    return home() / "jobs"


def models() -> Path:
    """Model folders a user placed for the server's clients to name as `models/NAME`."""
    return home() / "models"


def servers() -> Path:
    return home() / "servers"


def shown(path: str | os.PathLike) -> str:
    """A path as printable, encodable text: bytes of a non-UTF-8 file name appear as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8_name(path: str | os.PathLike) -> bool:
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
