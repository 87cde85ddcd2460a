"""What a model reference names, decided before anything heavy is imported.

A name is `builtin:tiny`, an existing folder, or an `org/name` hub id; anything else is a mistake
that deserves an answer at once ("did you mean ...?"), not a minute of hub retries. A hub id is
looked up in the local cache first; when it is not there, one short connection attempt tells an
offline machine apart before transformers would retry for a minute.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

from inhouse import paths
from inhouse.errors import InvalidInputError, NotFoundError, did_you_mean

TINY = "builtin:tiny"  # the same name as inhouse.model.tiny.NAME, without importing torch
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
REACH_TIMEOUT_S = 3.0


def is_hub_id(name: str) -> bool:
    """`org/name`, as the hub spells repository ids; a bare word is never sent to the hub."""
    return not name.startswith((".", "/", "~")) and HUB_ID.fullmatch(name) is not None


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")


def resolve_model(name: str, known: Iterable[str] = ()) -> str:
    """builtin:tiny, an absolute folder path, or a hub id that can be loaded; otherwise an error now.
    `known` adds names (e.g. the adapter library) to the "did you mean" candidates."""
    if name == TINY:
        return name
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InvalidInputError(f"{path}: not a Hugging Face model folder (no config.json)")
        return str(path.resolve())
    if looks_like_path(name):
        raise NotFoundError(f"{name}: no such model folder")
    if not is_hub_id(name):
        raise not_found(name, known)
    check_hub(name)
    return name


def canonical(name: str) -> str:
    """The same model, spelt one way, without touching the network: a folder by its real path, else the
    name as given (for comparing references, e.g. an adapter's base with the served one)."""
    path = Path(name).expanduser()
    return str(path.resolve()) if name != TINY and path.exists() else name


def not_found(name: str, known: Iterable[str] = ()) -> NotFoundError:
    candidates = [TINY, *known, *local_models(), *cached_hub_models()]
    return NotFoundError(f"no adapter or model named {name!r}{did_you_mean(name, candidates)}: "
                         "give a library name (inhouse adapters), "
                         f"a model folder, an org/name hub id or {TINY}")


def check_hub(repo: str) -> None:
    """A hub id not in the local cache needs the hub: fail on the first attempt when it is out of reach."""
    if is_cached(repo):
        return
    if offline():
        raise NotFoundError(f"model {repo!r} is not in the local hub cache and HF_HUB_OFFLINE is set; "
                            "pass a local model folder, or unset HF_HUB_OFFLINE to download it")
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if not reachable(endpoint):
        raise NotFoundError(f"model {repo!r} is not a local folder, not in the local hub cache, and {endpoint} "
                            "cannot be reached from this machine; pass a local model folder (one with config.json)")


def reachable(url: str) -> bool:
    """One TCP connection with a short timeout (a proxy, when configured, is what must be reachable)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy or url)
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((target.hostname or "", port), timeout=REACH_TIMEOUT_S):
            return True
    except OSError:
        return False


def is_cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, "config.json")
    return isinstance(found, str)


def local_models() -> list[str]:
    """`models/NAME` folders under INHOUSE_HOME (where the server's clients may name models)."""
    root = paths.models()
    if not root.is_dir():
        return []
    return [str(p) for p in sorted(root.iterdir()) if (p / "config.json").is_file()]


def cached_hub_models() -> list[str]:
    """Repository ids in the local hub cache, read from its folder names (no library call scans it)."""
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE)
    if not root.is_dir():
        return []
    return [p.name[len("models--"):].replace("--", "/") for p in root.glob("models--*")]
