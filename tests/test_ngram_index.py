"""The hashed n-gram index (collapse.metrics.ngram_index) against hand-built answers and a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from collapse.metrics.ngram_index import CopyIndex, TokenBatch, gram_hashes

# ---------------------------------------------------------------- brute force


def brute_hits(docs: list[list[int]], seqs: list[list[int]], k: int) -> list[np.ndarray]:
    grams = {tuple(d[i:i + k]) for d in docs for i in range(len(d) - k + 1)}
    return [np.array([tuple(s[i:i + k]) in grams for i in range(len(s) - k + 1)], dtype=bool) for s in seqs]


def brute_rate_share(docs, seqs, k) -> tuple[float, float]:
    hits = brute_hits(docs, seqs, k)
    flagged = [h.any() for h in hits]
    covered = 0
    for s, h in zip(seqs, hits):
        c = np.zeros(len(s), dtype=bool)
        for i in np.flatnonzero(h):
            c[i:i + k] = True
        covered += int(c.sum())
    total = sum(len(s) for s in seqs)
    return (float(np.mean(flagged)) if seqs else 0.0), (covered / total if total else 0.0)


def brute_longest(docs, s) -> int:
    """Longest common substring of ``s`` with any single document."""
    best = 0
    for d in docs:
        prev = [0] * (len(d) + 1)
        for a in s:
            cur = [0] * (len(d) + 1)
            for j, b in enumerate(d):
                if a == b:
                    cur[j + 1] = prev[j] + 1
                    best = max(best, cur[j + 1])
            prev = cur
    return best


# ---------------------------------------------------------------- the index on plain ids


def test_gram_hashes_match_direct_polynomial():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 50, 40)
    for k in (1, 2, 3, 5, 8, 13, 16):
        h = gram_hashes(t, k)
        assert len(h) == len(t) - k + 1
        for i in range(len(h)):  # equal windows <=> equal hashes here (no collisions at this size)
            for j in range(len(h)):
                assert (h[i] == h[j]) == bool(np.array_equal(t[i:i + k], t[j:j + k]))
    assert len(gram_hashes(t, 41)) == 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("hash_bits", [64, 3, 0])
def test_index_matches_brute_force(seed, hash_bits):
    """Rate, token share, per-position hits and longest match equal a brute-force
    reference; with 3 or 0 hash bits almost every lookup collides, so this is also
    the check that only verified tokens count."""
    rng = np.random.default_rng(seed)
    vocab = 3 + seed % 3
    docs = [list(rng.integers(0, vocab, rng.integers(0, 30))) for _ in range(6)]
    seqs = []
    for _ in range(8):
        s = list(rng.integers(0, vocab, rng.integers(0, 25)))
        if rng.random() < 0.5 and docs[0]:
            d = docs[int(rng.integers(0, len(docs)))]
            a = int(rng.integers(0, len(d) + 1))
            s[len(s) // 2:len(s) // 2] = d[a:a + int(rng.integers(0, 15))]
        seqs.append(s)
    # with few hash bits one key range holds every gram: follow all of them
    idx = CopyIndex(docs, hash_bits=hash_bits, max_occurrences=32 if hash_bits == 64 else 10**6)
    capped = CopyIndex(docs, max_occurrences=1)
    batch = TokenBatch(seqs)
    for k in (2, 3, 4, 7):
        scan = idx.scan(batch, k)
        want = brute_hits(docs, seqs, k)
        for i, w in enumerate(want):
            got = scan.hit[batch.offsets[i]:batch.offsets[i + 1]]
            assert np.array_equal(got[:len(w)], w) and not got[len(w):].any()
        rate, share = brute_rate_share(docs, seqs, k)
        assert scan.rate == pytest.approx(rate) and scan.token_share == pytest.approx(share)
        m = idx.longest(batch, k, scan.hit)
        for i, s in enumerate(seqs):
            lcs = brute_longest(docs, s)
            assert m.length[i] == (lcs if lcs >= k else 0)
            if m.length[i]:
                n, qo, d, do = int(m.length[i]), int(m.query_offset[i]), int(m.doc[i]), int(m.doc_offset[i])
                assert s[qo:qo + n] == docs[d][do:do + n]
            # following one occurrence per k-gram: a real match, never longer than the longest
            c = capped.longest(batch, k)
            n, qo, d, do = int(c.length[i]), int(c.query_offset[i]), int(c.doc[i]), int(c.doc_offset[i])
            assert (n >= k) == (lcs >= k) and n <= lcs
            if n:
                assert s[qo:qo + n] == docs[d][do:do + n]


def test_long_copy_of_repeated_boilerplate():
    """A block repeated in many documents (more often than max_occurrences): the
    full copy is found, at its first occurrence, and the hits are all there."""
    rng = np.random.default_rng(5)
    block = list(rng.integers(0, 500, 90))
    docs = [list(rng.integers(1000, 2000, 20)) + block + list(rng.integers(1000, 2000, 20)) for _ in range(60)]
    docs.insert(0, block[:50])  # a partial copy first
    idx = CopyIndex(docs, max_occurrences=4)
    q = TokenBatch([[7777] * 5 + block + [8888] * 5, [9999] * 3 + block[10:50] + [9999] * 3])
    scan = idx.scan(q, 16)
    assert scan.hit.sum() == (90 - 15) + (40 - 15)
    m = idx.longest(q, 16, scan.hit)
    assert m.length.tolist() == [90, 40]
    assert (m.doc[0], m.doc_offset[0], m.query_offset[0]) == (1, 20, 5)
    assert (m.doc[1], m.doc_offset[1], m.query_offset[1]) == (0, 10, 3)


def test_span_crossing_documents_does_not_count():
    a, b = list(range(100, 130)), list(range(200, 230))
    idx = CopyIndex([a, b])
    q = TokenBatch([a[-10:] + b[:10]])  # occurs in the concatenation a+b only
    assert not idx.hits(q, 16).any()
    assert idx.hits(q, 10).sum() == 2  # the two 10-token halves
    assert not idx.contains(a[-10:] + b[:10]) and idx.contains(a[5:25])


def test_hash_collision_is_rejected():
    """With no hash bits every gram shares one key; the answer must not change."""
    docs = [[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]]
    q = TokenBatch([[1, 2, 3, 4, 9, 9], [3, 2, 1, 0], [7, 7, 7, 7]])
    for bits in (64, 0):
        idx = CopyIndex(docs, hash_bits=bits)
        assert (idx.key_bits == 0) == (bits == 0)
        hit = idx.hits(q, 4)
        assert np.flatnonzero(hit).tolist() == [0]  # only [1,2,3,4]; [3,2,1,0] and [7,7,7,7] are not there
        m = idx.longest(q, 4, hit)
        assert m.length.tolist() == [4, 0, 0] and m.doc[0] == 0 and m.doc_offset[0] == 0


def test_planted_copy_on_ids():
    rng = np.random.default_rng(1)
    docs = [list(rng.integers(0, 1000, 120) + 1000 * j) for j in range(8)]  # disjoint vocabularies per doc
    novel = lambda n: list(rng.integers(50_000, 60_000, n))  # noqa: E731
    planted = novel(30) + docs[3][50:90] + novel(30)  # 40 tokens of document 3
    short = novel(10) + docs[5][0:31] + novel(10)  # 31 tokens: below 32
    plain = novel(70)
    idx = CopyIndex(docs, ks=(16, 32, 64))
    batch = TokenBatch([plain, planted, short])
    s32, s16, s64 = idx.scan(batch, 32), idx.scan(batch, 16), idx.scan(batch, 64)
    assert s32.flagged.tolist() == [False, True, False]
    assert s16.flagged.tolist() == [False, True, True]
    assert s64.flagged.tolist() == [False, False, False]
    total = 70 + 100 + 51
    assert s32.token_share == pytest.approx(40 / total)
    assert s16.token_share == pytest.approx((40 + 31) / total)
    m = idx.longest(batch, 32, s32.hit)
    assert m.length.tolist() == [0, 40, 0]
    assert (m.doc[1], m.doc_offset[1], m.query_offset[1]) == (3, 50, 30)


def test_empty_inputs():
    idx = CopyIndex([])
    b = TokenBatch([[1, 2, 3]])
    assert not idx.hits(b, 2).any() and idx.longest(b, 2).length.tolist() == [0]
    empty = TokenBatch([])
    s = CopyIndex([[1, 2, 3]]).scan(empty, 2)
    assert s.rate == 0.0 and s.token_share == 0.0
