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
variance s² of M normal draws. No closed form is claimed for the other regimes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy.special import gammaln

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


class GaussianModel(TheoryModel):
    """K chains of a diagonal d-dimensional Gaussian. Pools: (K, samples, d) floats."""

    name = "gaussian"
    quantities = ("sigma2", "mu2", "sigma", "w2")

    def __init__(self, trials: int, seed: int, dim: int = 1, samples: int = 100, estimator: str = "unbiased"):
        super().__init__(trials, seed)
        self.dim = int(dim)
        self.samples = int(samples)
        self.estimator = estimator
        self.mu = np.zeros((self.trials, self.dim))  # (K, d)
        self.var = np.ones((self.trials, self.dim))  # (K, d)

    def params(self) -> Mapping[str, Any]:
        return {"dim": self.dim, "samples": self.samples, "estimator": self.estimator}

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
        self.var = centred_sum_squares(train, self.mu) / (n - ddof)  # (K, d)
        return {"train_size": float(n)}

    def sample(self, n: int, generation: int) -> np.ndarray:
        z = self.rng(generation, "sample").standard_normal((self.trials, n, self.dim))  # (K, n, d)
        z *= np.sqrt(self.var)[:, None, :]
        z += self.mu[:, None, :]
        return z

    def measure(self) -> dict[str, np.ndarray]:
        sigma = np.sqrt(self.var)
        # W₂² between N(0, I) and N(μ, diag σ²) = Σ_j μ_j² + (σ_j − 1)².
        return {
            "sigma2": self.var.mean(axis=1),
            "mu2": (self.mu**2).mean(axis=1),
            "sigma": sigma.mean(axis=1),
            "w2": (self.mu**2 + (sigma - 1.0) ** 2).sum(axis=1),
        }

    def closed_form(self, regime: str, fit_sizes: Sequence[int], sizes: MixSizes) -> dict[str, np.ndarray]:
        if regime != "replace":
            return {}
        return gaussian_closed_form(self.estimator, fit_sizes, self.dim)

    def closed_form_text(self, regime: str, sizes: MixSizes) -> dict[str, str]:
        if regime != "replace":
            return {}
        d = "" if self.dim == 1 else f"{self.dim}·"
        if self.estimator == "mle":
            return {
                "sigma2": "(1 - 1/M)^n",
                "mu2": "1 - (1 - 1/M)^n",
                "sigma": "(c4(M)·sqrt(1 - 1/M))^n",
                "w2": f"{d}(2 - 2·(c4(M)·sqrt(1 - 1/M))^n)",
            }
        return {"sigma2": "1", "mu2": "n/M", "sigma": "c4(M)^n", "w2": f"{d}(n/M + 2(1 - c4(M)^n))"}
