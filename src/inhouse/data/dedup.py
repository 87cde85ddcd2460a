"""Find repeated examples: exact copies, and near copies with small edits.

Duplicates make a model memorise a few answers and leak between the train
and test splits, so they are removed before splitting. Every removal is
reported as a `Cluster` so a person can see what went and why.

Near duplicates use MinHash with LSH banding, vectorised with numpy:
`datasketch` hashes each shingle in Python and needed about 0.5 ms per
support-sized example (50 s for 100,000) against about 0.05 ms here.

Choices, and why:

* Character 5-gram shingles, not word shingles. Support examples are short,
  and one edited word changes five word 5-grams, which in a 30-word message
  already drops Jaccard below 0.6; character shingles change only around
  the edit. They also work for scripts written without spaces (Chinese,
  Japanese, Thai) and treat emoji and right-to-left text like any other
  characters. Texts are normalised, case-folded and whitespace-collapsed
  first, so "Hello" and "hello " are the same.
* LSH only proposes candidates; each candidate pair is verified with the
  exact Jaccard similarity of the two shingle sets, so an LSH false positive
  is never removed and the threshold means exactly what it says.
* Transitive-safe clusters: examples are visited in order and an example is
  removed only when it is a near duplicate of an earlier example that was
  *kept*. A chain A~B~C where A and C differ therefore keeps A and C: a
  cluster never drifts away from the example that represents it. Which
  examples are kept does not depend on clustering; a removed example is
  reported in the cluster of the kept example it resembles most.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from inhouse.data.conversation import Conversation
from inhouse.data.normalize import normalize_text
from inhouse.errors import InhouseError

DEFAULT_THRESHOLD = 0.85
# Band layout is chosen so a pair exactly at the threshold becomes a
# candidate with at least this probability.
CANDIDATE_RECALL = 0.99
# Candidates whose MinHash estimate is this far below the threshold skip
# the exact check (over 6 standard deviations at 128 permutations).
ESTIMATE_MARGIN = 0.2
# Bounds on work per example, so a crowd of similar-but-distinct examples
# cannot make the search quadratic. Reaching them needs hundreds of
# mutually similar examples sharing a band; the cost is a missed pair there.
MAX_BUCKET = 256  # kept examples remembered per LSH bucket
MAX_CHECKS = 8  # exact Jaccard checks per example
_SHINGLES_PER_BLOCK = 8192  # keeps each (shingles x permutations) block in cache
_CHARS_PER_BATCH = 1 << 21
_M64 = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier (golden ratio) for rolling hashes
_SEED = 0x1A2B3C4D  # fixed: the same data always gives the same clusters
Jaccard = Callable[[int, int], float]


@dataclass(frozen=True)
class Cluster:
    """One kept example and the duplicates of it that were removed.

    `similarity` is the lowest Jaccard similarity between the kept example
    and any removed one (1.0 for exact copies): the weakest link to review.
    """

    kept: int
    removed: list[int] = field(default_factory=list)
    similarity: float = 1.0


@dataclass
class DedupResult:
    """Indices are into the list given to `deduplicate`."""

    kept: list[int]
    exact: list[Cluster]
    near: list[Cluster]


# --- canonical text ---------------------------------------------------------------


def canonical_text(conv: Conversation) -> str:
    """Roles, normalised contents and tool calls, in order: what "the same example" means."""
    return "\x1e".join(f"{m.role}\x1f{normalize_text(m.content)}{_calls(m)}" for m in conv.messages)


def _calls(message) -> str:
    return "".join(f"\x1f{c.name}({c.arguments})" for c in message.tool_calls)


def _fold(text: str) -> str:
    """Case and spacing do not make an example different. (str.split treats
    the \x1e/\x1f separators as spaces, so roles become plain words.)"""
    return " ".join(text.casefold().split())


# --- exact -----------------------------------------------------------------------------


def exact_duplicates(convs: Sequence[Conversation]) -> list[Cluster]:
    """Examples whose normalised roles and contents are identical."""
    return _exact([canonical_text(c) for c in convs])


def _exact(texts: Sequence[str]) -> list[Cluster]:
    first: dict[bytes, int] = {}
    clusters: dict[int, Cluster] = {}
    for i, text in enumerate(texts):
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        kept = first.setdefault(key, i)
        if kept != i:
            clusters.setdefault(kept, Cluster(kept)).removed.append(i)
    return sorted(clusters.values(), key=lambda c: c.kept)


# --- near ------------------------------------------------------------------------------


def near_duplicates(
    convs: Sequence[Conversation],
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = 128,
    shingle: int = 5,
) -> list[Cluster]:
    """Examples whose shingle sets have Jaccard similarity >= threshold to an
    earlier kept example (exact copies included, with similarity 1.0)."""
    return _near([_fold(canonical_text(c)) for c in convs], threshold, num_perm, shingle)


def deduplicate(
    convs: Sequence[Conversation],
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = 128,
    shingle: int = 5,
) -> DedupResult:
    """Exact copies first (cheap, certain), then near copies among the rest."""
    texts = [canonical_text(c) for c in convs]
    exact = _exact(texts)
    gone = {i for c in exact for i in c.removed}
    rest = [i for i in range(len(texts)) if i not in gone]
    local = _near([_fold(texts[i]) for i in rest], threshold, num_perm, shingle)
    near = [Cluster(rest[c.kept], [rest[r] for r in c.removed], c.similarity) for c in local]
    gone |= {i for c in near for i in c.removed}
    return DedupResult([i for i in rest if i not in gone], exact, near)


def _near(texts: Sequence[str], threshold: float, num_perm: int, k: int) -> list[Cluster]:
    _check_params(threshold, num_perm, k)
    if not texts:
        return []
    sigs = signatures(texts, num_perm, k)
    bands, rows = band_layout(threshold, num_perm)
    keys = _band_keys(sigs, bands, rows)
    shingles = functools.lru_cache(maxsize=20_000)(lambda i: _shingle_set(texts[i], k))
    return _greedy(keys, sigs, threshold, lambda i, j: _jaccard(shingles(i), shingles(j)))


def _check_params(threshold: float, num_perm: int, k: int) -> None:
    if not 0 < threshold <= 1:
        raise InhouseError(f"near-duplicate threshold must be above 0 and at most 1, got {threshold}")
    if num_perm < 1 or k < 1:
        raise InhouseError(f"num_perm and shingle size must be at least 1, got {num_perm} and {k}")


def band_layout(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest false candidates) that
    still make a pair at `threshold` a candidate with CANDIDATE_RECALL."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= CANDIDATE_RECALL:
            best = (bands, rows)
    return best


def _greedy(keys: np.ndarray, sigs: np.ndarray, threshold: float, jaccard: Jaccard) -> list[Cluster]:
    """Visit examples in order; remove one when it matches an earlier *kept* one."""
    buckets: dict[int, list[int]] = {}
    clusters: dict[int, Cluster] = {}
    lowest: dict[int, float] = {}
    empty: list[int] = []
    for j, row in enumerate(keys.tolist()):
        candidates = set().union(*[buckets.get(key, empty) for key in row])
        match = _best_match(j, candidates, sigs, threshold, jaccard) if candidates else None
        if match is None:
            for key in row:
                bucket = buckets.setdefault(key, [])
                if len(bucket) < MAX_BUCKET:
                    bucket.append(j)
            continue
        kept, sim = match
        clusters.setdefault(kept, Cluster(kept)).removed.append(j)
        lowest[kept] = min(sim, lowest.get(kept, 1.0))
    return [Cluster(k, c.removed, lowest[k]) for k, c in sorted(clusters.items())]


def _best_match(
    j: int, candidates: set[int], sigs: np.ndarray, threshold: float, jaccard: Jaccard
) -> tuple[int, float] | None:
    """A kept candidate whose exact Jaccard with j reaches the threshold.

    Candidates are tried most similar first by MinHash estimate (computed
    for all at once), so j joins the cluster it resembles most and the
    first exact check usually settles it; hopeless ones are never checked."""
    ids = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
    estimate = np.count_nonzero(sigs[ids] == sigs[j], axis=1) / sigs.shape[1]
    hopeful = estimate >= threshold - ESTIMATE_MARGIN
    ids, estimate = ids[hopeful], estimate[hopeful]
    for i in ids[np.lexsort((ids, -estimate))][:MAX_CHECKS].tolist():
        if (sim := jaccard(i, j)) >= threshold:
            return i, sim
    return None


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted, unique hash arrays."""
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


# --- MinHash ---------------------------------------------------------------------------


def signatures(texts: Sequence[str], num_perm: int = 128, k: int = 5) -> np.ndarray:
    """MinHash signatures, one row of `num_perm` uint32 per text.

    Permutation p maps a 32-bit shingle hash x to the top half of
    (a_p * x + b_p) mod 2**64: multiply-add-shift hashing, a 2-independent
    family, evaluated for all permutations at once.
    """
    rng = np.random.default_rng(_SEED)
    a = (rng.integers(0, 2**64, num_perm, dtype=np.uint64) | np.uint64(1))[:, None]
    b = rng.integers(0, 2**64, num_perm, dtype=np.uint64)[:, None]
    pieces, owner = _pieces(texts, k)
    out = np.full((len(pieces), num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    for first, batch in _batches(pieces):
        hashes, starts = _shingle_hashes(batch, k)
        _min_into(out[first : first + len(batch)], hashes >> np.uint64(32), starts, a, b)
    sigs = (out >> np.uint64(32)).astype(np.uint32)
    if len(pieces) == len(texts):
        return sigs
    return np.minimum.reduceat(sigs, np.flatnonzero(np.diff(owner, prepend=-1)), axis=0)


def _pieces(texts: Sequence[str], k: int) -> tuple[list[str], np.ndarray]:
    """Texts longer than a batch cut into pieces that share k-1 characters, so every shingle is in a
    piece; the minimum over pieces is the text's minimum. Hashing a text costs ~60 bytes a character,
    which for one 15 MB answer was most of a gigabyte; a piece bounds it."""
    pieces, owner = [], []
    for i, text in enumerate(texts):
        for lo in range(0, max(len(text) - k + 1, 1), _CHARS_PER_BATCH):
            pieces.append(text[lo : lo + _CHARS_PER_BATCH + k - 1])
            owner.append(i)
    return pieces, np.asarray(owner, dtype=np.int64)


def _shingle_set(text: str, k: int) -> np.ndarray:
    """Sorted unique shingle hashes of one text, hashed piece by piece (see `_pieces`)."""
    pieces, _ = _pieces([text], k)
    return np.unique(np.concatenate([_shingle_hashes([p], k)[0] for p in pieces]))


def _batches(texts: Sequence[str]) -> Iterator[tuple[int, Sequence[str]]]:
    """Runs of texts of about _CHARS_PER_BATCH characters, to bound memory."""
    first, size = 0, 0
    for i, text in enumerate(texts):
        size += len(text)
        if size >= _CHARS_PER_BATCH:
            yield first, texts[first : i + 1]
            first, size = i + 1, 0
    if first < len(texts):
        yield first, texts[first:]


def _min_into(out: np.ndarray, x: np.ndarray, starts: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """out[d] = min over text d's shingles of a*x+b, a cache-sized block at a
    time; a block may cut a text, so each block's minima are merged in."""
    ends = np.append(starts[1:], x.size)
    buf = np.empty((a.shape[0], _SHINGLES_PER_BLOCK), dtype=np.uint64)
    for lo in range(0, x.size, _SHINGLES_PER_BLOCK):
        hi = min(lo + _SHINGLES_PER_BLOCK, x.size)
        d0 = np.searchsorted(ends, lo, side="right")
        d1 = np.searchsorted(starts, hi, side="left")
        v = buf[:, : hi - lo]
        np.multiply(a, x[lo:hi], out=v)
        v += b
        local = np.maximum(starts[d0:d1], lo) - lo
        np.minimum(out[d0:d1], np.minimum.reduceat(v, local, axis=1).T, out=out[d0:d1])


def _shingle_hashes(texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every k-character shingle, text after text, and where
    each text's run starts. A text shorter than k is one (padded) shingle."""
    padded = [t if len(t) >= k else t.ljust(k, "\0") for t in texts]
    lengths = np.fromiter(map(len, padded), dtype=np.int64, count=len(padded))
    codes = np.frombuffer("".join(padded).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    codes = codes.astype(np.uint64)
    n = codes.size - k + 1
    h = codes[:n].copy()
    for j in range(1, k):
        h *= _M64
        h += codes[j : j + n]
    counts = lengths - k + 1
    starts = np.cumsum(counts) - counts
    offsets = np.cumsum(lengths) - lengths
    return _mix(h[np.arange(counts.sum()) + np.repeat(offsets - starts, counts)]), starts


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (text, band); equal keys put two texts in one bucket.
    The band number is hashed in, so one dict can hold every band's buckets."""
    keys = np.broadcast_to(np.arange(bands, dtype=np.uint64), (sigs.shape[0], bands)).copy()
    for r in range(rows):
        keys *= _M64
        keys += sigs[:, r : bands * rows : rows].astype(np.uint64)
    return _mix(keys)
