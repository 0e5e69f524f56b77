"""The compiled kernels of the theory sandbox (``collapse.theory.kernels``, numba).

Each kernel against a known answer or against the numpy code it replaced, at
small sizes. The first run in a fresh checkout compiles the kernels (seconds
each); later runs load numba's cache.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtr

from collapse.theory import kernels
from collapse.theory.categorical import (
    CategoricalModel,
    bincount_rows,
    categories_at,
    count_measures,
    entropy_of_counts,
    sample_counts,
)
from collapse.theory.common import per_trial_bincount
from collapse.theory.gmm import (
    GMMModel,
    ReferenceQuantile,
    l2sq_mixtures,
    mixture_draw_numpy,
    w2_distance,
)

PKG = Path(__file__).resolve().parents[1] / "collapse"


def _elementwise(fn, x: np.ndarray) -> np.ndarray:
    """A scalar kernel of ``collapse.theory.kernels`` applied to every element of x."""
    from numba import njit

    @njit
    def run(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])

    out = np.empty_like(x)
    run(x, out)
    return out


def _mixtures(rng: np.random.Generator, k: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = rng.dirichlet(np.ones(c), size=k)
    mu = 4.0 * (np.arange(c) - (c - 1) / 2) + rng.normal(0.0, 1.0, (k, c))
    var = rng.uniform(0.05, 3.0, (k, c))
    return w, mu, var


# ----------------------------------------------------------------- helpers

def test_exp_nonpositive_matches_numpy():
    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.random(20000) * 800, -rng.random(20000) * 3, -rng.random(2000) * 1e-8,
                        [0.0, -0.0, -1e-300, -708.0, -707.9, -745.0, -1e10, -np.inf]])
    out = _elementwise(kernels.exp_nonpositive, x)
    expect = np.exp(np.maximum(x, -708.0))  # clamped at e⁻⁷⁰⁸: the normal range
    np.testing.assert_allclose(out, expect, rtol=5e-16, atol=0)
    assert out[np.flatnonzero(x == 0.0)].tolist() == [1.0, 1.0]


def test_pairwise_sum_is_numpys_bit_for_bit():
    rng = np.random.default_rng(1)
    for n in [*range(0, 260), 1000, 1023, 1025, 4097, 100_003]:
        a = rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6, n)
        assert kernels.pairwise_sum(a) == (np.add.reduce(a) if n else 0.0), n


# ------------------------------------------------------------- categorical

@pytest.mark.parametrize("k,v,n", [(300, 100, 6100), (200, 7, 50), (40, 300, 100_000), (10, 1, 5)])
def test_count_measures_are_the_numpy_formulas_bit_for_bit(k, v, n):
    model = CategoricalModel(k, 1, categories=v)
    c = np.random.default_rng(v).multinomial(n, model.p0, size=k).astype(np.int64)
    c[:3] = 0
    c[:3, -1] = n  # absorbed rows: one category left
    got = count_measures(c, model.tail)
    total = c.sum(axis=1).astype(np.float64)
    live = np.count_nonzero(c, axis=1)
    expect = {
        "diversity": 1.0 - np.einsum("kv,kv->k", c, c) / total**2,
        "surviving": live.astype(np.float64),
        "tail_mass": c[:, model.tail].sum(axis=1) / total,
        "entropy": entropy_of_counts(c, total),
        "absorbed": (live == 1).astype(np.float64),
    }
    for q, values in expect.items():
        np.testing.assert_array_equal(got[q], values, err_msg=q)


def test_bincount_and_the_position_search_are_exact():
    rng = np.random.default_rng(2)
    idx = rng.integers(0, 13, size=(300, 77)).astype(np.int32)
    np.testing.assert_array_equal(bincount_rows(idx, 13), per_trial_bincount(idx, 13))
    # long runs of empty categories, and a few categories holding most positions
    counts = np.zeros((50, 400), dtype=np.int64)
    counts[:, 0], counts[:, 399], counts[:, 200] = 5000, 1, rng.integers(0, 3, 50)
    counts[:, 1:399:37] += rng.integers(0, 4, (50, 11))
    cum = np.cumsum(counts, axis=1)
    pos = np.concatenate([rng.integers(0, cum[:, -1:], size=(50, 300)), cum[:, :-1] - 1, cum[:, :-1],
                          np.full((50, 1), -1)], axis=1)
    pos = np.minimum(pos, cum[:, -1:] - 1)
    brute = (cum[:, None, :] <= pos[:, :, None]).sum(axis=2)
    np.testing.assert_array_equal(categories_at(cum, pos), brute)
    drawn = sample_counts(counts, 300, np.random.default_rng(3))
    pick = np.random.default_rng(3).integers(0, int(cum[0, -1]), size=(50, 300), dtype=np.int32)
    np.testing.assert_array_equal(drawn, (cum[:, None, :] <= pick[:, :, None]).sum(axis=2))


# --------------------------------------------------------------------- gmm

def test_interpolation_is_np_interp_exactly():
    ref = ReferenceQuantile(np.full(2, 0.5), np.array([-2.0, 2.0]), np.ones(2))
    rng = np.random.default_rng(4)
    u = np.concatenate([rng.random((40, 100)), rng.random((40, 100)) ** 12, 1.0 - rng.random((40, 100)) ** 12])
    u[0, :8] = [0.0, 1.0, ref.u[0], ref.u[-1], ref.u[1234], -0.5, 1.5, 2.0**-7]
    u[1, :ref.u.size // 400] = ref.u[::400][: ref.u.size // 400]  # the table's own points
    np.testing.assert_array_equal(ref.compiled(u), ref(u))
    assert np.isnan(ref.compiled(np.array([[np.nan]])))[0, 0]
    # another table: three components, unequal weights, on a coarse grid
    other = ReferenceQuantile(np.array([0.2, 0.5, 0.3]), np.array([-5.0, 0.0, 1.0]), np.array([0.3, 2.0, 0.01]), points=3001)
    np.testing.assert_array_equal(other.compiled(u), other(u))


@pytest.mark.parametrize("c", [1, 2, 3])
def test_w2_and_l2_kernels_match_numpy(c):
    rng = np.random.default_rng(c)
    w, mu, var = _mixtures(rng, 500, c)
    model = GMMModel(10, 1, components=c)
    np.testing.assert_allclose(w2_distance(w, mu, var, model.ref_quantile),
                               w2_distance(w, mu, var, model.ref_quantile, compiled=False), rtol=1e-12, atol=1e-13)
    w0, mu0, var0 = _mixtures(rng, 500, c)
    np.testing.assert_allclose(l2sq_mixtures(w, mu, var, w0, mu0, var0, compiled=True),
                               l2sq_mixtures(w, mu, var, w0, mu0, var0), rtol=1e-12, atol=1e-15)
    # Φ by scipy's formula (libm's erf/erfc for cephes': the same to 1e-13 relative, out to Φ(−37) ≈ 6e−300)
    z = np.linspace(-37, 37, 7401)
    np.testing.assert_allclose(_elementwise(kernels.ndtr, z), ndtr(z), rtol=1e-13, atol=0)


@pytest.mark.parametrize("c", [1, 2, 3])
def test_mixture_draws_are_the_numpy_draws(c):
    rng = np.random.default_rng(10 + c)
    w, mu, var = _mixtures(rng, 300, c)
    model = GMMModel(300, 1, components=c)
    drawn = model._draw(w, mu, var, 70, np.random.default_rng(5))
    g = np.random.default_rng(5)
    u, z = g.random((300, 70)), g.standard_normal((300, 70))
    np.testing.assert_array_equal(drawn, mixture_draw_numpy(u, z, w, mu, var))


def test_em_variance_start_and_a_known_fit():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((50, 37)) * rng.uniform(0.1, 10, (50, 1)) + 1e6 * (rng.random((50, 1)) < 0.2)
    out = np.empty(50)
    kernels.variance_rows(x, 1e-10, out)
    np.testing.assert_allclose(out, x.var(axis=1), rtol=1e-9)
    # two exact atoms (the start's quantile means on them): EM lands on them at once
    from collapse.theory.gmm import em_fit

    atoms = np.repeat([[-3.0] * 15 + [5.0] * 25], 4, axis=0)
    w, mu, var, used = em_fit(atoms, 2, 100, 1e-12)
    np.testing.assert_allclose(mu, [[-3.0, 5.0]] * 4, atol=1e-12)
    np.testing.assert_allclose(w, [[0.375, 0.625]] * 4, atol=1e-12)
    np.testing.assert_allclose(var, 1e-10)  # the variance floor
    assert used <= 10


# --------------------------------------------------------- determinism, imports

def test_kernels_give_each_row_the_same_numbers_whatever_its_chunk_or_thread():
    # Rows are independent: a row's numbers do not depend on the rows beside
    # it (the chunk, hence the thread, it runs in), so not on the number of
    # threads. Checked by running the rows in another order, and where numba
    # has more than one thread, on one thread and on all.
    import numba

    rng = np.random.default_rng(8)
    k = 700
    x = np.where(rng.random((k, 60)) < 0.5, -2.0, 2.0) + rng.standard_normal((k, 60))
    w, mu, var = _mixtures(rng, k, 2)
    ref = GMMModel(10, 1).ref_quantile
    counts = rng.multinomial(900, np.full(50, 0.02), size=k)
    pick = rng.integers(0, 900, size=(k, 80), dtype=np.int32)

    def run(rows):
        from collapse.theory.gmm import em_fit

        out = list(em_fit(x[rows], 2, 100, 1e-5)[:3])
        out.append(w2_distance(w[rows], mu[rows], var[rows], ref))
        drawn = np.empty((rows.size, 80), dtype=np.int32)
        kernels.sample_rows(counts[rows], pick[rows], drawn)
        return out + [drawn, count_measures(counts[rows], np.arange(45, 50))["entropy"]]

    rows = np.arange(k)
    base = run(rows)
    order = rng.permutation(k)
    for a, b in zip(base, run(order)):
        np.testing.assert_array_equal(a[order], b)
    most = numba.config.NUMBA_NUM_THREADS
    if most > 1:
        before = numba.get_num_threads()
        try:
            numba.set_num_threads(1)
            one = run(rows)
            numba.set_num_threads(most)
            many = run(rows)
        finally:
            numba.set_num_threads(before)
        for a, b, c in zip(base, one, many):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)


def test_numba_is_imported_only_by_the_theory_kernels():
    # statically: only collapse/theory/kernels.py imports numba (or llvmlite),
    # and only collapse.theory modules import the kernels
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.split(".")[0] in ("numba", "llvmlite"):
                    assert rel == "collapse/theory/kernels.py", rel
                if name == "collapse.theory.kernels" or (name == "collapse.theory" and isinstance(node, ast.ImportFrom)
                                                         and any(a.name == "kernels" for a in node.names)):
                    assert rel.startswith("collapse/theory/"), rel
    # and at run time: the package, the CLI and the theory modules load without it
    code = ("import sys, collapse, collapse.cli, collapse.theory, collapse.theory.cli, collapse.theory.run; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite') "
            "or m == 'collapse.theory.kernels'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
