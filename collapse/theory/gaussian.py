"""The Gaussian chain: a d-dimensional Gaussian refitted each generation from its own samples.

The simplest model of collapse (Shumailov et al. 2024; Bertrand et al.
2024): start from N(0, I), fit a Gaussian with a diagonal covariance to M
samples, sample M from the fit, refit, and so on. Coordinates are independent
(the fit is diagonal), so each coordinate runs the 1-D chain and the closed
forms hold per coordinate. Variance estimator: ``mle`` (divide by M) or
``unbiased`` (divide by M − 1).

Closed forms under ``replace`` (n = number of fits, σ₀ = 1, μ₀ = 0; with fit i
on N_i samples, N_i = M throughout in the default sizes):

- mle: E[σₙ²] = Π(1 − 1/N_i) = (1 − 1/M)ⁿ; E[μₙ²] = Σ_i E[σ²_{i−1}]/N_i = 1 − (1 − 1/M)ⁿ;
  E[σₙ] = Π c₄(N_i)·√(1 − 1/N_i).
- unbiased: E[σₙ²] = 1; E[μₙ²] = Σ 1/N_i = n/M; E[σₙ] = Π c₄(N_i) = c₄(M)ⁿ.
- both: E[W₂²] per coordinate = E[μₙ²] + 1 + E[σₙ²] − 2E[σₙ], i.e. n/M + 2(1 − c₄(M)ⁿ)
  for the unbiased estimator; the tracked ``w2`` sums over the d coordinates.

c₄(M) = √(2/(M−1))·Γ(M/2)/Γ((M−1)/2) is E[s]/σ for the unbiased sample
variance s² of M normal draws.

Closed forms for ``sigma2`` and ``mu2`` under ``accumulate`` and ``augment``
(derived here; exact, per coordinate): the fit of generation g is the mean μ_g
and SS_g/(N_g − ddof) of its training set, SS_g the centred sum of squares.
Merging a group of k new draws with mean ȳ into N points with mean μ adds
SS_new + N·k/(N + k)·(ȳ − μ)² to SS, and every expectation below is linear in
the previous ones, so E[σ²] and E[μ²] follow from recursions (S_g = E[σ_g²]):

- accumulate (n human, m synthetic per generation, N_g = n + g·m): with
  T_g = E[SS_g], T_0 = n − 1 and T_g = T_{g−1} + S_{g−1}·(m − 1 + N_{g−1}/N_g),
  since the new pool is drawn around μ_{g−1} itself (E[(ȳ − μ_{g−1})²] = S_{g−1}/m);
  E[μ_g²] = E[μ_{g−1}²] + m·S_{g−1}/N_g², E[μ_0²] = 1/n.
- augment (the n human points, x̄_h their mean, plus N_s = round(λ·n) draws
  of the previous fit, N = n + N_s): with D_g = E[(μ_g − x̄_h)²], D_0 = 0,
  E[(ȳ − x̄_h)²] = D_{g−1} + S_{g−1}/N_s, D_g = (N_s/N)²·(D_{g−1} + S_{g−1}/N_s),
  S_g = (n − 1 + (N_s − 1)·S_{g−1} + n·N_s/N·(D_{g−1} + S_{g−1}/N_s))/(N − ddof),
  E[μ_g²] = 1/n + D_g (the cross term E[x̄_h·(μ_g − x̄_h)] is 0 by induction).

E[σ] and W₂ need E[√σ²], which no such recursion gives: none is claimed
there, nor for the other regimes.

Full covariance (``covariance: full``, d ≥ 2; Kazdan et al. 2024): the fit
is the sample mean and the full sample covariance Σ = S/(M − ddof), S the
scatter matrix, and ``det_ratio`` = det(Σₙ)/det(Σ₀) (Σ₀ = I) and
``logdet_ratio`` = ln det(Σₙ) are tracked. Each coordinate's marginal is the
1-D chain, so the ``sigma2``, ``mu2`` and ``sigma`` closed forms above hold
unchanged (``w2`` becomes ‖μ‖² + tr(Σ + I − 2Σ^½), not claimed). Under
``replace``, given the previous fit, S = Σ_{n−1}^½ W Σ_{n−1}^½ with
W ∼ Wishart_d(M − 1, I), and by Bartlett's decomposition det W is a product
of independent χ²_{M−1}, …, χ²_{M−d}; W is independent of the past, so

  E[det Σₙ/det Σ₀] = (Π_{i=1..d} (M − i)/(M − ddof)^d)ⁿ,
  E[ln det Σₙ] = n·(Σ_{i=1..d} (ψ((M − i)/2) + ln 2) − d·ln(M − ddof)),

(the first fit is on human data with Σ₀ = I, so the same factor applies from
n = 1). Both decay geometrically, for the unbiased estimator too (it is
unbiased for Σ, not for det Σ): the determinant collapses.

Tail cutting (``truncate`` = τ; Dohmatob et al. 2024): generations sample
from the fit truncated to |x − μ| ≤ τσ per coordinate. A standard normal
truncated to [−τ, τ] has variance v(τ) = 1 − 2τφ(τ)/(2Φ(τ) − 1) < 1, so each
refit on truncated samples estimates v(τ)·σ² (the estimator is unbiased for
the variance of whatever it is fed): under ``replace``
E[σₙ²] = c^n·v(τ)^(n−1) with c = 1 (unbiased) or 1 − 1/M (mle), and
E[μₙ²] = E[μ²_{n−1}] + v(τ)·E[σ²_{n−1}]/M, E[μ₁²] = 1/M: the variance
collapses geometrically even with the unbiased estimator. Generation 0 fits
the human data, which is never truncated. E[σ] and W₂ are not claimed.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy.special import digamma, gammaln, ndtr, ndtri

from collapse.mixing import MixSizes
from collapse.theory.common import TheoryModel


def c4(m: int | np.ndarray) -> np.ndarray:
    """E[s]/σ for the unbiased standard deviation s of m normal draws (m ≥ 2)."""
    m = np.asarray(m, dtype=np.float64)
    return np.exp(0.5 * np.log(2.0 / (m - 1.0)) + gammaln(m / 2.0) - gammaln((m - 1.0) / 2.0))


def gaussian_closed_form(estimator: str, fit_sizes: Sequence[int], dim: int = 1) -> dict[str, np.ndarray]:
    """E[σₙ²], E[μₙ²], E[σₙ] per coordinate and E[W₂²] summed over ``dim``
    coordinates, after fits on ``fit_sizes[0], fit_sizes[1], …`` samples under
    ``replace``; one value per fit."""
    n_i = np.asarray(fit_sizes, dtype=np.float64)
    if estimator == "mle":
        sigma2 = np.cumprod(1.0 - 1.0 / n_i)
        sigma = np.cumprod(c4(n_i) * np.sqrt(1.0 - 1.0 / n_i))
    elif estimator == "unbiased":
        sigma2 = np.ones_like(n_i)
        sigma = np.cumprod(c4(n_i))
    else:
        raise ValueError(f"unknown estimator {estimator!r}")
    # E[μ_i²] = E[μ_{i−1}²] + E[σ_{i−1}²]/N_i: the new mean is the old one plus
    # the mean of N_i draws around it, with the previous fit's variance.
    sigma2_before = np.concatenate([[1.0], sigma2[:-1]])
    mu2 = np.cumsum(sigma2_before / n_i)
    w2 = dim * (mu2 + 1.0 + sigma2 - 2.0 * sigma)
    return {"sigma2": sigma2, "mu2": mu2, "sigma": sigma, "w2": w2}


def det_closed_form(estimator: str, fits: int, samples: int, dim: int) -> dict[str, np.ndarray]:
    """E[det Σₙ/det Σ₀] and E[ln det Σₙ] under replace, full covariance, M samples per fit."""
    ddof = 1 if estimator == "unbiased" else 0
    i = np.arange(1, dim + 1, dtype=np.float64)
    n = np.arange(1, fits + 1, dtype=np.float64)
    factor = float(np.prod((samples - i) / (samples - ddof)))
    log_step = float(np.sum(digamma((samples - i) / 2.0) + np.log(2.0)) - dim * np.log(samples - ddof))
    return {"det_ratio": factor**n, "logdet_ratio": n * log_step}


def truncated_variance(tau: float) -> float:
    """v(τ): the variance of a standard normal truncated to [−τ, τ]."""
    phi = np.exp(-0.5 * tau * tau) / np.sqrt(2.0 * np.pi)
    return float(1.0 - 2.0 * tau * phi / (2.0 * ndtr(tau) - 1.0))


def gaussian_truncated_closed_form(estimator: str, fits: int, samples: int, tau: float) -> dict[str, np.ndarray]:
    """E[σₙ²] and E[μₙ²] per coordinate under replace when every generation
    samples from the fit truncated at |x − μ| ≤ τσ; one value per fit."""
    m = float(samples)
    c = 1.0 if estimator == "unbiased" else 1.0 - 1.0 / m
    v = truncated_variance(tau)
    n = np.arange(1, fits + 1, dtype=np.float64)
    sigma2 = c**n * v ** (n - 1.0)
    before = np.concatenate([[1.0], sigma2[:-1]])
    feed = np.concatenate([[1.0], np.full(fits - 1, v)])  # generation 0 sees untruncated human data
    mu2 = np.cumsum(before * feed / m)
    return {"sigma2": sigma2, "mu2": mu2}


def gaussian_merge_closed_form(regime: str, estimator: str, fits: int, human: int, synthetic: int,
                               augment: int = 0) -> dict[str, np.ndarray] | None:
    """E[σₙ²] and E[μₙ²] per coordinate under ``accumulate`` (``synthetic``
    samples per generation) or ``augment`` (``augment`` = N_s synthetic
    samples per training set), one value per fit; None for other regimes."""
    if estimator not in ("mle", "unbiased"):
        raise ValueError(f"unknown estimator {estimator!r}")
    ddof = 1 if estimator == "unbiased" else 0
    n = float(human)
    s = np.empty(fits)
    mu2 = np.empty(fits)
    s[0] = (n - 1.0) / (n - ddof)
    mu2[0] = 1.0 / n
    if regime == "accumulate":
        m = float(synthetic)
        t = n - 1.0
        for g in range(1, fits):
            n_prev, n_now = n + (g - 1) * m, n + g * m
            t = t + s[g - 1] * (m - 1.0 + n_prev / n_now)
            s[g] = t / (n_now - ddof)
            mu2[g] = mu2[g - 1] + m * s[g - 1] / n_now**2
    elif regime == "augment":
        k = float(augment)
        big = n + k
        d = 0.0
        for g in range(1, fits):
            if k == 0:
                s[g], mu2[g] = s[0], mu2[0]
                continue
            gap = d + s[g - 1] / k  # E[(ȳ − x̄_h)²]
            d = (k / big) ** 2 * gap
            s[g] = (n - 1.0 + (k - 1.0) * s[g - 1] + n * k / big * gap) / (big - ddof)
            mu2[g] = 1.0 / n + d
    else:
        return None
    return {"sigma2": s, "mu2": mu2}


def centred_sum_squares(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Σₙ (x − mean)² over axis 1 of x (K, N, d) → (K, d).

    Block by block over trials, so the deviations stay a small reused buffer
    (the accumulated training sets are GBs; np.var is several times slower)."""
    k, n, d = x.shape
    out = np.empty((k, d))
    step = max(1, (1 << 18) // max(1, n * d))  # ~2 MB of deviations per block
    for s in range(0, k, step):
        dev = x[s:s + step] - mean[s:s + step, None, :]
        out[s:s + step] = np.einsum("knd,knd->kd", dev, dev)
    return out


def scatter(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Σₙ (x − mean)(x − mean)ᵀ over axis 1 of x (K, N, d) → (K, d, d), block by block over trials."""
    k, n, d = x.shape
    out = np.empty((k, d, d))
    step = max(1, (1 << 18) // max(1, n * d))
    for s in range(0, k, step):
        dev = x[s:s + step] - mean[s:s + step, None, :]
        out[s:s + step] = np.einsum("knd,kne->kde", dev, dev)
    return out


class GaussianModel(TheoryModel):
    """K chains of a d-dimensional Gaussian, diagonal or full covariance. Pools: (K, samples, d) floats."""

    name = "gaussian"

    def __init__(self, trials: int, seed: int, dim: int = 1, samples: int = 100, estimator: str = "unbiased",
                 truncate: float | None = None, covariance: str = "diagonal"):
        super().__init__(trials, seed)
        self.dim = int(dim)
        self.samples = int(samples)
        self.estimator = estimator
        self.truncate = None if truncate is None else float(truncate)
        self.full = covariance == "full"
        self.mu = np.zeros((self.trials, self.dim))  # (K, d)
        self.var = np.ones((self.trials, self.dim))  # (K, d); the diagonal of cov when full
        self.cov = np.broadcast_to(np.eye(self.dim), (self.trials, self.dim, self.dim)).copy() if self.full else None

    @property
    def quantities(self) -> tuple[str, ...]:  # type: ignore[override]
        base = ("sigma2", "mu2", "sigma", "w2")
        return base + ("det_ratio", "logdet_ratio") if self.full else base

    def params(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {"dim": self.dim, "samples": self.samples, "estimator": self.estimator}
        if self.truncate is not None:
            out["truncate"] = self.truncate
        if self.full:
            out["covariance"] = "full"
        return out

    def human_pools(self, sizes: MixSizes, fresh_total: int) -> dict[str, np.ndarray]:
        pools = {"human": self.rng(0, "human").standard_normal((self.trials, sizes.human, self.dim))}
        if fresh_total:
            pools["human_fresh"] = self.rng(0, "hfresh").standard_normal((self.trials, fresh_total, self.dim))
        return pools

    def fit(self, train: np.ndarray, generation: int) -> dict[str, float]:
        # train: (K, N, d)
        n = train.shape[1]
        self.mu = train.sum(axis=1) / n  # (K, d)
        ddof = 1 if self.estimator == "unbiased" else 0
        if self.full:
            self.cov = scatter(train, self.mu) / (n - ddof)  # (K, d, d)
            self.var = np.diagonal(self.cov, axis1=1, axis2=2).copy()
        else:
            self.var = centred_sum_squares(train, self.mu) / (n - ddof)  # (K, d)
        return {"train_size": float(n)}

    # Sufficient statistics (count, mean, centred sum of squares or scatter
    # matrix), merged exactly (Chan et al.'s pairwise update) for accumulate.
    # accumulate_subsample cannot use them: the mean and spread of a uniform
    # subset depend on which samples it draws, not only on the union's
    # statistics, so that regime keeps the samples (collapse.mixing.UnionBuffer).
    def pool_stats(self, pool: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        n = pool.shape[1]
        mean = pool.sum(axis=1) / n
        return n, mean, scatter(pool, mean) if self.full else centred_sum_squares(pool, mean)

    def merge_stats(self, a: tuple, b: tuple) -> tuple[int, np.ndarray, np.ndarray]:
        (na, ma, sa), (nb, mb, sb) = a, b
        n = na + nb
        delta = mb - ma
        if self.full:
            extra = np.einsum("kd,ke->kde", delta, delta)
        else:
            extra = delta * delta
        return n, ma + delta * (nb / n), sa + sb + extra * (na * nb / n)

    def fit_stats(self, stats: tuple, generation: int) -> dict[str, float]:
        n, mean, ss = stats
        ddof = 1 if self.estimator == "unbiased" else 0
        self.mu = mean.copy()
        if self.full:
            self.cov = ss / (n - ddof)
            self.var = np.diagonal(self.cov, axis1=1, axis2=2).copy()
        else:
            self.var = ss / (n - ddof)
        return {"train_size": float(n)}

    def draw(self, n: int, generation: int) -> np.ndarray:
        rng = self.rng(generation, "sample")
        if self.truncate is None:
            z = rng.standard_normal((self.trials, n, self.dim))  # (K, n, d)
        else:
            # Inverse CDF on [Φ(−τ), Φ(τ)]: an exact draw of the truncated normal.
            lo = ndtr(-self.truncate)
            z = ndtri(lo + (1.0 - 2.0 * lo) * rng.random((self.trials, n, self.dim)))
        if self.full:
            chol = np.linalg.cholesky(self.cov + 1e-300 * np.eye(self.dim))  # (K, d, d)
            z = np.einsum("knd,ked->kne", z, chol)
        else:
            z *= np.sqrt(self.var)[:, None, :]
        z += self.mu[:, None, :]
        return z

    def measure(self) -> dict[str, np.ndarray]:
        sigma = np.sqrt(self.var)
        if self.full:
            # W₂² between N(0, I) and N(μ, Σ) = ‖μ‖² + tr Σ + d − 2 tr Σ^½.
            eig = np.maximum(np.linalg.eigvalsh(self.cov), 0.0)  # (K, d)
            sign, logdet = np.linalg.slogdet(self.cov)
            logdet = np.where(sign > 0, logdet, -np.inf)
            return {
                "sigma2": self.var.mean(axis=1),
                "mu2": (self.mu**2).mean(axis=1),
                "sigma": sigma.mean(axis=1),
                "w2": (self.mu**2).sum(axis=1) + (eig + 1.0 - 2.0 * np.sqrt(eig)).sum(axis=1),
                "det_ratio": np.exp(logdet),
                "logdet_ratio": logdet,
            }
        # W₂² between N(0, I) and N(μ, diag σ²) = Σ_j μ_j² + (σ_j − 1)².
        return {
            "sigma2": self.var.mean(axis=1),
            "mu2": (self.mu**2).mean(axis=1),
            "sigma": sigma.mean(axis=1),
            "w2": (self.mu**2 + (sigma - 1.0) ** 2).sum(axis=1),
        }

    def true_loglik(self, samples: np.ndarray) -> np.ndarray:
        return -0.5 * np.einsum("knd,knd->kn", samples, samples)

    def closed_form(self, regime: str, fit_sizes: Sequence[int], sizes: MixSizes) -> dict[str, np.ndarray]:
        if self.truncate is not None or self.verify is not None:
            if regime == "replace" and self.verify is None and all(f == self.samples for f in fit_sizes):
                return gaussian_truncated_closed_form(self.estimator, len(fit_sizes), self.samples, self.truncate)
            return {}
        if regime in ("accumulate", "augment"):
            return gaussian_merge_closed_form(regime, self.estimator, len(fit_sizes), sizes.human, sizes.synthetic,
                                              sizes.augment_count()) or {}
        if regime != "replace":
            return {}
        out = gaussian_closed_form(self.estimator, fit_sizes, self.dim)
        if self.full:
            out.pop("w2")
            if all(f == self.samples for f in fit_sizes):
                out.update(det_closed_form(self.estimator, len(fit_sizes), self.samples, self.dim))
        return out

    def closed_form_text(self, regime: str, sizes: MixSizes) -> dict[str, str]:
        if self.truncate is not None or self.verify is not None:
            if regime == "replace" and self.verify is None and sizes.synthetic == self.samples:
                c = "" if self.estimator == "unbiased" else "(1 - 1/M)^n·"
                return {"sigma2": f"{c}v(τ)^(n-1), v(τ) = 1 - 2τφ(τ)/(2Φ(τ) - 1)",
                        "mu2": "E[mu_(n-1)^2] + v(τ)·E[sigma_(n-1)^2]/M (v = 1 for the human fit)"}
            return {}
        if regime == "accumulate":
            return {"sigma2": "T_n/(N_n - ddof), T_n = T_(n-1) + S_(n-1)(m - 1 + N_(n-1)/N_n), T_1 = M - 1, N_n = M + (n-1)m",
                    "mu2": "E[mu_(n-1)^2] + m·S_(n-1)/N_n², E[mu_1^2] = 1/M"}
        if regime == "augment":
            return {"sigma2": "(M - 1 + (k - 1)S + M·k/(M+k)·(D + S/k))/(M + k - ddof), k = round(λM), S, D of fit n - 1",
                    "mu2": "1/M + D_n, D_n = (k/(M+k))²·(D_(n-1) + S_(n-1)/k), D_1 = 0"}
        if regime != "replace":
            return {}
        d = "" if self.dim == 1 else f"{self.dim}·"
        if self.full:
            ddof = "1" if self.estimator == "unbiased" else "0"
            full = {"det_ratio": f"(Π_(i=1..d) (M - i)/(M - {ddof})^d)^n",
                    "logdet_ratio": f"n·(Σ_(i=1..d) (ψ((M - i)/2) + ln 2) - d·ln(M - {ddof}))"}
            base = self._replace_text(d)
            base.pop("w2")
            return {**base, **full} if sizes.synthetic == self.samples else base
        return self._replace_text(d)

    def _replace_text(self, d: str) -> dict[str, str]:
        if self.estimator == "mle":
            return {
                "sigma2": "(1 - 1/M)^n",
                "mu2": "1 - (1 - 1/M)^n",
                "sigma": "(c4(M)·sqrt(1 - 1/M))^n",
                "w2": f"{d}(2 - 2·(c4(M)·sqrt(1 - 1/M))^n)",
            }
        return {"sigma2": "1", "mu2": "n/M", "sigma": "c4(M)^n", "w2": f"{d}(n/M + 2(1 - c4(M)^n))"}
