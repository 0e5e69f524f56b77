"""Kernel density estimation refitted on its own samples (Kazdan et al. 2024).

Start from N(0, 1). Each generation fits a 1-D Gaussian KDE to its training
set x₁..x_N, f(x) = (1/N) Σ_j N(x; x_j, h²), and samples from it (a training
point chosen uniformly plus h·z). Bandwidth rule (``bandwidth``): ``scott``
h = s·N^(−1/5), ``silverman`` h = s·(3N/4)^(−1/5) (scipy.stats.gaussian_kde's
factors in one dimension, s the sample standard deviation with ddof 1), or
``fixed`` h = ``fixed_bandwidth``.

Tracked: ``l2_gen0``, the squared L2 distance ∫(fₙ − f₀)² to the trial's
generation-0 KDE (exact: ∫N(x; a, s²)N(x; b, t²)dx = N(a − b; 0, s² + t²)),
``variance``, the KDE's variance (N − 1)/N·s² + h², and ``bandwidth``.

Closed forms under ``replace`` (M samples per fit, a = (M − 1)/M, n fits):
a draw of the KDE has the KDE's variance, and s² is unbiased for it, so
E[s²ₙ] = E[Vₙ₋₁] with V the KDE variance, E[s₁²] = 1. With a fixed bandwidth
E[Vₙ] = a·E[Vₙ₋₁] + h², i.e. E[Vₙ] = aⁿ⁻¹(a + h²) + h²(1 − aⁿ⁻¹)/(1 − a);
with h = c·s (Scott: c = M^(−1/5); Silverman: c = (3M/4)^(−1/5))
E[Vₙ] = (a + c²)ⁿ, which exceeds 1 for the usual sizes: the KDE's variance
grows geometrically (smoothing adds c²s² every generation), the opposite of
the Gaussian MLE's collapse. No closed form is claimed for ``l2_gen0`` or for
other regimes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from collapse.mixing import MixSizes
from collapse.theory.common import TheoryModel

_LOG_2PI = float(np.log(2.0 * np.pi))


def bandwidth_factor(rule: str, n: int) -> float:
    """c of h = c·s for the scott and silverman rules (1-D)."""
    if rule == "scott":
        return float(n ** (-1.0 / 5.0))
    if rule == "silverman":
        return float((n * 3.0 / 4.0) ** (-1.0 / 5.0))
    raise ValueError(f"unknown bandwidth rule {rule!r}")


def kde_variance_closed_form(rule: str, fits: int, samples: int, fixed: float = 1.0) -> np.ndarray:
    """E[Vₙ] of the KDE under replace, n = 1..fits."""
    a = (samples - 1.0) / samples
    n = np.arange(1, fits + 1, dtype=np.float64)
    if rule == "fixed":
        h2 = fixed * fixed
        return a ** (n - 1.0) * (a + h2) + h2 * (1.0 - a ** (n - 1.0)) / (1.0 - a)
    c = bandwidth_factor(rule, samples)
    return (a + c * c) ** n


def _cross(xa: np.ndarray, ha: np.ndarray, xb: np.ndarray, hb: np.ndarray) -> np.ndarray:
    """∫ f_a f_b for K pairs of KDEs: points (K, N), bandwidths (K,) → (K,)."""
    k = xa.shape[0]
    out = np.empty(k)
    step = max(1, (1 << 20) // max(1, xa.shape[1] * xb.shape[1]))
    for s in range(0, k, step):
        e = min(s + step, k)
        var = (ha[s:e] ** 2 + hb[s:e] ** 2)[:, None, None]
        d = xa[s:e, :, None] - xb[s:e, None, :]
        g = np.exp(-0.5 * d * d / var - 0.5 * (_LOG_2PI + np.log(var)))
        out[s:e] = g.mean(axis=(1, 2))
    return out


class KDEModel(TheoryModel):
    """K chains of a 1-D Gaussian KDE. Pools: (K, N) floats."""

    name = "kde"
    quantities = ("l2_gen0", "variance", "bandwidth")

    def __init__(self, trials: int, seed: int, samples: int = 100, bandwidth: str = "scott",
                 fixed_bandwidth: float = 0.3):
        super().__init__(trials, seed)
        self.samples = int(samples)
        self.rule = bandwidth
        self.fixed_bandwidth = float(fixed_bandwidth)
        self.points = np.zeros((self.trials, 1))
        self.h = np.ones(self.trials)
        self.points0: np.ndarray | None = None
        self.h0: np.ndarray | None = None
        self.self0: np.ndarray | None = None

    def params(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {"samples": self.samples, "bandwidth": self.rule}
        if self.rule == "fixed":
            out["fixed_bandwidth"] = self.fixed_bandwidth
        return out

    def human_pools(self, sizes: MixSizes, fresh_total: int) -> dict[str, np.ndarray]:
        pools = {"human": self.rng(0, "human").standard_normal((self.trials, sizes.human))}
        if fresh_total:
            pools["human_fresh"] = self.rng(0, "hfresh").standard_normal((self.trials, fresh_total))
        return pools

    def fit(self, train: np.ndarray, generation: int) -> dict[str, float]:
        n = train.shape[1]
        self.points = np.array(train, dtype=np.float64)
        if self.rule == "fixed":
            self.h = np.full(self.trials, self.fixed_bandwidth)
        else:
            self.h = bandwidth_factor(self.rule, n) * train.std(axis=1, ddof=1)
        if self.points0 is None:
            self.points0, self.h0 = self.points, self.h
            self.self0 = _cross(self.points0, self.h0, self.points0, self.h0)
        return {"train_size": float(n)}

    def draw(self, n: int, generation: int) -> np.ndarray:
        rng = self.rng(generation, "sample")
        pick = rng.integers(0, self.points.shape[1], size=(self.trials, n))
        return np.take_along_axis(self.points, pick, axis=1) + self.h[:, None] * rng.standard_normal((self.trials, n))

    def true_loglik(self, samples: np.ndarray) -> np.ndarray:
        return -0.5 * samples * samples

    def measure(self) -> dict[str, np.ndarray]:
        assert self.points0 is not None and self.h0 is not None and self.self0 is not None
        l2 = (_cross(self.points, self.h, self.points, self.h) - 2.0 * _cross(self.points, self.h, self.points0, self.h0)
              + self.self0)
        return {"l2_gen0": np.maximum(l2, 0.0), "variance": self.points.var(axis=1) + self.h**2, "bandwidth": self.h.copy()}

    def _claims(self, regime: str, fit_sizes: Sequence[int]) -> bool:
        return regime == "replace" and self.verify is None and all(f == self.samples for f in fit_sizes)

    def closed_form(self, regime: str, fit_sizes: Sequence[int], sizes: MixSizes) -> dict[str, np.ndarray]:
        if not self._claims(regime, fit_sizes):
            return {}
        return {"variance": kde_variance_closed_form(self.rule, len(fit_sizes), self.samples, self.fixed_bandwidth)}

    def closed_form_text(self, regime: str, sizes: MixSizes) -> dict[str, str]:
        if regime != "replace" or self.verify is not None or sizes.synthetic != self.samples:
            return {}
        if self.rule == "fixed":
            return {"variance": "a^(n-1)(a + h²) + h²(1 - a^(n-1))/(1 - a), a = (M - 1)/M"}
        c = "M^(-1/5)" if self.rule == "scott" else "(3M/4)^(-1/5)"
        return {"variance": f"((M - 1)/M + c²)^n, c = {c}"}
