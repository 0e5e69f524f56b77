"""Compiled kernels of the theory sandbox (numba): the categorical model's
draws, counts and measurements.

Only ``collapse.theory`` modules import this one, and only inside the
functions that call a kernel, so ``import collapse`` and the CLI never load
numba. Every kernel is ``@njit(cache=True)``: the first call in a fresh
checkout compiles (seconds) and writes the machine code beside this file; later
processes load it.

Determinism: random numbers are drawn by numpy Generators outside the kernels
and passed in, and every kernel works on each trial (row) on its own, in a
fixed order of operations, with no reduction across rows; so the results do
not depend on the number of threads (``NUMBA_NUM_THREADS``) that run the
``prange`` loops. No kernel uses ``fastmath``: sums run in the written order.

Each kernel has a known-answer or reference test in
``tests/test_theory_kernels.py`` (and ``tests/test_theory.py``); the numpy
implementations they replace stay in the package as the references
(``collapse.theory.categorical.entropy_of_counts``,
``collapse.theory.common.per_trial_bincount``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_CHUNK = 64  # rows per prange iteration: work buffers are allocated once per chunk


# ------------------------------------------------------------- categorical
@njit(cache=True)
def _row_categories(cum, pos, out, table):
    """out[i] = #{v : cum[v] ≤ pos[i]} for one row: cumulative counts ``cum``
    (W,), positions pos < cum[-1] (a negative one gives 0). ``table``
    (B + 1,): work space.

    Positions fall in B buckets, bucket(x) = ⌊x·M/2³²⌋ with M = ⌊B·2³²/total⌋
    (integer arithmetic, monotone in x, the same function everywhere).
    table[b] = #{v < W − 1 : bucket(cum[v]) < b}: every category counted ends
    in an earlier bucket than any position of bucket b, so before the
    position, and table[b] is a start no later than its category; from there a
    position steps past the ends at or before it (about W/B of them: two steps
    without a branch, then a loop that rarely runs)."""
    wdt = cum.size
    total = cum[wdt - 1]
    nb = table.size - 1
    mult = (np.int64(nb) << 32) // max(total, 1)
    for b in range(nb + 1):
        table[b] = 0
    for v in range(wdt - 1):  # categories ending in each bucket, at table[bucket + 1]
        table[min((cum[v] * mult) >> 32, nb - 1) + 1] += 1
    for b in range(1, nb + 1):  # ... summed: those ending in an earlier bucket
        table[b] += table[b - 1]
    for i in range(pos.size):
        p = np.int64(pos[i])
        j = table[min(max((p * mult) >> 32, 0), nb)]
        j += cum[j] <= p
        j += cum[j] <= p
        while cum[j] <= p:
            j += 1
        out[i] = j


@njit(cache=True, parallel=True)
def categories_rows(cum, pos, out):
    """:func:`_row_categories` for every row: cumulative counts (K, W) int64,
    positions (K, n) → out (K, n)."""
    k, wdt = cum.shape
    for c in prange((k + _CHUNK - 1) // _CHUNK):
        table = np.empty(2 * wdt + 1, dtype=np.int64)
        for r in range(c * _CHUNK, min(k, (c + 1) * _CHUNK)):
            _row_categories(cum[r], pos[r], out[r], table)


@njit(cache=True, parallel=True)
def sample_rows(counts, pick, out):
    """The token at position pick (K, n) of each row's tokens laid out in
    category order, from the counts (K, V): :func:`_row_categories` of the
    row's cumulative counts."""
    k, v = counts.shape
    for c in prange((k + _CHUNK - 1) // _CHUNK):
        table = np.empty(2 * v + 1, dtype=np.int64)
        cum = np.empty(v, dtype=np.int64)
        for r in range(c * _CHUNK, min(k, (c + 1) * _CHUNK)):
            acc = 0
            for j in range(v):
                acc += counts[r, j]
                cum[j] = acc
            _row_categories(cum, pick[r], out[r], table)


@njit(cache=True, parallel=True)
def bincount_rows(idx, out):
    """out[r, v] = #{i : idx[r, i] = v}: ``np.bincount`` of every row (out zeroed here)."""
    k, n = idx.shape
    length = out.shape[1]
    for r in prange(k):
        for v in range(length):
            out[r, v] = 0
        for i in range(n):
            out[r, idx[r, i]] += 1


@njit(cache=True, parallel=True)
def count_summary_rows(c, tail, total, squares, nonzero, tail_sum):
    """Per row of counts c (K, V): Σc, Σc², #{c > 0} and Σ of the columns
    where ``tail`` (V,) is true, exact in int64; returns the largest count."""
    k, v = c.shape
    top = np.zeros(k, dtype=np.int64)
    for r in prange(k):
        t = s = z = a = m = 0
        for j in range(v):
            x = c[r, j]
            t += x
            s += x * x
            z += x != 0
            if tail[j]:
                a += x
            m = max(m, x)
        total[r], squares[r], nonzero[r], tail_sum[r], top[r] = t, s, z, a, m
    return top.max() if k else 0


@njit(cache=True)
def _block_sum(a, lo, n):
    """Σ a[lo:lo + n] for n ≤ 128 in numpy's order: eight running sums."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    end = n - n % 8
    while i < end:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def pairwise_sum(a):
    """Σ a (a contiguous float64 array) in numpy's pairwise order
    (``np.add.reduce``): blocks of ≤ 128 summed by :func:`_block_sum`, longer
    runs split in two (the first half a multiple of 8 long) and the halves'
    sums added, so the result is numpy's bit for bit. The recursion runs on an
    explicit stack (numba's cache does not keep recursive functions)."""
    n = a.size
    if n <= 128:
        return _block_sum(a, 0, n)
    los = np.empty(64, dtype=np.int64)
    lens = np.empty(64, dtype=np.int64)
    stage = np.empty(64, dtype=np.int64)
    vals = np.empty(64)
    depth = 0
    nv = 0
    los[0], lens[0], stage[0] = 0, n, 0
    while depth >= 0:
        lo, m = los[depth], lens[depth]
        if m <= 128:
            vals[nv] = _block_sum(a, lo, m)
            nv += 1
            depth -= 1
            continue
        half = m // 2
        half -= half % 8
        if stage[depth] == 0:  # the first half
            stage[depth] = 1
            depth += 1
            los[depth], lens[depth], stage[depth] = lo, half, 0
        elif stage[depth] == 1:  # the second half
            stage[depth] = 2
            depth += 1
            los[depth], lens[depth], stage[depth] = lo + half, m - half, 0
        else:  # both halves done
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
            depth -= 1
    return vals[0]


@njit(cache=True, parallel=True)
def table_sum_rows(c, table, out):
    """out[r] = Σ_v table[c[r, v]], summed as ``np.take(table, c).sum(axis=1)`` sums (bit for bit)."""
    k, v = c.shape
    for b in prange((k + _CHUNK - 1) // _CHUNK):
        vals = np.empty(v)
        for r in range(b * _CHUNK, min(k, (b + 1) * _CHUNK)):
            for j in range(v):
                vals[j] = table[c[r, j]]
            out[r] = pairwise_sum(vals)
