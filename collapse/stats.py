"""Statistics over seeds that never overclaim: t-based confidence intervals,
Welch's test, Hedges' g and Holm's adjustment, with the refusals written down.

Policy (the same in every figure and table):

- An interval is the t-based 95 % confidence interval of a mean,
  ``mean ± t(0.975, n − 1) · sd / √n``; a difference of two means gets
  Welch's interval with the Welch–Satterthwaite degrees of freedom.
- With fewer than :data:`MIN_SEEDS` (3) values in a group there is no
  interval, no test and no band: two seeds give an interval too wide to say
  anything and a variance too noisy to test with. The caller says why.
- A test whose two groups both have zero variance has no p-value (the t
  statistic is 0/0 or ±∞: the seeds agree exactly, which says nothing about
  the spread the test needs).
- Hedges' g is the standardized difference with the small-sample correction
  ``J = 1 − 3 / (4(n_a + n_b) − 9)``; undefined when the pooled sd is 0.
- Many tests in one report: Holm's step-down adjustment of the p-values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_SEEDS = 3
LEVEL = 0.95
NAN = float("nan")


def _clean(values) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float
    lo: float  # NaN when n < MIN_SEEDS
    hi: float


def mean_ci(values, level: float = LEVEL, min_n: int = MIN_SEEDS) -> MeanCI:
    """The mean and its t-based confidence interval (NaN bounds below ``min_n`` values)."""
    from scipy import stats

    a = _clean(values)
    n = len(a)
    if n == 0:
        return MeanCI(0, NAN, NAN, NAN)
    m = float(a.mean())
    if n < min_n:
        return MeanCI(n, m, NAN, NAN)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * a.std(ddof=1) / math.sqrt(n))
    return MeanCI(n, m, m - half, m + half)


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: the difference of means with Welch's interval and test, and Hedges' g."""

    n_a: int
    n_b: int
    diff: float  # mean(a) − mean(b)
    lo: float
    hi: float
    t: float
    df: float
    p: float
    hedges_g: float
    note: str = ""  # why a field is NaN ("" when nothing is)


def compare(a, b, level: float = LEVEL, min_n: int = MIN_SEEDS) -> Comparison:
    """Welch's two-sided test and interval for mean(a) − mean(b), and Hedges' g."""
    from scipy import stats

    a, b = _clean(a), _clean(b)
    na, nb = len(a), len(b)
    diff = float(a.mean() - b.mean()) if na and nb else NAN
    if na < min_n or nb < min_n:
        return Comparison(na, nb, diff, NAN, NAN, NAN, NAN, NAN, NAN, f"fewer than {min_n} seeds: no test")
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    # Identical floats can leave a variance of rounding error (1e-33): below 1e-12 of the values' scale it is 0.
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-300)
    va, vb = (0.0 if math.sqrt(v) < 1e-12 * scale else v for v in (va, vb))
    se = math.sqrt(va + vb)
    pooled = math.sqrt(((na - 1) * va * na + (nb - 1) * vb * nb) / (na + nb - 2))
    g = diff / pooled * (1 - 3 / (4 * (na + nb) - 9)) if pooled > 0 else NAN
    if se == 0:
        return Comparison(na, nb, diff, diff, diff, NAN, NAN, NAN, g, "no variance across seeds: no test")
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    t = diff / se
    half = float(stats.t.ppf(0.5 + level / 2, df) * se)
    p = float(2 * stats.t.sf(abs(t), df))
    return Comparison(na, nb, diff, diff - half, diff + half, float(t), float(df), p, float(g))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, NAN)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


__all__ = ["MIN_SEEDS", "LEVEL", "MeanCI", "mean_ci", "Comparison", "compare", "holm"]
