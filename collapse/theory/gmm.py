"""A Gaussian mixture (1-D or 2-D) refitted by EM each generation: Shumailov et al. 2024's mixture experiment.

``dim: 2`` runs the 2-D mixture of Shumailov et al.'s notebook: components
with identity covariance, means ``separation`` apart along the first axis,
fitted with full covariances (``collapse.theory.em2``); tracked are
``l2_gen0``, the squared L2 distance to the generation-0 fit, ``l2``, the L2
distance to the start, and ``variance``, the trace of the fit's covariance.
``init`` chooses the EM initialisation: ``quantiles`` (below; per coordinate
in 2-D) or ``kmeans`` (as scikit-learn's GaussianMixture; see
``collapse.theory.em2``); it is named in the run's params. Measured at the
default options (2 components 4 apart, M = 100, 1,000 trials, seed 3), the
squared L2 distance to the generation-0 fit at generation 10 is about the same
for both: k-means/quantiles = 0.97 (means) and 1.06 (medians) in 1-D, 0.85
and 1.00 in 2-D — no 30 % faster drift with k-means at these settings.

Start from C unit-variance components with equal weights, means
``separation`` apart and centred on 0. Each generation fits a C-component
mixture by EM to its training set (initialised from the data alone: means at
the (i + ½)/C quantiles, the overall variance, equal weights), then samples
from the fit. Tracked: the distance of the fitted mixture to the start, either

- ``w2``: the 2-Wasserstein distance, W₂² = E_{X∼f}[(X − F₀⁻¹(F(X)))²] (the
  monotone transport map in 1-D), computed component by component with
  Gauss–Hermite quadrature and a tabulated F₀⁻¹, or
- ``l2``: ‖f − f₀‖₂, exact from ∫N(x; a, s²)N(x; b, t²)dx = N(a − b; 0, s² + t²),

``variance``, the fitted mixture's total variance, and ``l2_gen0``, the
squared L2 distance ∫(fₙ − f₀)² to the trial's generation-0 fit (the quantity
of Shumailov et al.'s notebook). No closed form exists
for EM on a mixture; the tests check the qualitative result (the distance grows
under ``replace``).

EM runs for all trials at once (:func:`em_fit`, each trial stopping on its
own). Two components, the default, run a compiled kernel
(``collapse.theory.kernels.em2_rows``, numba, trials in parallel): the
iteration in the logistic form in float64, one exp per point and step and one
log per trial and step. W₂ (:func:`w2_distance`), ``l2_gen0``
(:func:`l2sq_mixtures`) and the draws (``GMMModel._draw``: the uniforms and
normals still come from the trial's numpy Generator) are compiled too.
``GMMModel.reference`` (``run_theory(reference=True)``) runs the numpy
implementations instead, the ones the compiled kernels are tested against:
the general EM (float64 log-densities, float32 responsibilities; the same fits
to about 1e-8 on nearly every trial, the same chain statistically), and W₂
with ``np.interp`` and ``l2_gen0`` (the same values to rounding). The draws
are the same numbers either way.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy.special import ndtr

from collapse.mixing import MixSizes
from collapse.theory.common import TheoryModel
from collapse.theory.em2 import em2_fit, init_from_labels, kmeans_labels, mixture_inner

_LOG_2PI = float(np.log(2.0 * np.pi))
_VAR_FLOOR = 1e-10


def em_fit(x: np.ndarray, components: int, iters: int, tol: float,
           init: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
           reference: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """EM for a 1-D mixture on every row of ``x`` (K, N) → weights, means,
    variances (each (K, C)) and the most iterations any trial used.

    Initialised from the data alone (means at the (i + ½)/C quantiles, the
    overall variance, equal weights) or from ``init`` (weights, means,
    variances, each (C, K)); a trial stops when its mean log-likelihood
    improves by less than ``tol`` and keeps the parameters of that last step.

    Two components (the default model) run :func:`_em_two`, the compiled
    kernel (float64, the iteration in the logistic form); ``reference=True``
    and any other number of components run :func:`_em_block`, the general form
    in numpy (C exps per point, float64 log-densities, float32
    responsibilities), vectorized over trials. They agree to about 1e-8 where
    EM converges (tests compare them), not bit for bit."""
    if components == 2 and not reference:
        return _em_two(x, iters, tol, init)
    k, n = x.shape
    w = np.empty((components, k))
    mu = np.empty((components, k))
    var = np.empty((components, k))
    most = 0
    # Blocks of trials: the general form's (C, block, N) buffers stay a few MB.
    block = int(np.clip((1 << 19) // (components * n), 16, 4096))
    for s in range(0, k, block):
        blk = slice(s, min(s + block, k))
        start = None if init is None else tuple(a[:, blk] for a in init)
        w[:, blk], mu[:, blk], var[:, blk], used = _em_block(x[blk], components, iters, tol, start)
        most = max(most, used)
    return w.T.copy(), mu.T.copy(), var.T.copy(), most


def _em_two(x: np.ndarray, iters: int, tol: float,
            init: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Two-component EM on the rows of x (K, N) by the compiled kernel
    (``collapse.theory.kernels.em2_rows``, whose docstring gives the
    iteration): :func:`_em_block`'s start (or ``init``, (2, K) each), its
    variance floor, stopping rule and treatment of an empty component, in
    float64 throughout → weights, means, variances (K, 2) and the most
    iterations any trial used."""
    from collapse.theory import kernels  # deferred: numba

    x = np.ascontiguousarray(x, dtype=np.float64)
    k, n = x.shape
    if init is not None:
        w, mu, var = (np.array(np.asarray(a, dtype=np.float64).T, order="C") for a in init)  # (K, 2) each
        var = np.maximum(var, _VAR_FLOOR)
    else:
        q = np.minimum(((np.arange(2) + 0.5) / 2 * n).astype(np.int64), n - 1)
        mu = np.ascontiguousarray(np.sort(x, axis=1)[:, q])  # (K, 2), as _em_block
        spread = np.empty(k)
        kernels.variance_rows(x, _VAR_FLOOR, spread)  # x.var(axis=1) floored, to rounding
        var = np.repeat(spread[:, None], 2, axis=1)
        w = np.full((k, 2), 0.5)
    used = np.zeros(k, dtype=np.int64)
    if k:
        kernels.em2_rows(x, w, mu, var, int(iters), float(tol), _VAR_FLOOR, used)
    return w, mu, var, int(used.max()) if k else 0


def _em_block(x: np.ndarray, c: int, iters: int, tol: float,
              init: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    # Layout (C, k, N): samples contiguous, so sums over samples and the
    # max/sum over components are fast elementwise passes.
    k, n = x.shape
    if init is not None:
        w, mu, var = (np.array(a, dtype=np.float64) for a in init)  # (C, k) each, e.g. from k-means
        var = np.maximum(var, _VAR_FLOOR)
    else:
        q = np.minimum(((np.arange(c) + 0.5) / c * n).astype(np.int64), n - 1)
        mu = np.sort(x, axis=1)[:, q].T.copy()  # (C, k)
        var = np.repeat(np.maximum(x.var(axis=1), _VAR_FLOOR)[None, :], c, axis=0)  # (C, k)
        w = np.full((c, k), 1.0 / c)
    if c == 1:
        return w, x.mean(axis=1)[None, :], np.repeat(np.maximum(x.var(axis=1), _VAR_FLOOR)[None, :], 1, axis=0), 1
    out = [w.copy(), mu.copy(), var.copy()]
    # Work buffers reused by every step (fresh GB-scale temporaries cost more
    # in page faults than the arithmetic); active trials use the first rows.
    work = np.empty((c, k, n))
    resp = np.empty((c, k, n), dtype=np.float32)
    active = np.arange(k)  # trials still iterating
    xa = x
    prev = np.full(k, -np.inf)
    it = 0
    for it in range(1, iters + 1):
        ka = active.size
        ll, w, mu, var = _em_step(xa, w, mu, var, work[:, :ka], resp[:, :ka])
        # ll is the log-likelihood of the parameters before this step; a trial
        # whose last step gained less than tol keeps the newest parameters.
        done = ll - prev < tol
        if it == iters:
            done[:] = True
        if done.any():
            for o, new in zip(out, (w, mu, var)):
                o[:, active[done]] = new[:, done]
            keep = ~done
            active, xa, prev = active[keep], xa[keep], ll[keep]
            w, mu, var = w[:, keep], mu[:, keep], var[:, keep]
        else:
            prev = ll
        if active.size == 0:
            break
    return out[0], out[1], out[2], it


def _em_step(x: np.ndarray, w: np.ndarray, mu: np.ndarray, var: np.ndarray, work: np.ndarray, resp: np.ndarray):
    """One EM step for k mixtures, parameters (C, k), data (k, N), buffers
    (C, k, N) → mean log-likelihood (k,) of the old parameters and the new parameters."""
    n = x.shape[1]
    # E-step: log w_c + log N(x; μ_c, v_c) in ``work``, responsibilities in ``resp``.
    np.subtract(x[None], mu[:, :, None], out=work)
    np.multiply(work, work, out=work)
    work *= (-0.5 / var)[:, :, None]
    work += (np.log(w) - 0.5 * (_LOG_2PI + np.log(var)))[:, :, None]
    top = work.max(axis=0)  # (k, N)
    work -= top
    # exp and log in float32: numpy vectorises them (float64 exp is scalar
    # libm without AVX-512, ~10x slower) and responsibilities need no more.
    resp[...] = work
    np.exp(resp, out=resp)
    tot = resp.sum(axis=0)
    resp /= tot
    ll = (top + np.log(tot)).mean(axis=1, dtype=np.float64)
    # M-step; a component that lost every point keeps its parameters.
    nk = resp.sum(axis=2, dtype=np.float64)  # (C, k)
    alive = nk > 1e-8
    safe = np.where(alive, nk, 1.0)
    mu_new = np.where(alive, np.einsum("ckn,kn->ck", resp, x) / safe, mu)
    np.subtract(x[None], mu_new[:, :, None], out=work)
    np.multiply(work, work, out=work)
    var_new = np.where(alive, np.maximum(np.einsum("ckn,ckn->ck", resp, work) / safe, _VAR_FLOOR), var)
    w_new = np.maximum(nk / n, 1e-300)
    return ll, w_new, mu_new, var_new


def mixture_draw_numpy(u: np.ndarray, z: np.ndarray, w: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """The draws of ``GMMModel._draw`` from its uniforms u and normals z (K, n)
    in numpy: the reference its compiled kernel is tested against."""
    cum = np.cumsum(w, axis=1)
    sd = np.sqrt(var)
    comp = np.zeros(u.shape, dtype=np.intp)  # (K, n) component of each draw: how many cumulative weights u passes
    for j in range(w.shape[1] - 1):
        comp += u > cum[:, j:j + 1]
    return np.take_along_axis(mu, comp, axis=1) + np.take_along_axis(sd, comp, axis=1) * z


def l2sq_mixtures(w: np.ndarray, mu: np.ndarray, var: np.ndarray, w0: np.ndarray, mu0: np.ndarray,
                  var0: np.ndarray, compiled: bool = False) -> np.ndarray:
    """∫(f − f₀)² between K pairs of 1-D mixtures, every argument (K, C);
    ``compiled``: by ``collapse.theory.kernels.l2sq_rows`` (the same terms, trials in parallel)."""
    if compiled:
        from collapse.theory import kernels  # deferred: numba

        out = np.empty(w.shape[0])
        kernels.l2sq_rows(*(np.ascontiguousarray(a, dtype=np.float64) for a in (w, mu, var, w0, mu0, var0)), out)
        return out

    def cross(wa, ma, va, wb, mb, vb):
        s = va[:, :, None] + vb[:, None, :]
        g = np.exp(-((ma[:, :, None] - mb[:, None, :]) ** 2) / (2.0 * s)) / np.sqrt(2.0 * np.pi * s)
        return np.einsum("ka,kab,kb->k", wa, g, wb)

    sq = cross(w, mu, var, w, mu, var) - 2.0 * cross(w, mu, var, w0, mu0, var0) + cross(w0, mu0, var0, w0, mu0, var0)
    return np.maximum(sq, 0.0)


def mixture_cdf(x: np.ndarray, w: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """F(x) of K mixtures at points x (K, P) → (K, P); parameters (K, C)."""
    z = (x[:, :, None] - mu[:, None, :]) / np.sqrt(var)[:, None, :]
    return np.einsum("kpc,kc->kp", ndtr(z), w)


def l2_distance(w: np.ndarray, mu: np.ndarray, var: np.ndarray, w0: np.ndarray, mu0: np.ndarray, var0: np.ndarray) -> np.ndarray:
    """‖f − f₀‖₂ between K mixtures (K, C) and one reference mixture (C₀,), exactly."""

    def cross(wa, ma, va, wb, mb, vb):  # Σ_ab w_a w_b N(m_a − m_b; 0, v_a + v_b) → (K,)
        s = va[:, :, None] + vb[:, None, :]
        g = np.exp(-((ma[:, :, None] - mb[:, None, :]) ** 2) / (2.0 * s)) / np.sqrt(2.0 * np.pi * s)
        return np.einsum("ka,kab,kb->k", wa, g, wb)

    k = w.shape[0]
    ref = [np.broadcast_to(a, (k, a.size)) for a in (w0, mu0, var0)]
    sq = cross(w, mu, var, w, mu, var) - 2.0 * cross(w, mu, var, *ref) + cross(*ref, *ref)
    return np.sqrt(np.maximum(sq, 0.0))


class ReferenceQuantile:
    """F₀⁻¹ of one fixed mixture, tabulated once on a fine grid.

    ``__call__`` interpolates with ``np.interp`` (the reference);
    :func:`w2_distance` runs the compiled interpolation
    (``collapse.theory.kernels.interp_indexed``: np.interp's arithmetic, the
    interval found from an index of the table by a monotone key of the
    probability, :meth:`index`)."""

    def __init__(self, w0: np.ndarray, mu0: np.ndarray, var0: np.ndarray, points: int = 40001):
        sd = np.sqrt(var0)
        xs = np.linspace((mu0 - 9 * sd).min(), (mu0 + 9 * sd).max(), points)
        fs = mixture_cdf(xs[None, :], w0[None], mu0[None], var0[None])[0]
        fs, first = np.unique(fs, return_index=True)  # strictly increasing for np.interp
        self.u, self.x = fs, xs[first]
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __call__(self, u: np.ndarray) -> np.ndarray:
        return np.interp(u, self.u, self.x)

    def index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The table and its index for ``collapse.theory.kernels.interp_indexed``
        (built once, by ``collapse.theory.kernels.quantile_table``)."""
        if self._index is None:
            from collapse.theory import kernels  # deferred: numba

            self._index = kernels.quantile_table(self.u, self.x)
        return self._index

    def compiled(self, u: np.ndarray) -> np.ndarray:
        """``self(u)`` for u (K, P) by the compiled interpolation (its test)."""
        from collapse.theory import kernels  # deferred: numba

        u = np.ascontiguousarray(u, dtype=np.float64)
        out = np.empty_like(u)
        kernels.interp_rows(u, *self.index(), out)
        return out


_GH_T, _GH_W = np.polynomial.hermite_e.hermegauss(32)  # ∫ g(t) e^{−t²/2} dt ≈ Σ w g(t)
_GH_W = _GH_W / _GH_W.sum()  # → E_{t∼N(0,1)}[g(t)]
_GH_PHI = ndtr(_GH_T)  # Φ at the nodes


def w2_distance(w: np.ndarray, mu: np.ndarray, var: np.ndarray, ref_quantile: ReferenceQuantile,
                compiled: bool = True) -> np.ndarray:
    """W₂ between K mixtures (K, C) and the reference whose quantile function is given.

    W₂² = Σ_c w_c E_{X∼N(μ_c, v_c)}[(X − F₀⁻¹(F(X)))²], each expectation by
    32-point Gauss–Hermite quadrature. ``compiled`` runs
    ``collapse.theory.kernels.w2_rows`` (the same sums, trials in parallel);
    ``compiled=False`` the numpy reference below."""
    if compiled and ref_quantile.u.size >= 2:
        from collapse.theory import kernels  # deferred: numba

        out = np.empty(w.shape[0])
        kernels.w2_rows(*(np.ascontiguousarray(a, dtype=np.float64) for a in (w, mu, var)), _GH_T, _GH_W, _GH_PHI,
                        *ref_quantile.index(), out)
        return out
    k, c = w.shape
    sd = np.sqrt(var)
    nodes = mu[:, :, None] + sd[:, :, None] * _GH_T[None, None, :]  # (K, C, 32)
    # F at component a's nodes: its own term is Φ(t) at the Gauss–Hermite
    # nodes t (tabulated), only the other components' terms need ndtr.
    cdf = np.empty_like(nodes)
    for a in range(c):
        acc = w[:, a:a + 1] * _GH_PHI
        for b in range(c):
            if b != a:
                acc = acc + w[:, b:b + 1] * ndtr((nodes[:, a] - mu[:, b:b + 1]) / sd[:, b:b + 1])
        cdf[:, a] = acc
    moved = ref_quantile(cdf.reshape(k, -1)).reshape(k, c, -1)  # (K, C, 32)
    per_comp = (nodes - moved) ** 2 @ _GH_W  # (K, C)
    return np.sqrt(np.maximum((per_comp * w).sum(axis=1), 0.0))


class GMMModel(TheoryModel):
    """K chains of a 1-D Gaussian mixture refitted by EM. Pools: (K, N) floats."""

    name = "gmm"

    def __init__(self, trials: int, seed: int, components: int = 2, samples: int = 100, separation: float = 4.0,
                 distance: str = "w2", em_iters: int = 100, em_tol: float = 1e-5, dim: int = 1,
                 init: str = "quantiles"):
        super().__init__(trials, seed)
        self.dim = int(dim)
        self.init = init
        self.fit0: tuple[np.ndarray, ...] | None = None  # the generation-0 fit, for l2_gen0
        self.reference = False  # True: the numpy references: the general EM (``em_fit(reference=True)``), W₂, l2_gen0
        self.components = int(components)
        self.samples = int(samples)
        self.separation = float(separation)
        self.distance = distance
        self.em_iters = int(em_iters)
        self.em_tol = float(em_tol)
        c = self.components
        self.w0 = np.full(c, 1.0 / c)
        self.mu0 = self.separation * (np.arange(c) - (c - 1) / 2.0)
        self.var0 = np.ones(c)
        self.ref_quantile = ReferenceQuantile(self.w0, self.mu0, self.var0) if distance == "w2" and self.dim == 1 else None
        if self.dim == 2:
            self.mu0_2 = np.stack([self.mu0, np.zeros(c)], axis=1)  # (C, 2)
            self.cov0_2 = np.broadcast_to(np.eye(2), (c, 2, 2)).copy()
            self.cov = np.broadcast_to(self.cov0_2, (self.trials, c, 2, 2)).copy()
            self.mu = np.broadcast_to(self.mu0_2, (self.trials, c, 2)).copy()
        self.w = np.broadcast_to(self.w0, (self.trials, c)).copy()
        self.mu = np.broadcast_to(self.mu0, (self.trials, c)).copy()
        self.var = np.broadcast_to(self.var0, (self.trials, c)).copy()
        if self.dim == 2:
            self.mu = np.broadcast_to(self.mu0_2, (self.trials, c, 2)).copy()

    @property
    def quantities(self) -> tuple[str, ...]:  # type: ignore[override]
        if self.dim == 2:
            return ("l2_gen0", "l2", "variance")
        return (self.distance, "variance", "l2_gen0")

    def params(self) -> Mapping[str, Any]:
        return {"components": self.components, "samples": self.samples, "separation": self.separation,
                "distance": self.distance if self.dim == 1 else "l2", "em_iters": self.em_iters, "em_tol": self.em_tol,
                "dim": self.dim, "init": self.init}

    def _draw2(self, w: np.ndarray, mu: np.ndarray, cov: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws from each of K 2-D mixtures, weights (K, C), means (K, C, 2), covariances (K, C, 2, 2) → (K, n, 2)."""
        u = rng.random((self.trials, n))
        z = rng.standard_normal((self.trials, n, 2))
        cum = np.cumsum(w, axis=1)
        comp = (u[:, :, None] > cum[:, None, :-1]).sum(axis=2)  # (K, n)
        chol = np.linalg.cholesky(cov)  # (K, C, 2, 2)
        m = np.take_along_axis(mu, comp[..., None], axis=1)  # (K, n, 2)
        lo = np.take_along_axis(chol.reshape(self.trials, -1, 4), comp[..., None], axis=1).reshape(self.trials, n, 2, 2)
        return m + np.einsum("knij,knj->kni", lo, z)

    def _draw(self, w: np.ndarray, mu: np.ndarray, var: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws from each of K mixtures (K, C) → (K, n): component c of a draw
        is how many cumulative weights its uniform passes, the draw μ_c + σ_c·z.
        The uniforms and normals come from ``rng``; the compiled kernel
        (``collapse.theory.kernels.mixture_draw_rows``) combines them into the
        same numbers as :func:`mixture_draw_numpy`."""
        from collapse.theory import kernels  # deferred: numba

        u = rng.random((self.trials, n))
        z = rng.standard_normal((self.trials, n))
        cum = np.ascontiguousarray(np.cumsum(w, axis=1))
        out = np.empty((self.trials, n))
        kernels.mixture_draw_rows(u, z, cum, np.ascontiguousarray(mu, dtype=np.float64),
                                  np.ascontiguousarray(np.sqrt(var), dtype=np.float64), out)
        return out

    def human_pools(self, sizes: MixSizes, fresh_total: int) -> dict[str, np.ndarray]:
        if self.dim == 2:
            k, c = self.trials, self.components
            start2 = (np.broadcast_to(self.w0, (k, c)), np.broadcast_to(self.mu0_2, (k, c, 2)),
                      np.broadcast_to(self.cov0_2, (k, c, 2, 2)))
            pools = {"human": self._draw2(*start2, sizes.human, self.rng(0, "human"))}
            if fresh_total:
                pools["human_fresh"] = self._draw2(*start2, fresh_total, self.rng(0, "hfresh"))
            return pools
        start = [np.broadcast_to(a, (self.trials, self.components)) for a in (self.w0, self.mu0, self.var0)]
        pools = {"human": self._draw(*start, sizes.human, self.rng(0, "human"))}
        if fresh_total:
            pools["human_fresh"] = self._draw(*start, fresh_total, self.rng(0, "hfresh"))
        return pools

    def fit(self, train: np.ndarray, generation: int) -> dict[str, float]:
        if self.dim == 2:
            self.w, self.mu, self.cov, used = em2_fit(train, self.components, self.em_iters, self.em_tol, self.init,
                                                      self.rng(generation, "init"))
        else:
            init = None
            if self.init == "kmeans":
                init = init_from_labels(train[..., None], kmeans_labels(train[..., None], self.components,
                                                                        self.rng(generation, "init")), self.components)
            self.w, self.mu, self.var, used = em_fit(train, self.components, self.em_iters, self.em_tol, init,
                                                     reference=self.reference)
        if self.fit0 is None:
            self.fit0 = (self.w.copy(), self.mu.copy(), (self.cov if self.dim == 2 else self.var).copy())
        return {"train_size": float(train.shape[1]), "em_iterations": float(used)}

    def draw(self, n: int, generation: int) -> np.ndarray:
        if self.dim == 2:
            return self._draw2(self.w, self.mu, self.cov, n, self.rng(generation, "sample"))
        return self._draw(self.w, self.mu, self.var, n, self.rng(generation, "sample"))

    def true_loglik(self, samples: np.ndarray) -> np.ndarray:
        if self.dim == 2:
            d = samples[:, :, None, :] - self.mu0_2  # (K, n, C, 2); identity covariances
            comp = np.log(self.w0) - _LOG_2PI - 0.5 * (d * d).sum(axis=3)
            top = comp.max(axis=2)
            return top + np.log(np.exp(comp - top[..., None]).sum(axis=2))
        d = samples[:, :, None] - self.mu0  # (K, n, C)
        comp = np.log(self.w0) - 0.5 * (_LOG_2PI + np.log(self.var0)) - 0.5 * d * d / self.var0
        top = comp.max(axis=2)
        return top + np.log(np.exp(comp - top[..., None]).sum(axis=2))

    def measure(self) -> dict[str, np.ndarray]:
        assert self.fit0 is not None
        if self.dim == 2:
            k = self.trials
            w0, mu0, cov0 = self.fit0
            start = (np.broadcast_to(self.w0, (k, self.components)), np.broadcast_to(self.mu0_2, (k, self.components, 2)),
                     np.broadcast_to(self.cov0_2, (k, self.components, 2, 2)))
            me = (self.w, self.mu, self.cov)
            ff = mixture_inner(*me, *me)
            gen0 = ff - 2.0 * mixture_inner(*me, w0, mu0, cov0) + mixture_inner(w0, mu0, cov0, w0, mu0, cov0)
            to_start = ff - 2.0 * mixture_inner(*me, *start) + mixture_inner(*start, *start)
            mean2 = np.einsum("kc,kcd->kd", self.w, self.mu)
            second = np.einsum("kc,kcd->k", self.w, np.diagonal(self.cov, axis1=2, axis2=3) + self.mu**2)
            return {"l2_gen0": np.maximum(gen0, 0.0), "l2": np.sqrt(np.maximum(to_start, 0.0)),
                    "variance": second - (mean2**2).sum(axis=1)}
        mean = (self.w * self.mu).sum(axis=1)
        variance = (self.w * (self.var + self.mu**2)).sum(axis=1) - mean**2
        if self.distance == "w2":
            dist = w2_distance(self.w, self.mu, self.var, self.ref_quantile, compiled=not self.reference)
        else:
            dist = l2_distance(self.w, self.mu, self.var, self.w0, self.mu0, self.var0)
        return {self.distance: dist, "variance": variance,
                "l2_gen0": l2sq_mixtures(self.w, self.mu, self.var, *self.fit0, compiled=not self.reference)}
