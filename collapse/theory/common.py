"""What the four theory models share: the model base class and per-trial helpers.

A theory model is a :class:`collapse.generator.Generator` that runs K
independent trials at once. Its pools are numpy arrays of shape
(K, samples, ...) with samples on axis 1, so ``collapse.loop.run_generations(...,
axis=1)`` and ``collapse.mixing.apply_plan`` drive it exactly as they drive the
code LMs. ``evaluate`` summarises per-trial values (mean and standard error over
the K trials); the per-trial values themselves stay on ``trial_values`` for
callers that need them (tests, the runner). Generation g's model is the
(g + 1)-th fit of the chain, so closed forms are indexed by n = g + 1.

Verification (Feng et al. 2024): with ``verify`` = q ∈ (0, 1], ``sample``
draws ⌈n/q⌉ candidates per trial and keeps the n that a verifier scores
highest. The verifier's score is the log-likelihood under the true
(generation-0) distribution, plus Gaussian noise of ``verify_noise`` times the
score's standard deviation over the trial's candidates (0: a perfect
verifier; large: random selection, i.e. no verification).

The models and their closed forms follow Shumailov et al. 2024 (Gaussian,
mixture, tails), Bertrand et al. 2024 (Gaussian), Dohmatob et al. 2024 and
Gerstgrasser et al. 2024 (regression, replace vs accumulate) and Kazdan et
al. 2024 (accumulate_subsample).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from collapse.mixing import MixSizes, generation_rng


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Mean over trials and its standard error (NaN when there is one trial)."""
    values = np.asarray(values, dtype=np.float64)
    k = values.shape[0]
    mean = float(values.mean())
    se = float(values.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
    return mean, se


def per_trial_bincount(idx: np.ndarray, length: int, weights: np.ndarray | None = None) -> np.ndarray:
    """``np.bincount`` of every row of ``idx`` (K, N; integer-valued, any dtype) at once → (K, length).

    Row r's values go to bins [r·length, (r+1)·length) of one flat bincount,
    block by block over rows so the offset indices stay a small buffer."""
    k, n = idx.shape
    out = np.empty((k, length), dtype=np.int64 if weights is None else np.float64)
    step = max(1, (1 << 18) // max(1, n))
    for s in range(0, k, step):
        blk = idx[s:s + step]
        rows = blk.shape[0]
        flat = (blk.astype(np.int64) + (np.arange(rows, dtype=np.int64) * length)[:, None]).ravel()
        w = None if weights is None else weights[s:s + step].ravel()
        out[s:s + step] = np.bincount(flat, weights=w, minlength=rows * length).reshape(rows, length)
    return out


class TheoryModel(ABC):
    """Base of the analytic generators: K trials, a seed, per-trial measurements.

    Subclasses define ``fit``, ``sample``, ``measure`` (per-trial values of
    each name in ``quantities``, from the fitted model), ``human_pools`` and
    ``closed_form``."""

    name: ClassVar[str] = ""
    quantities: ClassVar[tuple[str, ...]] = ()

    def __init__(self, trials: int, seed: int):
        self.trials = int(trials)
        self.seed = int(seed)
        self.trial_values: dict[str, np.ndarray] = {}
        self.verify: float | None = None  # fraction of candidates kept by the verifier; None = no selection
        self.verify_noise: float = 0.0

    # -------------------------------------------------------------- protocol
    @abstractmethod
    def fit(self, train: np.ndarray, generation: int) -> dict[str, float]:
        """Refit every trial's model on its training set (K, N, ...)."""

    @abstractmethod
    def draw(self, n: int, generation: int) -> np.ndarray:
        """Draw n samples per trial from the fitted models: (K, n, ...)."""

    def true_loglik(self, samples: np.ndarray) -> np.ndarray:
        """Log-likelihood (K, n) of samples (K, n, ...) under the true distribution: the verifier's score."""
        raise NotImplementedError(f"{self.name}: no verifier")

    def sample(self, n: int, generation: int) -> np.ndarray:
        """n samples per trial: ``draw``, or with ``verify`` the best n of ⌈n/q⌉ drawn candidates."""
        if self.verify is None or self.verify >= 1.0:
            return self.draw(n, generation)
        cand = self.draw(int(np.ceil(n / self.verify)), generation)
        score = self.true_loglik(cand)  # (K, m)
        if self.verify_noise > 0:
            spread = score.std(axis=1, keepdims=True)
            score = score + self.verify_noise * spread * self.rng(generation, "verify").standard_normal(score.shape)
        keep = np.sort(np.argpartition(-score, n - 1, axis=1)[:, :n], axis=1)  # (K, n)
        return np.take_along_axis(cand, keep.reshape(keep.shape + (1,) * (cand.ndim - 2)), axis=1)

    @abstractmethod
    def measure(self) -> dict[str, np.ndarray]:
        """Per-trial values (K,) of each tracked quantity for the fitted model."""

    def evaluate(self, drawn: Any, generation: int) -> dict[str, float]:
        """Mean and standard error over trials of every tracked quantity
        (``name`` and ``name_se``), measured on the fitted model (the samples
        in ``drawn`` are not needed); per-trial values go to ``trial_values``."""
        self.trial_values = {q: np.asarray(v, dtype=np.float64) for q, v in self.measure().items()}
        out: dict[str, float] = {}
        for q in self.quantities:
            out[q], out[f"{q}_se"] = mean_and_se(self.trial_values[q])
        return out

    # ------------------------------------------------------------ the runner
    def rng(self, generation: int, purpose: str) -> np.random.Generator:
        return generation_rng(self.seed, generation, purpose)

    @abstractmethod
    def human_pools(self, sizes: MixSizes, fresh_total: int) -> dict[str, np.ndarray]:
        """``human`` (K, sizes.human, ...) drawn from the starting distribution,
        plus ``human_fresh`` (K, fresh_total, ...) when ``fresh_total`` > 0."""

    def closed_form(self, regime: str, fit_sizes: Sequence[int], sizes: MixSizes) -> dict[str, np.ndarray]:
        """Exact expectations of tracked quantities, one value per generation
        (fit n = generation + 1 used ``fit_sizes[n - 1]`` examples). Only
        quantities with a known closed form under ``regime`` appear."""
        return {}

    def closed_form_text(self, regime: str, sizes: MixSizes) -> dict[str, str]:
        """The formulas ``closed_form`` implements, for the record."""
        return {}

    def params(self) -> Mapping[str, Any]:
        return {}
