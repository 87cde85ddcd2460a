"""The facts every record of where something came from shares: when, which bytes, which versions.

Adapters (`adapters.lineage`) and tuned embedders (`rag.tune`) both write them; they live here so that
neither workflow imports the other.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions(packages: Sequence[str]) -> dict[str, str]:
    """Python's version and each package's ("not installed" when absent)."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
