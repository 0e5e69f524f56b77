"""Statistics over seeds: known answers, scipy where it has the same thing, and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from collapse.stats import compare, holm, mean_ci


def test_mean_ci_by_hand():
    r = mean_ci([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sd sqrt(5/3), t(0.975, 3) = 3.182446
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert (r.n, r.mean) == (4, 2.5) and r.lo == pytest.approx(2.5 - half) and r.hi == pytest.approx(2.5 + half)


def test_fewer_than_three_seeds_give_no_interval_and_no_test():
    r = mean_ci([1.0, 2.0])
    assert r.n == 2 and r.mean == 1.5 and math.isnan(r.lo) and math.isnan(r.hi)
    c = compare([1.0, 2.0], [3.0, 4.0, 5.0])
    assert c.diff == -2.5 and math.isnan(c.p) and math.isnan(c.lo) and "fewer than 3 seeds" in c.note
    assert mean_ci([float("nan"), 1.0, 2.0, 3.0]).n == 3  # missing values do not count


def test_welch_matches_scipy_and_its_interval_by_hand():
    a, b = [5.1, 4.9, 5.6, 5.3, 5.0], [4.2, 4.8, 4.1, 4.5]
    c = compare(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert c.t == pytest.approx(ref.statistic) and c.p == pytest.approx(ref.pvalue)
    va, vb = np.var(a, ddof=1) / 5, np.var(b, ddof=1) / 4
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 3)
    half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert c.df == pytest.approx(df) and c.lo == pytest.approx(c.diff - half) and c.hi == pytest.approx(c.diff + half)
    assert c.diff == pytest.approx(np.mean(a) - np.mean(b))


def test_hedges_g_by_hand():
    a, b = [1.0, 2.0, 3.0], [3.0, 4.0, 5.0]
    # pooled sd 1, d = -2, J = 1 - 3 / (4 * 6 - 9) = 0.8
    assert compare(a, b).hedges_g == pytest.approx(-1.6)


def test_zero_variance_groups_give_no_p_value():
    c = compare([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert c.diff == 0.0 and math.isnan(c.p) and math.isnan(c.t) and "no variance" in c.note
    c = compare([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    assert c.diff == 1.0 and math.isnan(c.p) and math.isnan(c.hedges_g)


def test_identical_floats_whose_mean_rounds_count_as_zero_variance():
    a = [0.2, 0.2, 0.2]  # 0.2 is not a binary fraction: the mean rounds and var() is ~1e-33, not 0
    assert np.var(a, ddof=1) > 0
    r = compare(a, [0.1, 0.1, 0.1])
    assert math.isnan(r.p) and "no variance" in r.note and r.diff == pytest.approx(0.1)


def test_holm_by_hand():
    adj = holm([0.01, 0.04, float("nan"), 0.03, 0.20])
    # four tests: sorted 0.01, 0.03, 0.04, 0.20 → 0.04, 0.09, max(0.09, 0.08) = 0.09, max(0.09, 0.20) = 0.20
    assert adj[0] == pytest.approx(0.04) and adj[3] == pytest.approx(0.09) and adj[1] == pytest.approx(0.09)
    assert adj[4] == pytest.approx(0.20) and math.isnan(adj[2])
    assert holm([0.6, 0.7]).tolist() == [1.0, 1.0]
