"""Compiled kernels of the theory sandbox (numba): the gmm model's EM, W₂ and
draws, and the categorical model's draws and measurements.

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
(``collapse.theory.gmm._em_block`` and ``w2_distance(compiled=False)``,
``ReferenceQuantile.__call__``, ``mixture_draw_numpy``,
``collapse.theory.categorical.entropy_of_counts``, ...).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

_LOG_2PI = math.log(2.0 * math.pi)
_CHUNK = 64  # rows per prange iteration: work buffers are allocated once per chunk


# ----------------------------------------------------------------- helpers
@intrinsic
def _float_bits(typingctx, value):
    """The bits of a float64 as an int64 (a bitcast; vectorizes)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _bits_float(typingctx, value):
    """The float64 whose bits are the int64 (a bitcast; vectorizes)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k·_LN2_HI is exact for |k| < 2¹¹
_LN2_LO = 1.90821492927058770002e-10
_EXP_SHIFT = 4503599627370496.0 + 1023.0  # 2⁵² + the exponent bias: k + this has k + 1023 in its low bits


@njit(cache=True, inline="always")
def exp_nonpositive(x):
    """eˣ for x ≤ 0, branch-free so that a loop calling it vectorizes.

    x is clamped at −708 (e⁻⁷⁰⁸ ≈ 3e−308, the normal range); x = k·ln 2 + r
    with |r| ≤ ln 2 / 2 (Cody–Waite), eʳ by its Taylor polynomial of degree 13
    (truncation error below 2e−18) and 2ᵏ built in the exponent bits. Relative
    error below 4e−16 (a test compares it with ``np.exp``)."""
    x = max(x, -708.0)
    k = np.floor(x * _LOG2E + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    # Σ rⁱ/i! for i ≤ 13 by Estrin's scheme: pairs, then powers r², r⁴, r⁸ (a
    # dependency chain a third of Horner's, which the vector loop is bound by)
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    p01 = 1.0 + r
    p23 = 0.5 + r * (1.0 / 6.0)
    p45 = 1.0 / 24.0 + r * (1.0 / 120.0)
    p67 = 1.0 / 720.0 + r * (1.0 / 5040.0)
    p89 = 1.0 / 40320.0 + r * (1.0 / 362880.0)
    p1011 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0)
    p1213 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0)
    q0 = p01 + p23 * r2
    q1 = p45 + p67 * r2
    q2 = p89 + p1011 * r2
    p = (q0 + q1 * r4) + (q2 + p1213 * r4) * r8
    return p * _bits_float(_float_bits(k + _EXP_SHIFT) << 52)


# ---------------------------------------------------------------- gmm: EM
@njit(cache=True, error_model="numpy")
def _em2_trial(row, w, mu, var, iters, tol, floor, buf):
    """EM for one two-component mixture on the points ``row`` (N,), from the
    parameters ``w``, ``mu``, ``var`` (2,) each, updated in place; returns the
    number of iterations used. ``buf`` (8, B): work rows, B ≤ N.

    The iteration of ``collapse.theory.gmm._em_block`` for C = 2 in float64:
    with Lᵢ = ln wᵢ − ½ln(2πvᵢ) − dᵢ²/2vᵢ (dᵢ = x − μᵢ) and m = L₀ − L₁, the
    responsibility of the likelier component is 1/(1 + e^−|m|) and of the
    other e^−|m|/(1 + e^−|m|), and ln(w₀N₀ + w₁N₁) = max(L₀, L₁) + ln(1 + e^−|m|);
    the factors 1 + e^−|m| ∈ (1, 2] are multiplied up (at most 2ᴮ) and one log
    taken per block of B points. The M-step's sums are taken around the
    current means (Σrᵢdᵢ, Σrᵢdᵢ²), so a narrow component's variance carries
    no cancellation: μᵢ += Σrᵢdᵢ/nᵢ, vᵢ = max(Σrᵢdᵢ²/nᵢ − (Σrᵢdᵢ/nᵢ)², floor).
    A component that lost every point (nᵢ ≤ 1e−8) keeps its mean and variance;
    wᵢ = max(nᵢ/N, 1e−300). The mean log-likelihood belongs to the parameters
    before the step: a trial whose step gained less than ``tol``, or whose
    step was the ``iters``-th, keeps the new parameters and stops.

    The first loop over a block (no reductions, :func:`exp_nonpositive`)
    vectorizes; the second sums in point order."""
    n = row.size
    nb = buf.shape[1]
    b_top, b_fac, b_r0, b_r1 = buf[0], buf[1], buf[2], buf[3]
    b_a0, b_a1, b_q0, b_q1 = buf[4], buf[5], buf[6], buf[7]
    w0, w1, m0, m1, v0, v1 = w[0], w[1], mu[0], mu[1], var[0], var[1]
    prev = -np.inf
    it = 0
    for it in range(1, iters + 1):
        c0 = math.log(w0) - 0.5 * (_LOG_2PI + math.log(v0))
        c1 = math.log(w1) - 0.5 * (_LOG_2PI + math.log(v1))
        h0 = -0.5 / v0
        h1 = -0.5 / v1
        top = 0.0
        logs = 0.0
        n0 = n1 = s10 = s11 = s20 = s21 = 0.0
        for s in range(0, n, nb):
            cnt = min(nb, n - s)
            for j in range(cnt):
                xi = row[s + j]
                d0 = xi - m0
                d1 = xi - m1
                q0 = d0 * d0
                q1 = d1 * d1
                l0 = q0 * h0 + c0
                l1 = q1 * h1 + c1
                m = l0 - l1
                first = m >= 0.0
                e = exp_nonpositive(-abs(m))
                big = 1.0 / (1.0 + e)
                small = e * big
                r0 = big if first else small
                r1 = small if first else big
                b_top[j] = l0 if first else l1
                b_fac[j] = 1.0 + e
                b_r0[j] = r0
                b_r1[j] = r1
                b_a0[j] = r0 * d0
                b_a1[j] = r1 * d1
                b_q0[j] = r0 * q0
                b_q1[j] = r1 * q1
            prod = 1.0
            for j in range(cnt):
                top += b_top[j]
                prod *= b_fac[j]
                n0 += b_r0[j]
                n1 += b_r1[j]
                s10 += b_a0[j]
                s11 += b_a1[j]
                s20 += b_q0[j]
                s21 += b_q1[j]
            logs += math.log(prod)
        ll = (top + logs) / n
        if n0 > 1e-8:
            shift = s10 / n0
            m0 += shift
            v0 = max(s20 / n0 - shift * shift, floor)
        if n1 > 1e-8:
            shift = s11 / n1
            m1 += shift
            v1 = max(s21 / n1 - shift * shift, floor)
        w0 = max(n0 / n, 1e-300)
        w1 = max(n1 / n, 1e-300)
        if ll - prev < tol:
            break
        prev = ll
    w[0], w[1], mu[0], mu[1], var[0], var[1] = w0, w1, m0, m1, v0, v1
    return it


@njit(cache=True, parallel=True, error_model="numpy")
def em2_rows(x, w, mu, var, iters, tol, floor, used):
    """Two-component EM (:func:`_em2_trial`) on every row of ``x`` (K, N)
    from the parameters ``w``, ``mu``, ``var`` (K, 2) each, updated in place;
    ``used`` (K,) gets each row's iterations. Rows run in parallel."""
    k, n = x.shape
    nb = min(max(n, 1), 512)
    for c in prange((k + _CHUNK - 1) // _CHUNK):
        buf = np.empty((8, nb))
        for t in range(c * _CHUNK, min(k, (c + 1) * _CHUNK)):
            used[t] = _em2_trial(x[t], w[t], mu[t], var[t], iters, tol, floor, buf)


@njit(cache=True, parallel=True, error_model="numpy")
def variance_rows(x, floor, out):
    """out[r] = max(Σ(x − x̄)²/N, floor) for every row of x (K, N): EM's starting variance."""
    k, n = x.shape
    for r in prange(k):
        s = 0.0
        for i in range(n):
            s += x[r, i]
        mean = s / n
        v = 0.0
        for i in range(n):
            d = x[r, i] - mean
            v += d * d
        out[r] = max(v / n, floor)


@njit(cache=True, inline="always")
def _mixture_cross(wa, ma, va, wb, mb, vb):
    """∫ f_a f_b = Σ_ij wa_i wb_j N(ma_i − mb_j; 0, va_i + vb_j) for two 1-D mixtures."""
    total = 0.0
    for i in range(wa.size):
        for j in range(wb.size):
            s = va[i] + vb[j]
            d = ma[i] - mb[j]
            total += wa[i] * wb[j] * (math.exp(-(d * d) / (2.0 * s)) / math.sqrt(2.0 * math.pi * s))
    return total


@njit(cache=True, parallel=True, error_model="numpy")
def l2sq_rows(w, mu, var, w0, mu0, var0, out):
    """out[r] = max(∫(f_r − g_r)², 0) between the mixtures (w, mu, var)[r] and
    (w0, mu0, var0)[r] (each (K, C)): ``collapse.theory.gmm.l2sq_mixtures``."""
    k = w.shape[0]
    for r in prange(k):
        ff = _mixture_cross(w[r], mu[r], var[r], w[r], mu[r], var[r])
        fg = _mixture_cross(w[r], mu[r], var[r], w0[r], mu0[r], var0[r])
        gg = _mixture_cross(w0[r], mu0[r], var0[r], w0[r], mu0[r], var0[r])
        out[r] = max(ff - 2.0 * fg + gg, 0.0)


# ---------------------------------------------------------------- gmm: W₂
@njit(cache=True, error_model="numpy", inline="always")
def ndtr(a):
    """Φ(a), the standard normal distribution function (scipy's formula)."""
    x = a * 0.7071067811865476
    z = abs(x)
    if z < 0.7071067811865476:
        return 0.5 + 0.5 * math.erf(x)
    y = 0.5 * math.erfc(z)
    return 1.0 - y if x > 0 else y


_TAIL = 2.0 ** -7  # probabilities below this, or above 1 − this, are keyed on a log scale


@njit(cache=True, inline="always")
def quantile_key(q, keys):
    """A monotone (non-decreasing) integer key of a probability q, for the
    index of a quantile table; ``keys`` = (body buckets B, mantissa bits m,
    lowest tail key, tail keys T). The body [2⁻⁷, 1 − 2⁻⁷] falls in B equal
    buckets (keys T .. T + B − 1); each tail is keyed on the bits of q, or of
    1 − q, shifted to keep the exponent and m mantissa bits (2ᵐ keys per
    factor 2 of probability: positive floats order as their bits), clamped to
    T keys; so a few table points share a key in the tails too, where the
    table's probabilities crowd."""
    nbody, mbits, key_lo, ntail = keys[0], keys[1], keys[2], keys[3]
    if q < _TAIL:
        return min(max((_float_bits(q) >> (52 - mbits)) - key_lo, 0), ntail - 1)
    if q > 1.0 - _TAIL:
        tail = min(max((_float_bits(1.0 - q) >> (52 - mbits)) - key_lo, 0), ntail - 1)
        return ntail + nbody + (ntail - 1 - tail)
    return ntail + min(np.int64((q - _TAIL) * (nbody / (1.0 - 2.0 * _TAIL))), nbody - 1)


@njit(cache=True)
def quantile_index(xp, keys):
    """first[k] = #{j : key(xp[j]) < k} for every key k (K + 1 entries)."""
    nk = 2 * keys[3] + keys[0]
    first = np.zeros(nk + 1, dtype=np.int64)
    for j in range(xp.size):
        first[quantile_key(xp[j], keys) + 1] += 1
    for k in range(1, nk + 1):
        first[k] += first[k - 1]
    return first


def quantile_table(xp: np.ndarray, fp: np.ndarray, body: int = 1 << 14, mbits: int = 7
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(table, first, keys) for :func:`interp_indexed` from np.interp's xp
    (strictly increasing probabilities) and fp: xp and fp side by side (P, 2),
    the index :func:`quantile_index`, and the keys' parameters: ``body`` equal
    buckets in [2⁻⁷, 1 − 2⁻⁷], 2^``mbits`` keys per factor 2 in each tail
    from the table's smallest tail probability on (smaller ones share the
    first key). On ``collapse.theory.gmm``'s 40,001-point table at most six
    points share a key."""
    xp = np.ascontiguousarray(xp, dtype=np.float64)
    table = np.ascontiguousarray(np.stack([xp, np.asarray(fp, dtype=np.float64)], axis=1))
    tails = np.concatenate([xp, 1.0 - xp])
    tails = tails[(tails > 0) & (tails < _TAIL)]
    lowest = max(float(tails.min()) if tails.size else _TAIL, 2.0**-1022)
    key_lo = int(np.array([lowest]).view(np.int64)[0] >> (52 - mbits))
    ntail = int(np.array([_TAIL]).view(np.int64)[0] >> (52 - mbits)) - key_lo + 1
    keys = np.array([body, mbits, key_lo, ntail], dtype=np.int64)
    return table, quantile_index(xp, keys), keys


@njit(cache=True, error_model="numpy", inline="always")
def interp_indexed(q, table, first, keys):
    """``np.interp(q, xp, fp)`` for one point, ``table`` (P, 2) holding the
    strictly increasing xp in [0, 1] and fp side by side, with np.interp's
    arithmetic: (fp[j+1] − fp[j])/(xp[j+1] − xp[j])·(q − xp[j]) + fp[j] on the
    interval xp[j] ≤ q < xp[j + 1] (and its fallbacks for infinite slopes),
    fp[0] below xp[0], fp[−1] from xp[−1] on, NaN for NaN.

    The interval: every j whose key (:func:`quantile_key`) is below q's has
    xp[j] < q, every j whose key is above has xp[j] > q, so it lies between
    first[k] − 1 and first[k + 1] − 1 (:func:`quantile_index`), a few points
    apart: three steps of a branch-free binary search cover eight, a plain
    one any more."""
    last = table.shape[0] - 1
    if q < table[0, 0]:
        return table[0, 1]
    if q >= table[last, 0]:
        return table[last, 1]
    if q != q:
        return q
    k = quantile_key(q, keys)
    lo = max(first[k] - 1, 0)
    hi = min(first[k + 1] - 1, last - 1)
    if hi - lo > 7:
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if table[mid, 0] <= q:
                lo = mid
            else:
                hi = mid - 1
    else:
        j = min(lo + 4, hi)
        lo = j if table[j, 0] <= q else lo
        j = min(lo + 2, hi)
        lo = j if table[j, 0] <= q else lo
        j = min(lo + 1, hi)
        lo = j if table[j, 0] <= q else lo
    x0, y0, x1, y1 = table[lo, 0], table[lo, 1], table[lo + 1, 0], table[lo + 1, 1]
    slope = (y1 - y0) / (x1 - x0)
    value = slope * (q - x0) + y0
    if value != value:  # np.interp's fallbacks where the slope is infinite
        value = slope * (q - x1) + y1
        if value != value and y0 == y1:
            value = y0
    return value


@njit(cache=True, parallel=True, error_model="numpy")
def interp_rows(q, table, first, keys, out):
    """:func:`interp_indexed` of every element of ``q`` (K, P) into ``out``."""
    k, p = q.shape
    for r in prange(k):
        for i in range(p):
            out[r, i] = interp_indexed(q[r, i], table, first, keys)


@njit(cache=True, parallel=True, error_model="numpy")
def w2_rows(w, mu, var, gh_t, gh_w, gh_phi, table, first, keys, out):
    """W₂ between each row's mixture (w, mu, var: (K, C)) and the reference
    whose quantile function is tabulated (``table``, ``first``, ``keys``: see
    :func:`interp_indexed`):
    W₂² = Σ_a w_a Σ_j gh_w[j]·(x_aj − F₀⁻¹(F(x_aj)))² at the Gauss–Hermite
    nodes x_aj = μ_a + σ_a·gh_t[j], F(x_aj) = w_a·Φ(gh_t[j]) + Σ_{b≠a} w_b·Φ((x_aj − μ_b)/σ_b),
    as ``collapse.theory.gmm.w2_distance`` computes it in numpy (the same
    terms; the sum over nodes in node order, numpy's a matrix product)."""
    k, c = w.shape
    nodes = gh_t.size
    for chunk in prange((k + _CHUNK - 1) // _CHUNK):
        sd = np.empty(c)
        for r in range(chunk * _CHUNK, min(k, (chunk + 1) * _CHUNK)):
            for a in range(c):
                sd[a] = math.sqrt(var[r, a])
            total = 0.0
            for a in range(c):
                acc = 0.0
                for j in range(nodes):
                    x = mu[r, a] + sd[a] * gh_t[j]
                    cdf = w[r, a] * gh_phi[j]
                    for b in range(c):
                        if b != a:
                            cdf = cdf + w[r, b] * ndtr((x - mu[r, b]) / sd[b])
                    d = x - interp_indexed(cdf, table, first, keys)
                    acc += d * d * gh_w[j]
                total += acc * w[r, a]
            out[r] = math.sqrt(max(total, 0.0))


# -------------------------------------------------------------- gmm: draws
@njit(cache=True, parallel=True, error_model="numpy")
def mixture_draw_rows(u, z, cum, mu, sd, out):
    """x = μ_c + σ_c·z with c the number of cumulative weights ``cum`` (K, C)
    (all but the last) that u exceeds: one draw per element of u, z (K, n)."""
    k, n = u.shape
    c = cum.shape[1]
    for r in prange(k):
        for i in range(n):
            comp = 0
            for j in range(c - 1):
                comp += u[r, i] > cum[r, j]
            out[r, i] = mu[r, comp] + sd[r, comp] * z[r, i]


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
