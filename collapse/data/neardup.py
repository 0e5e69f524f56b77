"""Near-duplicate detection: MinHash LSH over token shingles.

A text becomes the set of its token ``n``-grams ("shingles"; tokens are
identifier/number runs and single punctuation characters, so indentation and
spacing do not matter), each hashed to 32 bits. Each set gets a MinHash
signature with ``datasketch``'s permutations (the values equal
``datasketch.MinHash(num_perm, seed, hashfunc=int).update_batch(set)``; they
are computed for many sets at once in numpy, checked against datasketch on
first use, and fall back to datasketch itself if its scheme is one this
module does not know). Signatures are cut into the bands and rows that
``datasketch.MinHashLSH`` picks for the Jaccard ``threshold`` (8 bands of
16 rows at 128 permutations and 0.85); two texts whose signatures agree on a
whole band are candidates. A candidate counts as a near duplicate only when
the *exact* Jaccard similarity of the two shingle sets reaches the
threshold, so the decision is exact for every pair LSH proposes; LSH only
decides which pairs are looked at (a pair at Jaccard 0.95 is proposed with
probability > 0.99 at the defaults, one at 0.85 about half the time, one
at 0.5 practically never).

:class:`NearDupIndex` is greedy in insertion order: :meth:`NearDupIndex.add`
keeps a text unless it is a near duplicate of one already kept, so one
representative per cluster survives, the first in corpus order.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

__all__ = ["TOKEN_RE", "shingle_sets", "jaccard", "minhash_signatures", "lsh_bands", "NearDupIndex"]

#: Tokens of the shingles: identifier/number runs and single other characters; whitespace is skipped.
TOKEN_RE = re.compile(r"\w+|[^\w\s]")

_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant of the polynomial shingle hash
_SHIFT = np.uint64(32)
_MULT_INT, _MASK64 = int(_MULT), (1 << 64) - 1


class _TokenIds(dict):
    """Token → 64-bit hash (two CRC32s), memoized: stable across processes and runs."""

    def __missing__(self, token: str) -> int:
        b = token.encode("utf-8")
        v = self[token] = zlib.crc32(b) | (zlib.crc32(b[::-1], 0x5BD1E995) << 32)
        return v


_TOKEN_IDS = _TokenIds()


def shingle_sets(texts: Sequence[str], ngram: int = 5) -> list[np.ndarray]:
    """The shingle set of each text: sorted unique uint32 hashes of its token ``ngram``-grams.

    A text with fewer than ``ngram`` tokens is one shingle (all its tokens);
    a text without tokens is the empty set. The hash of an n-gram is a
    polynomial in its token hashes (mod 2^64), top 32 bits kept; computed for
    all texts at once.
    """
    ids_of = _TOKEN_IDS.__getitem__
    flat: list[int] = []
    offsets = [0]
    for t in texts:
        flat.extend(map(ids_of, TOKEN_RE.findall(t)))
        offsets.append(len(flat))
    ids = np.array(flat, dtype=np.uint64)
    n_all = len(ids)
    grams = np.zeros(max(n_all - ngram + 1, 0), dtype=np.uint64)
    if len(grams):
        for k in range(ngram):
            grams = grams * _MULT + ids[k : n_all - ngram + 1 + k]
    grams32 = (grams >> _SHIFT).astype(np.uint32)
    out = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        if b - a >= ngram:
            out.append(np.unique(grams32[a : b - ngram + 1]))
        elif b > a:
            h = 0
            for v in flat[a:b]:  # the same polynomial, in Python integers mod 2^64
                h = (h * _MULT_INT + v) & _MASK64
            out.append(np.array([h >> 32], dtype=np.uint32))
        else:
            out.append(np.zeros(0, dtype=np.uint32))
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted unique hash arrays (two empty sets: 1)."""
    if not len(a) and not len(b):
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


_MH_CHUNK = 1 << 16  # shingles permuted at once (x num_perm values in memory)
_VECTOR_OK: dict[tuple[int, int], bool] = {}


def _proto(num_perm: int, seed: int):
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=seed, hashfunc=int)


def _permute(hv: np.ndarray, proto) -> np.ndarray | None:
    """datasketch's permuted values of shingle hashes ``hv``: one row per permutation, one column per hash."""
    a, b = proto.permutations
    scheme = getattr(proto, "scheme", "legacy")
    if scheme == "affine32":
        from datasketch.minhash import _fmix

        h = _fmix(hv.astype(np.uint32), 32)
        return a[:, None].astype(np.uint32) * h[None, :] + b[:, None].astype(np.uint32)
    if scheme == "legacy":
        prime, top = np.uint64((1 << 61) - 1), np.uint64((1 << 32) - 1)
        return ((a[:, None] * hv.astype(np.uint64)[None, :] + b[:, None]) % prime) & top
    return None


def _signatures_vectorized(sets: Sequence[np.ndarray], proto) -> np.ndarray | None:
    n = len(sets)
    sig = np.tile(proto.hashvalues, (n, 1))
    lens = np.array([len(s) for s in sets], dtype=np.int64)
    nonempty = np.flatnonzero(lens)
    if not len(nonempty):
        return sig
    flat = np.concatenate([sets[i] for i in nonempty])
    ends = np.cumsum(lens[nonempty])
    starts = ends - lens[nonempty]
    i = 0
    while i < len(nonempty):
        # the documents whose shingles fit in one chunk (at least one document)
        j = max(int(np.searchsorted(ends, starts[i] + _MH_CHUNK, side="right")), i + 1)
        lo, hi = starts[i], ends[j - 1]
        phv = _permute(flat[lo:hi], proto)
        if phv is None:
            return None
        # (contiguous rows: reducing along the last axis is several times faster)
        sig[nonempty[i:j]] = np.minimum.reduceat(phv, starts[i:j] - lo, axis=1).T.astype(sig.dtype)
        i = j
    return sig


def minhash_signatures(sets: Sequence[np.ndarray], num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """The datasketch MinHash ``hashvalues`` of each shingle set, one row per set."""
    from datasketch import MinHash

    proto = _proto(num_perm, seed)
    key = (num_perm, seed)
    if key not in _VECTOR_OK:
        probe = [np.array([1, 2, 3, 4000000000], dtype=np.uint32), np.array([7], dtype=np.uint32)]
        fast = _signatures_vectorized(probe, proto)
        ref = [m.hashvalues for m in MinHash.generator(probe, num_perm=num_perm, seed=seed, hashfunc=int)]
        _VECTOR_OK[key] = fast is not None and all(np.array_equal(f, r) for f, r in zip(fast, ref))
    if _VECTOR_OK[key]:
        sig = _signatures_vectorized(sets, proto)
        if sig is not None:
            return sig
    return np.array([m.hashvalues for m in MinHash.generator(sets, num_perm=num_perm, seed=seed, hashfunc=int)]
                    ).reshape(len(sets), num_perm)


def lsh_bands(threshold: float, num_perm: int) -> list[tuple[int, int]]:
    """The (start, end) signature ranges of the bands ``datasketch.MinHashLSH`` uses for this threshold."""
    from datasketch import MinHashLSH

    return [tuple(r) for r in MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges]


class NearDupIndex:
    """A growing set of kept texts that answers "is this a near duplicate?".

    ``threshold`` is the Jaccard similarity of shingle sets at or above which
    two texts are near duplicates; ``num_perm`` the MinHash permutations;
    ``ngram`` the shingle length in tokens; ``seed`` the MinHash seed (the
    index is deterministic for a given seed).
    """

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, ngram: int = 5, seed: int = 1):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold, self.num_perm, self.ngram, self.seed = threshold, num_perm, ngram, seed
        self.bands = lsh_bands(threshold, num_perm)
        self.tables: list[dict[bytes, list[int]]] = [{} for _ in self.bands]
        self.sets: list[np.ndarray] = []
        self.labels: list[object] = []
        self.empty: int | None = None  # texts without tokens are all one set

    def _band_keys(self, sig: np.ndarray) -> list[list[bytes]]:
        keys = []
        for start, end in self.bands:
            block = np.ascontiguousarray(sig[:, start:end])
            keys.append(block.view(np.dtype((np.void, block.dtype.itemsize * (end - start)))).ravel().tolist())
        return keys

    def _prepare(self, texts: Sequence[str]) -> tuple[list[np.ndarray], list[list[bytes]]]:
        sets = shingle_sets(texts, self.ngram)
        keys = self._band_keys(minhash_signatures(sets, self.num_perm, self.seed)) if sets else [[] for _ in self.bands]
        return sets, keys

    def _match(self, s: np.ndarray, keys: list[bytes]) -> int | None:
        """Position of the earliest kept text this set near-duplicates, or None."""
        if not len(s):
            return self.empty
        cands: set[int] = set()
        for table, key in zip(self.tables, keys):
            hit = table.get(key)
            if hit:
                cands.update(hit)
        for j in sorted(cands):
            if jaccard(s, self.sets[j]) >= self.threshold:
                return j
        return None

    def _insert(self, s: np.ndarray, keys: list[bytes], label: object) -> None:
        j = len(self.sets)
        self.sets.append(s)
        self.labels.append(label)
        if not len(s):
            if self.empty is None:
                self.empty = j
            return
        for table, key in zip(self.tables, keys):
            table.setdefault(key, []).append(j)

    def add(self, texts: Sequence[str], labels: Sequence[object] | None = None,
            only_check: bool = False) -> list[object | None]:
        """Offer ``texts`` in order; each is kept unless it near-duplicates a kept one.

        Returns, per text, None when it was kept, else the label of the kept
        text it duplicates (labels default to insertion positions). With
        ``only_check`` nothing is kept: each text is checked against the
        index as it was (texts offered together are not compared with each
        other).
        """
        sets, keys = self._prepare(texts)
        labels = list(labels) if labels is not None else [len(self.sets) + i for i in range(len(texts))]
        out: list[object | None] = []
        for i, (s, label) in enumerate(zip(sets, labels)):
            k = [band[i] for band in keys]
            j = self._match(s, k)
            if j is not None:
                out.append(self.labels[j])
            else:
                out.append(None)
                if not only_check:
                    self._insert(s, k, label)
        return out

    def extend(self, texts: Sequence[str], labels: Sequence[object] | None = None) -> None:
        """Keep every text, near duplicates included (for reference pools already deduplicated)."""
        sets, keys = self._prepare(texts)
        labels = list(labels) if labels is not None else [len(self.sets) + i for i in range(len(texts))]
        for i, (s, label) in enumerate(zip(sets, labels)):
            self._insert(s, [band[i] for band in keys], label)

    def __len__(self) -> int:
        return len(self.sets)
