"""Linear regression on its own labels: the setting of Dohmatob et al. 2024 and Gerstgrasser et al. 2024.

A fixed design X (T×d, rows N(0, I)) and a true weight w*. Generation 0 fits
ordinary least squares to labels y = X w* + ε (noise variance σ²); every later
generation's labels are X ŵ + ε from the previous fit. The tracked error is
‖ŵₙ − w*‖² (the excess test risk for isotropic inputs).

Pools do not copy X: an example is (row index into X, label), so a pool is a
float array (K, N, 2). The fit turns a training set into per-row counts and
label sums, XᵀWX and XᵀWy, which is exact for any plan (rows repeated under
``accumulate``, subsets under ``accumulate_subsample``) and cheap even when the
accumulated training set is large.

``design``: ``per_trial`` draws an X for each trial, so the mean over trials
estimates the expectation over X too; ``shared`` uses one X for all trials.

Closed forms (n = number of fits; each fit sees every row of X once per pool,
i.e. synthetic size = T):

- replace: E‖ŵₙ − w*‖² = n·σ²·τ (Dohmatob et al. 2024; Gerstgrasser et al. 2024),
- accumulate: σ²·τ·Σᵢ₌₁ⁿ 1/i² ≤ (π²/6)·σ²·τ, π²/6 times the first fit's error
  (Gerstgrasser et al. 2024),

where τ = E tr((XᵀX)⁻¹) = d/(T − d − 1) for ``per_trial`` (the inverse-Wishart
mean) and τ = tr((XᵀX)⁻¹) of the one X for ``shared``. Proof sketch for
accumulate: with eₙ = ŵₙ − w* and P = (XᵀX)⁻¹Xᵀ, the n-th fit averages n
label vectors, so n·eₙ = Σ_{i≤n} (e_{i−1} + P εᵢ), hence eₙ = e_{n−1} + P εₙ/n.
- augment with λ a whole number and λ·T synthetic rows (every row of X once
  as human data and λ times as synthetic data, the default sizes for λ ≥ 1):
  σ²·τ·(1 + λ/(1 + 2λ)·(1 − ρ^(2(n−1)))), ρ = λ/(1 + λ), which tends to
  (1 + λ/(1 + 2λ))·σ²·τ ≤ (3/2)·σ²·τ (derived here). With a = P ε₀ the
  human noise and b̄ₙ the mean of the λ synthetic noise vectors of a row
  (E‖P b̄‖² = σ²τ/λ), eₙ = (a + λ(e_{n−1} + P b̄ₙ))/(1 + λ); dₙ = eₙ − a obeys
  dₙ = ρ(d_{n−1} + P b̄ₙ), d₁ = 0, so E‖dₙ‖² = ρ²(E‖d_{n−1}‖² + σ²τ/λ).
No closed form is claimed for the other regimes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from collapse.mixing import MixSizes
from collapse.theory.common import TheoryModel, per_trial_bincount


def regression_closed_form(regime: str, fits: int, noise: float, tau: float, ratio: float = 1.0) -> np.ndarray | None:
    """E‖ŵₙ − w*‖² for n = 1..``fits``; τ = E tr((XᵀX)⁻¹); ``ratio`` = λ of
    augment (a whole number). None for regimes without one."""
    n = np.arange(1, fits + 1, dtype=np.float64)
    if regime == "augment":
        rho = ratio / (1.0 + ratio)
        return noise * tau * (1.0 + ratio / (1.0 + 2.0 * ratio) * (1.0 - rho ** (2.0 * (n - 1.0))))
    if regime == "replace":
        return n * noise * tau
    if regime == "accumulate":
        return noise * tau * np.cumsum(1.0 / n**2)
    return None


def inverse_wishart_trace(dim: int, rows: int) -> float:
    """E tr((XᵀX)⁻¹) for X with ``rows`` i.i.d. N(0, I_dim) rows: d/(T − d − 1)."""
    return dim / (rows - dim - 1)


class RegressionModel(TheoryModel):
    """K chains of least squares on a fixed design. Pools: (K, N, 2) = (row, label)."""

    name = "regression"
    quantities = ("error",)

    def __init__(self, trials: int, seed: int, dim: int = 10, samples: int = 50, noise: float = 1.0,
                 design: str = "per_trial"):
        super().__init__(trials, seed)
        self.dim = int(dim)
        self.rows = int(samples)  # T
        self.noise = float(noise)  # σ², a variance
        self.design = design
        k_x = self.trials if design == "per_trial" else 1
        self.X = self.rng(0, "design").standard_normal((k_x, self.rows, self.dim))  # (K or 1, T, d)
        w = self.rng(0, "truth").standard_normal(self.dim)
        self.w_star = w / np.linalg.norm(w)  # (d,), unit norm
        gram = np.swapaxes(self.X, 1, 2) @ self.X  # (K or 1, d, d)
        self.gram_inv = np.linalg.inv(gram)
        self.tau_design = float(np.trace(self.gram_inv, axis1=1, axis2=2).mean())
        self.w = np.broadcast_to(self.w_star, (self.trials, self.dim)).copy()  # (K, d)

    def params(self) -> Mapping[str, Any]:
        return {"dim": self.dim, "samples": self.rows, "noise": self.noise, "design": self.design}

    @property
    def tau(self) -> float:
        """τ of the closed forms: E tr((XᵀX)⁻¹) over X (per_trial) or tr of the one X (shared)."""
        return inverse_wishart_trace(self.dim, self.rows) if self.design == "per_trial" else self.tau_design

    def _labelled(self, w: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """n examples, rows 0, 1, … (mod T), labelled X w + ε → (K, n, 2)."""
        noise = rng.standard_normal((self.trials, n))  # (K, n), drawn first: chunking never changes it
        pool = np.empty((self.trials, n, 2))
        pool[..., 0] = np.arange(n) % self.rows
        w = np.broadcast_to(w, (self.trials, self.dim))
        # T rows at a time, each chunk a view of X (rows 0..T-1): no (K, n, d) copy.
        for s in range(0, n, self.rows):
            e = min(s + self.rows, n)
            xr = self.X[:, : e - s, :]  # (K or 1, e - s, d)
            mean = np.einsum("knd,kd->kn", xr, w) if xr.shape[0] > 1 else w @ xr[0].T  # (K, e - s)
            pool[:, s:e, 1] = mean + np.sqrt(self.noise) * noise[:, s:e]
        return pool

    def human_pools(self, sizes: MixSizes, fresh_total: int) -> dict[str, np.ndarray]:
        pools = {"human": self._labelled(self.w_star, sizes.human, self.rng(0, "human"))}
        if fresh_total:
            pools["human_fresh"] = self._labelled(self.w_star, fresh_total, self.rng(0, "hfresh"))
        return pools

    def fit(self, train: np.ndarray, generation: int) -> dict[str, float]:
        # train: (K, N, 2); XᵀWX and XᵀWy from per-row counts W and label sums.
        # Views, not copies: the accumulated training set can be GBs; the
        # bincount converts the row indices block by block.
        counts = per_trial_bincount(train[..., 0], self.rows)  # (K, T)
        ysum = per_trial_bincount(train[..., 0], self.rows, train[..., 1])  # (K, T)
        self._solve(counts, ysum)
        return {"train_size": float(train.shape[1])}

    def _solve(self, counts: np.ndarray, ysum: np.ndarray) -> None:
        """Weighted least squares from per-row counts W and label sums: XᵀWX ŵ = Xᵀ(label sums)."""
        if self.X.shape[0] == 1:
            b = ysum @ self.X[0]  # (K, d)
        else:
            b = np.einsum("ktd,kt->kd", self.X, ysum)
        c0 = counts[0, 0]
        if np.all(counts == c0) and c0 > 0:
            # Every row seen c0 times in every trial (replace, accumulate): XᵀWX = c0·XᵀX.
            self.w = (self.gram_inv @ b[..., None])[..., 0] / c0 if self.X.shape[0] > 1 \
                else b @ self.gram_inv[0].T / c0
        else:
            if self.X.shape[0] == 1 and np.all(counts == counts[0]):
                gram = (self.X[0].T * counts[0]) @ self.X[0]  # (d, d), one for all trials
                gram = np.broadcast_to(gram, (self.trials, self.dim, self.dim))
            else:
                xw = self.X * counts[..., None]  # (K, T, d)
                gram = np.swapaxes(xw, 1, 2) @ np.broadcast_to(self.X, xw.shape)  # (K, d, d)
            try:
                self.w = np.linalg.solve(gram, b[..., None])[..., 0]
            except np.linalg.LinAlgError:
                # Too few distinct rows in some trial: minimum-norm least squares.
                self.w = (np.linalg.pinv(gram) @ b[..., None])[..., 0]

    # Sufficient statistics for accumulate: per-row counts and label sums, additive.
    # Not for accumulate_subsample: a subset's label sums depend on which
    # labels it draws, so that regime keeps the pools (collapse.mixing.UnionBuffer).
    def pool_stats(self, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (per_trial_bincount(pool[..., 0], self.rows), per_trial_bincount(pool[..., 0], self.rows, pool[..., 1]))

    def merge_stats(self, a: tuple, b: tuple) -> tuple[np.ndarray, np.ndarray]:
        return a[0] + b[0], a[1] + b[1]

    def fit_stats(self, stats: tuple, generation: int) -> dict[str, float]:
        self._solve(*stats)
        return {"train_size": float(stats[0][0].sum())}

    def draw(self, n: int, generation: int) -> np.ndarray:
        return self._labelled(self.w, n, self.rng(generation, "sample"))

    def true_loglik(self, samples: np.ndarray) -> np.ndarray:
        # log N(y; x·w*, σ²) up to a constant: how far each label is from the truth.
        truth = np.einsum("ktd,d->kt", self.X, self.w_star)  # (K or 1, T)
        rows = samples[..., 0].astype(np.int64)
        mean = np.take_along_axis(np.broadcast_to(truth, (self.trials, self.rows)), rows, axis=1)
        return -0.5 * (samples[..., 1] - mean) ** 2 / max(self.noise, 1e-300)

    def measure(self) -> dict[str, np.ndarray]:
        return {"error": ((self.w - self.w_star) ** 2).sum(axis=1)}

    def _claims(self, regime: str, sizes: MixSizes) -> bool:
        # The closed forms assume each pool holds every row of X once (augment:
        # λ times, all of it taken).
        if regime == "augment":
            lam = sizes.synthetic_ratio
            return (lam == int(lam) and sizes.human == self.rows
                    and sizes.augment_count() in (0, sizes.synthetic) and sizes.synthetic % self.rows == 0)
        return regime in ("replace", "accumulate") and sizes.human == self.rows and sizes.synthetic == self.rows

    def closed_form(self, regime: str, fit_sizes: Sequence[int], sizes: MixSizes) -> dict[str, np.ndarray]:
        if self.verify is not None or not self._claims(regime, sizes):
            return {}
        out = regression_closed_form(regime, len(fit_sizes), self.noise, self.tau, sizes.synthetic_ratio)
        return {} if out is None else {"error": out}

    def closed_form_text(self, regime: str, sizes: MixSizes) -> dict[str, str]:
        if self.verify is not None or not self._claims(regime, sizes):
            return {}
        tau = "d/(T - d - 1)" if self.design == "per_trial" else "tr((X^T X)^-1)"
        if regime == "replace":
            return {"error": f"n·σ²·{tau}"}
        if regime == "augment":
            return {"error": f"σ²·{tau}·(1 + λ/(1+2λ)·(1 - (λ/(1+λ))^(2(n-1))))"}
        return {"error": f"σ²·{tau}·Σ_(i=1..n) 1/i² ≤ (π²/6)·σ²·{tau}"}
