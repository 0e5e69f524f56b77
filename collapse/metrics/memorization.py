"""Memorization and attribution: verbatim copies of reference data in samples.

A sample *copies* at span length ``k`` when it contains ``k`` consecutive
tokens that also occur, contiguously and inside one document, in the
reference data (the human train split, or the samples of earlier
generations). This is the verbatim notion of memorization of Carlini et al.
2021 ("Extracting Training Data from Large Language Models") and 2023
("Quantifying Memorization Across Neural Language Models", 50-token
extractable spans), and the exact-substring matching used to filter and
attribute code in open code-model data sets (Lee et al. 2022, "Deduplicating
Training Data Makes Language Models Better"; The Stack, Kocetkov et al. 2022,
and StarCoder's attribution tooling, Li et al. 2023).

:class:`CopyIndex` is a hashed n-gram index: every ``k``-gram of the
reference that lies inside one document gets a 64-bit polynomial hash
(computed for all positions at once by doubling, vectorised in numpy), and the
hashes, packed with their positions, are sorted once. A query looks its
``k``-grams up with ``np.searchsorted`` and checks each candidate against the
real tokens, so hash collisions never produce a false match. Building costs one
sort per span length, querying one sort of the query grams plus a merge-like
search: near-linear in reference plus query size.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from collapse.metrics.registry import MetricContext, register

_U64 = np.uint64
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_BASE = 0xA0761D6478BD642F  # odd multiplier of the polynomial hash
_MOD = 1 << 64
_CHUNK = 1 << 22  # elements per gather when comparing token windows


def _mix(tokens: np.ndarray) -> np.ndarray:
    """splitmix64 of each token id: spreads small ids over all 64 bits before hashing."""
    z = tokens.astype(np.uint64)
    z += _GOLDEN
    z ^= z >> _U64(30)
    z *= _MIX1
    z ^= z >> _U64(27)
    z *= _MIX2
    z ^= z >> _U64(31)
    return z


def gram_hashes(tokens: np.ndarray, k: int) -> np.ndarray:
    """Polynomial hash (mod 2**64) of the ``k``-gram starting at every position
    ``0 .. len(tokens) - k`` (an empty array when ``k > len(tokens)``).

    ``h_k[i] = sum_j m(t[i + j]) * B**(k - 1 - j)``, built by doubling:
    ``h_{a+b}[i] = h_a[i] * B**b + h_b[i + a]``, so O(n log k) vector work and
    at most three live arrays."""
    n = len(tokens)
    if k < 1:
        raise ValueError(f"span length must be >= 1, got {k}")
    if n < k:
        return np.empty(0, dtype=np.uint64)
    acc: np.ndarray | None = None
    acc_len = 0
    p, p_len = _mix(tokens), 1
    rest = k
    while True:
        if rest & 1:
            if acc is None:
                acc, acc_len = p, p_len
            else:
                m = n - (acc_len + p_len) + 1
                acc = acc[:m] * _U64(pow(_BASE, p_len, _MOD)) + p[acc_len:acc_len + m]
                acc_len += p_len
        rest >>= 1
        if not rest:
            break
        m = n - 2 * p_len + 1
        p = p[:m] * _U64(pow(_BASE, p_len, _MOD)) + p[p_len:p_len + m]
        p_len *= 2
    assert acc is not None and len(acc) == n - k + 1
    return acc


def _equal_windows(a: np.ndarray, pa: np.ndarray, b: np.ndarray, pb: np.ndarray, k: int) -> np.ndarray:
    """``a[pa[i]:pa[i]+k] == b[pb[i]:pb[i]+k]`` for each i (chunked gathers)."""
    out = np.empty(len(pa), dtype=bool)
    step = max(1, _CHUNK // k)
    ar = np.arange(k, dtype=np.int64)
    for i in range(0, len(pa), step):
        wa = a[pa[i:i + step, None] + ar]
        wb = b[pb[i:i + step, None] + ar]
        out[i:i + step] = (wa == wb).all(axis=1)
    return out


def _extend(a: np.ndarray, pa: np.ndarray, lim_a: np.ndarray, b: np.ndarray, pb: np.ndarray, lim_b: np.ndarray,
            step: int) -> np.ndarray:
    """How many tokens ``a[pa + step*j] == b[pb + step*j]`` for j = 0, 1, … in a
    row, staying before ``lim`` (step +1, exclusive) or at/after it (step -1)."""
    room = np.minimum(lim_a - pa, lim_b - pb) if step > 0 else np.minimum(pa - lim_a, pb - lim_b) + 1
    room = np.maximum(room, 0)
    out = np.zeros(len(pa), dtype=np.int64)
    active = np.flatnonzero(room > 0)
    width = 8
    while len(active):
        offs = out[active, None] + np.arange(width)
        valid = offs < room[active, None]
        ia = np.where(valid, pa[active, None] + step * offs, 0)
        ib = np.where(valid, pb[active, None] + step * offs, 0)
        eq = (a[ia] == b[ib]) & valid
        full = eq.all(axis=1)
        out[active] += np.where(full, width, np.argmin(eq, axis=1))
        active = active[full]
        width = min(2 * width, 1024)
    return out


class TokenBatch:
    """Token-id sequences as one flat array plus offsets (sequence ``i`` is
    ``tokens[offsets[i]:offsets[i + 1]]``). Gram hashes of a span length are
    computed once and reused by every index the batch is looked up in."""

    def __init__(self, seqs: Sequence[Sequence[int]] | None = None, *, tokens: np.ndarray | None = None,
                 offsets: np.ndarray | None = None):
        if tokens is not None:
            self.tokens = np.asarray(tokens)
            if self.tokens.dtype.kind not in "iu":
                self.tokens = self.tokens.astype(np.int64)
            self.offsets = np.asarray(offsets if offsets is not None else [0, len(self.tokens)], dtype=np.int64)
        else:
            seqs = list(seqs or [])
            lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
            self.offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
            np.cumsum(lengths, out=self.offsets[1:])
            total = int(self.offsets[-1])
            if seqs and all(isinstance(s, np.ndarray) for s in seqs):
                self.tokens = np.concatenate(seqs).astype(np.int64, copy=False)
            else:
                self.tokens = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=total)
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.tokens) or np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets must run from 0 to len(tokens), non-decreasing")
        self._grams: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def seq(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def starts(self, k: int) -> np.ndarray:
        """Flat positions where a ``k``-gram starts that stays inside its sequence (sorted)."""
        c = np.maximum(self.lengths - k + 1, 0)
        total = int(c.sum())
        base = np.repeat(self.offsets[:-1] - (np.cumsum(c) - c), c)
        return base + np.arange(total, dtype=np.int64)

    def hashed(self, k: int, keep: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(starts, 64-bit hashes) of the ``k``-grams inside sequences."""
        if k in self._grams:
            s, h, _ = self._grams[k]
            return s, h
        s = self.starts(k)
        h = gram_hashes(self.tokens, k)[s] if len(s) else np.empty(0, dtype=np.uint64)
        if keep:
            self._grams[k] = (s, h, np.argsort(h))
        return s, h

    def sorted_order(self, k: int) -> np.ndarray:
        """argsort of :meth:`hashed` (searching sorted needles is much faster)."""
        self.hashed(k)
        return self._grams[k][2]


@dataclass
class CopyScan:
    """Which k-grams of a batch occur in the reference, and what they cover."""

    batch: TokenBatch
    k: int
    hit: np.ndarray  # bool per flat position: a k-gram starting here occurs in the reference

    @property
    def covered(self) -> np.ndarray:
        """bool per flat token: inside some matched k-gram."""
        n = len(self.batch.tokens)
        d = np.zeros(n + 1, dtype=np.int32)
        s = np.flatnonzero(self.hit)
        d[s] += 1  # starts are distinct, so plain fancy-index updates suffice
        d[s + self.k] -= 1
        return np.cumsum(d[:n]) > 0

    @property
    def flagged(self) -> np.ndarray:
        """bool per sequence: contains at least one matched k-gram."""
        return self.per_seq(self.hit) > 0

    def per_seq(self, mask: np.ndarray) -> np.ndarray:
        c = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        return c[self.batch.offsets[1:]] - c[self.batch.offsets[:-1]]

    @property
    def rate(self) -> float:
        """Share of sequences flagged (0 for an empty batch)."""
        return float(self.flagged.mean()) if len(self.batch) else 0.0

    @property
    def token_share(self) -> float:
        """Share of all tokens inside a matched k-gram (0 when there are no tokens)."""
        n = len(self.batch.tokens)
        return float(self.covered.sum() / n) if n else 0.0


@dataclass
class Matches:
    """The longest verbatim match of each sequence of a batch (length 0: none of
    at least ``k`` tokens). Positions: ``query_offset`` within the sequence,
    ``doc``/``doc_offset`` in the index; -1 where there is no match."""

    k: int
    length: np.ndarray
    query_offset: np.ndarray
    doc: np.ndarray
    doc_offset: np.ndarray

    @classmethod
    def empty(cls, n: int, k: int) -> "Matches":
        z = np.zeros(n, dtype=np.int64)
        return cls(k, z.copy(), z - 1, z - 1, z - 1)

    def better(self, other: "Matches") -> np.ndarray:
        """Where ``other`` has a strictly longer match than this."""
        return other.length > self.length


class CopyIndex:
    """Hashed k-gram index over token-id documents, answering which query
    positions start a ``k``-token span that occurs in some document, and where
    the longest such match of a query lies.

    One sorted uint64 array per span length packs the hash's top bits with the
    gram's flat position (so grams with equal hash keys are in corpus order);
    grams crossing document boundaries are never indexed. Every hash hit is
    verified against the tokens. ``hash_bits`` narrows the hash (tests use it
    to force collisions); ``max_occurrences`` caps how many occurrences of one
    k-gram :meth:`longest` follows, in corpus order (see there).

    Memory: the tokens (4 bytes each) plus 8 bytes per indexed gram and span
    length, about 100 MB per span length for 10 million tokens."""

    def __init__(self, docs: Sequence[Sequence[int]] | TokenBatch, ks: Sequence[int] = (), *,
                 max_occurrences: int = 32, hash_bits: int = 64):
        batch = docs if isinstance(docs, TokenBatch) else TokenBatch(docs)
        self.offsets = batch.offsets
        t = batch.tokens
        small = len(t) == 0 or (t.min() >= np.iinfo(np.int32).min and t.max() <= np.iinfo(np.int32).max)
        self.tokens = t.astype(np.int32) if small else t
        self._docs = TokenBatch(tokens=self.tokens, offsets=self.offsets)
        self.pos_bits = max(1, int(len(self.tokens)).bit_length())
        if self.pos_bits > 63:
            raise ValueError("index too large")
        self.key_bits = max(0, min(int(hash_bits), 64 - self.pos_bits))
        self.max_occurrences = int(max_occurrences)
        self._keys: dict[int, np.ndarray] = {}
        for k in ks:
            self.build(k)

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def ks(self) -> list[int]:
        return sorted(self._keys)

    def _top(self, h: np.ndarray) -> np.ndarray:
        if self.key_bits == 0:
            return np.zeros(len(h), dtype=np.uint64)
        return h >> _U64(64 - self.key_bits)

    def build(self, k: int) -> np.ndarray:
        """The sorted packed array of span length ``k`` (built on first use)."""
        if k not in self._keys:
            s, h = self._docs.hashed(k, keep=False)
            packed = (self._top(h) << _U64(self.pos_bits)) | s.astype(np.uint64)
            del h
            packed.sort()
            self._keys[k] = packed
        return self._keys[k]

    def _lookup(self, batch: TokenBatch, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query starts, their hash keys, index of the first packed entry with that key)."""
        keys = self.build(k)
        s, h = batch.hashed(k)
        key = self._top(h)
        order = batch.sorted_order(k)
        lo = np.empty(len(s), dtype=np.int64)
        lo[order] = np.searchsorted(keys, key[order] << _U64(self.pos_bits), side="left")
        return s, key, lo

    def hits(self, batch: TokenBatch, k: int) -> np.ndarray:
        """bool per flat position of ``batch``: the ``k``-gram starting there
        (inside its sequence) occurs verbatim inside some indexed document."""
        out = np.zeros(len(batch.tokens), dtype=bool)
        keys = self.build(k)
        if len(keys) == 0:
            return out
        s, key, lo = self._lookup(batch, k)
        pb, mask, n = _U64(self.pos_bits), _U64((1 << self.pos_bits) - 1), len(keys)
        j = 0
        todo = np.flatnonzero(lo < n)
        while len(todo):
            at = lo[todo] + j
            inside = at < n
            todo, at = todo[inside], at[inside]
            entry = keys[at]
            same = (entry >> pb) == key[todo]
            todo, entry = todo[same], entry[same]
            if not len(todo):
                break
            ok = _equal_windows(self.tokens, (entry & mask).astype(np.int64), batch.tokens, s[todo], k)
            out[s[todo[ok]]] = True
            todo = todo[~ok]
            j += 1
        return out

    def scan(self, batch: TokenBatch, k: int) -> CopyScan:
        return CopyScan(batch, k, self.hits(batch, k))

    def locate(self, flat_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(document, offset in it) of flat index positions."""
        doc = np.searchsorted(self.offsets, flat_pos, side="right") - 1
        return doc, flat_pos - self.offsets[doc]

    def longest(self, batch: TokenBatch, k: int, hit: np.ndarray | None = None) -> Matches:
        """The longest verbatim match (>= ``k`` tokens) of each sequence of
        ``batch`` and where it lies; ties go to the earliest query position,
        then the earliest index position.

        Every verified (query position, index position) pair of a matching
        k-gram lies on a diagonal ``index - query``; nearby pairs on one
        diagonal are one contiguous match, which direct comparison extends
        both ways to its full length. Pairs are followed only at every
        ``k - 1``-th position of each run of matching positions (and its
        last), which finds every match of ``2k - 2`` tokens or more; sequences
        whose longest is shorter are redone at every position. Exact unless
        every k-gram along the longest match occurs more than
        ``max_occurrences`` times in the index (then a shorter or equally long
        match may be reported; it is always a real one)."""
        res = Matches.empty(len(batch), k)
        hit = self.hits(batch, k) if hit is None else hit
        hs = np.flatnonzero(hit)
        if not len(hs) or not len(self.build(k)):
            return res
        stride = max(1, k - 1)
        run_start = np.ones(len(hs), dtype=bool)
        run_start[1:] = np.diff(hs) != 1
        last = np.ones(len(hs), dtype=bool)
        last[:-1] = run_start[1:]
        first_pos = hs[run_start][np.cumsum(run_start) - 1]
        picked = hs[((hs - first_pos) % stride == 0) | last]
        self._improve(res, batch, k, picked)
        if stride > 1:
            short = (res.length < 2 * k - 2) & (res.length > 0)
            seq_of = np.searchsorted(batch.offsets, hs, side="right") - 1
            redo = hs[short[seq_of]]
            if len(redo):
                self._improve(res, batch, k, redo)
        return res

    def _improve(self, res: Matches, batch: TokenBatch, k: int, qs: np.ndarray, max_pairs: int = 1 << 22) -> None:
        """Follow the occurrences of the k-grams starting at flat query
        positions ``qs`` and keep, per sequence, the longest maximal match (in place)."""
        keys = self._keys[k]
        s_all, h_all = batch.hashed(k)
        key = self._top(h_all[np.searchsorted(s_all, qs)]) << _U64(self.pos_bits)
        mask = _U64((1 << self.pos_bits) - 1)
        lo = np.searchsorted(keys, key, side="left")
        cnt = np.minimum(np.searchsorted(keys, key | mask, side="right") - lo, self.max_occurrences)
        ends = np.cumsum(cnt)
        i = 0
        while i < len(qs):  # chunks of at most max_pairs pairs (at least one query position)
            j = max(i + 1, int(np.searchsorted(ends, (ends[i - 1] if i else 0) + max_pairs, side="right")))
            c = cnt[i:j]
            rep = np.repeat(np.arange(i, j), c)
            within = np.arange(int(c.sum()), dtype=np.int64) - np.repeat(np.cumsum(c) - c, c)
            p = (keys[lo[rep] + within] & mask).astype(np.int64)
            q = qs[rep]
            ok = _equal_windows(self.tokens, p, batch.tokens, q, k)
            self._extend_and_keep(res, batch, k, q[ok], p[ok])
            i = j

    def _extend_and_keep(self, res: Matches, batch: TokenBatch, k: int, q: np.ndarray, p: np.ndarray) -> None:
        if not len(q):
            return
        d = p - q
        o = np.lexsort((q, d))
        p, q, d = p[o], q[o], d[o]
        new = np.ones(len(q), dtype=bool)  # pairs on one diagonal whose k-grams overlap are one match
        new[1:] = (d[1:] != d[:-1]) | (q[1:] - q[:-1] >= k)
        first = np.flatnonzero(new)
        lastq = q[np.append(first[1:], len(q)) - 1]
        qa, pa = q[first], p[first]
        qb, pb = lastq + k, p[first] + (lastq - qa) + k  # exclusive ends of the verified stretch
        seq = np.searchsorted(batch.offsets, qa, side="right") - 1
        doc = np.searchsorted(self.offsets, pa, side="right") - 1
        back = _extend(batch.tokens, qa - 1, batch.offsets[seq], self.tokens, pa - 1, self.offsets[doc], -1)
        fwd = _extend(batch.tokens, qb, batch.offsets[seq + 1], self.tokens, pb, self.offsets[doc + 1], 1)
        qa, pa = qa - back, pa - back
        length = qb + fwd - qa
        o = np.lexsort((pa, qa, -length, seq))
        seq, qa, pa, length, doc = seq[o], qa[o], pa[o], length[o], doc[o]
        top = np.ones(len(seq), dtype=bool)
        top[1:] = seq[1:] != seq[:-1]
        seq, qa, pa, length, doc = seq[top], qa[top], pa[top], length[top], doc[top]
        qoff, poff = qa - batch.offsets[seq], pa - self.offsets[doc]
        cur = res.length[seq]
        better = (length > cur) | ((length == cur) & ((qoff < res.query_offset[seq]) | (
            (qoff == res.query_offset[seq]) & (pa < self.offsets[np.maximum(res.doc[seq], 0)] + res.doc_offset[seq]))))
        seq = seq[better]
        res.length[seq] = length[better]
        res.query_offset[seq] = qoff[better]
        res.doc[seq] = doc[better]
        res.doc_offset[seq] = poff[better]

    def contains(self, seq: Sequence[int]) -> bool:
        """Whether ``seq`` occurs verbatim inside one indexed document (any length >= 1)."""
        k = len(seq)
        if k == 0:
            return True
        b = TokenBatch([list(seq)])
        return bool(self.hits(b, k)[0])


# ---------------------------------------------------------------------------
# metrics


@dataclass
class _Reference:
    """An index plus how to name its documents in attribution rows."""

    index: CopyIndex
    texts: list[str]
    describe: Callable[[int], dict[str, Any]]  # doc -> fields naming it
    first_line: Callable[[int], int]  # doc -> file line number of the text's first line


def _span_lengths(ctx: MetricContext) -> tuple[int, list[int]]:
    k = int(ctx.setting("copy_k"))
    also = [int(x) for x in ctx.setting("copy_k_also")]
    return k, [x for x in dict.fromkeys(also) if x != k]


def parse_source(source: str | None) -> tuple[str | None, int]:
    """("file", first line) of a ``"file:start-end"`` source; the line is 1 when it does not parse."""
    if not source:
        return None, 1
    path, sep, span = source.rpartition(":")
    if sep and path:
        start = span.split("-", 1)[0]
        if start.isdigit():
            return path, int(start)
    return source, 1


def line_span(text: str, start: int, end: int) -> tuple[int, int]:
    """0-based first and last line of ``text[start:end]``, ignoring whitespace
    at either end (a token that carries the previous line's newline does not
    pull the span up a line)."""
    seg = text[start:end]
    if seg.strip():
        end = start + len(seg.rstrip())
        start = start + (len(seg) - len(seg.lstrip()))
    first = text.count("\n", 0, start)
    last = text.count("\n", 0, max(start, end - 1))
    return first, last


def _offsets(tokenizer: Any, texts: list[str]) -> list[list[tuple[int, int]]]:
    if not texts:
        return []
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [[tuple(o) for o in om] for om in enc["offset_mapping"]]


def _attributions(ctx: MetricContext, ids: TokenBatch, scan: CopyScan, best: Matches, owner: np.ndarray,
                  refs: list[_Reference]) -> list[dict[str, Any]]:
    """One row per sample with a match, longest first: the match and its source lines."""
    flagged = np.flatnonzero(best.length > 0)
    if not len(flagged):
        return []
    covered = scan.per_seq(scan.covered)
    need: dict[int, list[int]] = {}
    for i in flagged:
        need.setdefault(int(owner[i]), []).append(int(best.doc[i]))
    maps: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r, docs in need.items():
        uniq = sorted(set(docs))
        for d, om in zip(uniq, _offsets(ctx.tokenizer, [refs[r].texts[d] for d in uniq])):
            maps[(r, d)] = om
    rows = []
    for i in flagged:
        r, d, off, n = int(owner[i]), int(best.doc[i]), int(best.doc_offset[i]), int(best.length[i])
        ref, om = refs[r], maps[(r, d)]
        text = ref.texts[d]
        if off + n <= len(om):
            c0, c1 = om[off][0], om[off + n - 1][1]
        else:  # the tokenizer disagrees with the index: name the document only
            c0, c1 = 0, 0
        a, b = line_span(text, c0, c1)
        base = ref.first_line(d)
        rows.append({"sample": int(i), "length": n, "sample_token_offset": int(best.query_offset[i]),
                     "sample_tokens": int(ids.lengths[i]), "covered_tokens": int(covered[i]),
                     **ref.describe(d), "line_start": base + a, "line_end": base + b, "token_offset": off,
                     "text": text[c0:c1]})
    rows.sort(key=lambda row: (-row["length"], row["sample"]))
    for rank, row in enumerate(rows):
        row["rank"] = rank
    return rows


def _copy_metrics(samples: list[str], ctx: MetricContext, refs: list[_Reference], prefix: str,
                  artifact: str) -> dict[str, float]:
    k, also = _span_lengths(ctx)
    ids = TokenBatch(ctx.token_ids(samples)) if samples else TokenBatch([])
    out: dict[str, float] = {}
    scans: dict[int, CopyScan] = {}
    per_ref_hits: list[np.ndarray] = []
    for kk in [k, *also]:
        hit = np.zeros(len(ids.tokens), dtype=bool)
        for ref in refs:
            h = ref.index.hits(ids, kk)
            if kk == k:
                per_ref_hits.append(h)
            hit |= h
        scans[kk] = CopyScan(ids, kk, hit)
        suffix = "" if kk == k else f"_k{kk}"
        out[f"{prefix}rate{suffix}"] = scans[kk].rate
        out[f"{prefix}token_share{suffix}"] = scans[kk].token_share
    best = Matches.empty(len(ids), k)
    owner = np.full(len(ids), -1, dtype=np.int64)
    for r, (ref, h) in enumerate(zip(refs, per_ref_hits)):
        m = ref.index.longest(ids, k, h)
        up = best.better(m)
        for name in ("length", "query_offset", "doc", "doc_offset"):
            getattr(best, name)[up] = getattr(m, name)[up]
        owner[up] = r
    lengths = best.length[best.length > 0]
    out[f"{prefix}longest_max"] = float(lengths.max()) if len(lengths) else 0.0
    out[f"{prefix}longest_median"] = float(np.median(lengths)) if len(lengths) else 0.0
    if ctx.artifact_dir is not None:
        ctx.write_jsonl(artifact, _attributions(ctx, ids, scans[k], best, owner, refs))
    return out


def _human_reference(ctx: MetricContext, trained_only: bool = True) -> _Reference:
    """The index of the human train texts: those a model of the run trained on so far
    (``ctx.human_trained`` leading texts), or the whole split; each built once per run and size."""
    everything = list(ctx.human_train_texts or [])
    n = len(everything) if not trained_only or ctx.human_trained is None else min(ctx.human_trained, len(everything))
    key = f"memorization.human.{n}"
    got = ctx.shared.get(key)
    if got is None or got[0] is not ctx.human_train_texts:
        from collapse.lm.train import tokenize_texts  # torch: imported when used

        texts = everything[:n]
        sources = list(ctx.human_train_sources or [None] * len(everything))[:n]
        index = CopyIndex(tokenize_texts(ctx.tokenizer, texts) if texts else [])
        got = (ctx.human_train_texts, index, texts, sources, [parse_source(s) for s in sources])
        ctx.shared[key] = got
    _, index, texts, sources, parsed = got

    def describe(d: int) -> dict[str, Any]:
        return {"human_index": d, "file": parsed[d][0], "source": sources[d]}

    return _Reference(index, texts, describe, lambda d: parsed[d][1])


def _synthetic_references(ctx: MetricContext) -> list[_Reference]:
    """One index per earlier generation, each built once per run."""
    history = ctx.load("synthetic_history") or {}
    refs = []
    for g in sorted(history):
        texts = list(history[g])
        key = f"memorization.synthetic.{g}"
        got = ctx.shared.get(key)
        if got is None or got[0] != texts:
            from collapse.lm.train import tokenize_texts  # torch: imported when used

            got = (texts, CopyIndex(tokenize_texts(ctx.tokenizer, texts) if texts else []))
            ctx.shared[key] = got
        refs.append(_Reference(got[1], texts, lambda d, g=g: {"generation": int(g), "source_sample": d},
                               lambda d: 1))
    return refs


@register("verbatim_copy")
def verbatim_copy(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Verbatim copying of the human code the models of the run trained on
    (memorization, Carlini et al. 2021, 2023; verbatim-copy attribution as in
    The Stack / StarCoder): the generation-0 human pool, plus the fresh chunks
    taken so far under ``fresh``. ``copy_rate``: share of samples with a span
    of at least ``copy_k`` tokens that occurs inside one such human function
    (``corpus_copy`` checks the whole train split); ``copy_token_share``: share
    of all sample tokens covered by such spans; both in [0, 1], also at each
    length of ``copy_k_also`` (``copy_rate_k16``, ``copy_token_share_k16``, …).
    ``copy_longest_max`` / ``copy_longest_median``: the longest match in
    tokens, the maximum and the median over flagged samples (0 when none).
    Each flagged sample's longest match (length, text, human file and line
    span, sample index) goes to ``copies.jsonl``, longest first. Hashed n-gram
    index over the human data, built once per run; near-linear cost."""
    return _copy_metrics(samples, ctx, [_human_reference(ctx)], "copy_", "copies.jsonl")


@register("corpus_copy")
def corpus_copy(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Verbatim copying of the whole human train split, whether or not a model
    of the run trained on it: the same definitions as ``verbatim_copy``
    (Carlini et al. 2021, 2023), keys ``corpus_copy_rate``,
    ``corpus_copy_token_share`` (also at each length of ``copy_k_also``) and
    ``corpus_copy_longest_max`` / ``_median``, in [0, 1] and tokens;
    attributions in ``corpus_copies.jsonl``. Beside ``copy_rate`` it separates
    memorization of the training data from code the corpus repeats anyway."""
    return _copy_metrics(samples, ctx, [_human_reference(ctx, trained_only=False)], "corpus_copy_",
                         "corpus_copies.jsonl")


@register("synthetic_copy")
def synthetic_copy(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Verbatim copying of earlier generations' samples: the self-consumption
    counterpart of ``verbatim_copy`` (same definitions, Carlini et al. 2021,
    2023). ``synthetic_copy_rate`` and ``synthetic_copy_token_share`` in
    [0, 1] (0 at generation 0: nothing earlier), also at each length of
    ``copy_k_also``; ``synthetic_copy_longest_max`` / ``_median`` in tokens.
    Attributions (generation and sample index of the source) go to
    ``synthetic_copies.jsonl``. One hashed n-gram index per earlier
    generation, built once per run; near-linear cost."""
    return _copy_metrics(samples, ctx, _synthetic_references(ctx), "synthetic_copy_", "synthetic_copies.jsonl")
