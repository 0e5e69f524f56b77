"""The categorical chain: a token distribution refitted by counting its own samples.

The token-level picture of losing the tails (Shumailov et al. 2024; Dohmatob
et al. 2024 for the Zipf setting): start from a categorical
distribution p₀ over V categories, uniform or Zipf (pᵢ ∝ i^−β), draw M tokens,
refit p̂ = counts/M, draw M tokens from p̂, and so on. A category that draws no
token is gone for good under ``replace``.

Tracked per generation: ``diversity`` (the Gini–Simpson index 1 − Σᵢ pᵢ²),
``surviving`` (categories with pᵢ > 0), ``tail_mass`` (the mass of the
initial tail: the rarest ``tail_fraction`` of categories under p₀, ties broken
towards the last index), ``entropy`` (Shannon, −Σ pᵢ ln pᵢ, nats) and
``absorbed`` (the share of trials left with a single category: the
distribution function of the time to absorption T, so the mean absorption
time is Σ_g (1 − absorbed_g) once every trial is absorbed). Under ``replace``
the chain is a neutral Wright–Fisher chain; the diffusion approximation of
its mean absorption time from p (Littler 1975) is
E[T] ≈ −2M·Σᵢ (1 − pᵢ)·ln(1 − pᵢ) generations, reported for the record next
to the exact Gini–Simpson law (it is an approximation, not a closed form).

Tail cutting (``truncate``; Dohmatob et al. 2024): ``top_k:K`` samples from
the K most likely categories of the fit (ties: lower index first),
``top_p:P`` from the smallest set of most likely categories whose mass
reaches P, each renormalised. Under ``replace`` at most K categories survive
the first truncated generation and the tail is gone for good; no closed form
is claimed with truncation.

Closed forms (n = number of fits on N_i tokens each):

- ``replace``: E[1 − Σᵢ pₙ,ᵢ²] = Πᵢ(1 − 1/N_i)·(1 − Σᵢ p₀,ᵢ²) = (1 − 1/M)ⁿ·(1 − Σ p₀²),
  since E[Σ p̂ᵢ² | p] = 1/N + (1 − 1/N)·Σ pᵢ² for N multinomial draws.
- ``replace`` and ``accumulate``: E[pₙ] = p₀ (each fit is an average of
  empirical frequencies of draws whose expectation is p₀), so the expected
  tail mass stays at its initial value even as most trials lose the tail;
  so does ``augment``, whose fits average the human frequencies with draws
  whose expectation is p₀.
- ``accumulate`` and ``augment`` (derived here): the diversity from
  Q_g = E[Σᵢ c_g,ᵢ²] of the fit's counts, 1 − Q_g/N_g². Adding Y ∼
  Multinomial(k, c/N) to counts c gives E[Σ(c + Y)²] = Q·(1 + 2k/N + (k² − k)/N²) + k;
  Q_0 = H = n + n(n − 1)·Σ p₀² for the n human tokens.
  accumulate (k = m per generation, N_g = n + g·m): Q_g = Q_{g−1}(1 + 2m/N_{g−1} + (m² − m)/N_{g−1}²) + m.
  augment (human counts h plus k = round(λ·n) draws, N = n + k): with
  R_g = E[Σ hᵢ c_g,ᵢ], R_0 = H, R_g = H + k·R_{g−1}/N_{g−1} and
  Q_g = H + 2k·R_{g−1}/N_{g−1} + k − k·Q_{g−1}/N_{g−1}² + k²·Q_{g−1}/N_{g−1}².
No closed form is claimed for the other regimes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from collapse.mixing import MixSizes, uniform_subset_indices
from collapse.theory.common import TheoryModel


def zipf_probabilities(categories: int, exponent: float) -> np.ndarray:
    """pᵢ ∝ i^−β for i = 1..V (β = 0: uniform)."""
    p = np.arange(1, categories + 1, dtype=np.float64) ** -float(exponent)
    return p / p.sum()


def tail_categories(p0: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the rarest ``fraction`` of categories under p0 (at least one)."""
    n_tail = max(1, int(round(fraction * p0.size)))
    order = np.argsort(-p0, kind="stable")  # most likely first; ties keep index order
    return np.sort(order[-n_tail:])


def absorption_time_diffusion(p: np.ndarray, samples: int) -> float:
    """Littler's (1975) diffusion approximation of the mean number of
    generations until one category is left, for M tokens per generation
    started at p: −2M·Σ (1 − pᵢ) ln(1 − pᵢ)."""
    p = np.asarray(p, dtype=np.float64)
    q = 1.0 - p[p > 0]
    return float(-2.0 * samples * np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)))


def parse_truncate(text: str | None) -> tuple[str, float] | None:
    """``top_k:K`` or ``top_p:P`` → (kind, value); None stays None. ValueError on anything else."""
    if text is None:
        return None
    kind, _, value = str(text).partition(":")
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if kind == "top_k" and v == int(v) and v >= 1:
        return kind, int(v)
    if kind == "top_p" and 0.0 < v <= 1.0:
        return kind, v
    raise ValueError(f"expected top_k:K (K >= 1) or top_p:P (0 < P <= 1), got {text!r}")


def truncation_weights(counts: np.ndarray, truncate: tuple[str, float]) -> np.ndarray:
    """Counts (K, V) with every category outside the top-k / top-p set zeroed."""
    kind, value = truncate
    order = np.argsort(-counts, axis=1, kind="stable")  # most likely first; ties keep index order
    ranked = np.take_along_axis(counts, order, axis=1)
    if kind == "top_k":
        keep_ranked = np.arange(counts.shape[1]) < value
    else:
        total = ranked.sum(axis=1, keepdims=True)
        before = np.cumsum(ranked, axis=1) - ranked  # mass of the more likely categories
        keep_ranked = before < value * total
    keep = np.zeros(counts.shape, dtype=bool)
    np.put_along_axis(keep, order, np.broadcast_to(keep_ranked, counts.shape), axis=1)
    return np.where(keep, counts, 0)


def draw_from_counts(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n categories per row drawn with probability ∝ integer ``weights`` (K, V) → (K, n) int32.

    One searchsorted over the rows' cumulative weights laid end to end."""
    k, v = weights.shape
    cum = np.cumsum(weights, axis=1)  # (K, V)
    total = cum[:, -1]
    span = int(total.max()) + 1
    base = np.arange(k, dtype=np.int64) * span
    u = np.floor(rng.random((k, n)) * total[:, None]).astype(np.int64)  # uniform in [0, total)
    flat = np.searchsorted((cum + base[:, None]).ravel(), (u + base[:, None]).ravel(), side="right")
    return (flat.reshape(k, n) - (np.arange(k) * v)[:, None]).astype(np.int32)


def categories_at(cum: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The category at token position ``pos`` (K, n) when each row's tokens lie
    in category order, given the rows' cumulative counts ``cum`` (K, W):
    #{v : cum[v] ≤ pos}, every pos < cum[:, -1] → (K, n) int32.

    Compiled (``collapse.theory.kernels.categories_rows``): per row, W buckets
    of total/W positions each give every position a start no later than its
    category (the category of the bucket's first position), from which it steps
    past the ends at or before it, a fraction of a step per position on
    average. O(W + n) per row, rows in parallel."""
    from collapse.theory import kernels  # deferred: numba

    cum = np.ascontiguousarray(cum, dtype=np.int64)
    pos = np.ascontiguousarray(pos, dtype=np.int64)
    out = np.empty(pos.shape, dtype=np.int32)
    if out.size:
        kernels.categories_rows(cum, pos, out)
    return out


def sample_counts(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n tokens per row from the empirical distributions counts/N (K, V), every
    row summing to the same N → (K, n) int32.

    A draw is the token at a uniform position of the row's N tokens laid out in
    category order, which is a draw from counts/N exactly; the positions are
    the draws the token-based sampler made before (one ``integers(0, N)`` per
    token), so any path that reaches the same counts draws the same tokens.
    The positions' categories come from the cumulative counts in a compiled
    kernel (``collapse.theory.kernels.sample_rows``, as :func:`categories_at`),
    so memory and time stay O(K·(V + n)) however many tokens an accumulated fit
    has seen."""
    from collapse.theory import kernels  # deferred: numba

    k, v = counts.shape
    total = int(counts[0].sum())
    pick = rng.integers(0, total, size=(k, n), dtype=np.int32)
    out = np.empty((k, n), dtype=np.int32)
    if out.size:
        kernels.sample_rows(np.ascontiguousarray(counts, dtype=np.int64), pick, out)
    return out


def bincount_rows(idx: np.ndarray, length: int) -> np.ndarray:
    """``np.bincount`` of every row of ``idx`` (K, N; values in [0, length)) → (K, length) int64,
    compiled (``collapse.theory.kernels.bincount_rows``; ``per_trial_bincount`` in numpy)."""
    from collapse.theory import kernels  # deferred: numba

    out = np.empty((idx.shape[0], length), dtype=np.int64)
    kernels.bincount_rows(np.ascontiguousarray(idx, dtype=np.int32), out)
    return out


def categorical_merge_diversity(regime: str, p0: np.ndarray, fits: int, human: int, added: int) -> np.ndarray:
    """E[1 − Σ pₙ²] per fit under ``accumulate`` (``added`` = m tokens per
    generation) or ``augment`` (``added`` = round(λ·n) tokens per training set)."""
    n, k = float(human), float(added)
    h = n + n * (n - 1.0) * float(np.sum(p0**2))
    q = np.empty(fits)
    sizes = np.empty(fits)
    q[0], sizes[0], r = h, n, h
    for g in range(1, fits):
        big = sizes[g - 1]
        if regime == "accumulate":
            q[g] = q[g - 1] * (1.0 + 2.0 * k / big + (k * k - k) / big**2) + k
        else:
            q[g] = h + 2.0 * k * r / big + k - k * q[g - 1] / big**2 + k * k * q[g - 1] / big**2
            r = h + k * r / big
        sizes[g] = big + k if regime == "accumulate" else n + k
    return 1.0 - q / sizes**2


def categorical_closed_form(regime: str, p0: np.ndarray, tail: np.ndarray, fit_sizes: Sequence[int],
                            sizes: MixSizes | None = None) -> dict[str, np.ndarray]:
    """Closed forms per fit: ``diversity`` under replace (and accumulate and
    augment when ``sizes`` is given), ``tail_mass`` under replace, accumulate and augment."""
    n_fits = len(fit_sizes)
    out: dict[str, np.ndarray] = {}
    if regime == "replace":
        n_i = np.asarray(fit_sizes, dtype=np.float64)
        out["diversity"] = np.cumprod(1.0 - 1.0 / n_i) * (1.0 - float(np.sum(p0**2)))
    if sizes is not None and regime in ("accumulate", "augment"):
        added = sizes.synthetic if regime == "accumulate" else sizes.augment_count()
        out["diversity"] = categorical_merge_diversity(regime, p0, n_fits, sizes.human, added)
    if regime in ("replace", "accumulate", "augment"):
        out["tail_mass"] = np.full(n_fits, float(p0[tail].sum()))
    return out


def entropy_of_counts(c: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of the distributions c/n, rows of counts (K, V) → (K,).

    H = ln n − Σ c ln c / n, with c ln c looked up in a table of the integers
    up to the largest count (a gather instead of a log per cell). The numpy
    reference of :func:`count_measures`, which gives the same values bit for bit."""
    top = int(c.max()) if c.size else 0
    table = np.arange(top + 1, dtype=np.float64)
    table[1:] *= np.log(table[1:])
    out = np.zeros(c.shape[0])
    step = max(1, (1 << 20) // max(1, c.shape[1]))
    for s in range(0, c.shape[0], step):
        clogc = np.take(table, c[s:s + step]).sum(axis=1)
        h = np.log(n[s:s + step]) - clogc / n[s:s + step]
        out[s:s + step] = np.maximum(h, 0.0)  # rounding can leave -1e-16 for a single category
    return out


def count_measures(c: np.ndarray, tail: np.ndarray) -> dict[str, np.ndarray]:
    """The tracked quantities of counts c (K, V) with the tail categories ``tail``.

    Two compiled passes over the counts (``collapse.theory.kernels``): Σc, Σc²,
    the live categories and the tail's counts per row, exact in integers, then
    Σ c ln c from a table of the integers up to the largest count, summed in
    numpy's order; the rest is the numpy arithmetic of before, so the values
    are those of the numpy formulas bit for bit (a test checks them, and
    :func:`entropy_of_counts`)."""
    from collapse.theory import kernels  # deferred: numba

    c = np.ascontiguousarray(c, dtype=np.int64)
    k, v = c.shape
    mask = np.zeros(v, dtype=np.bool_)
    mask[tail] = True
    total, squares, live, tail_sum = (np.empty(k, dtype=np.int64) for _ in range(4))
    top = int(kernels.count_summary_rows(c, mask, total, squares, live, tail_sum))
    table = np.arange(top + 1, dtype=np.float64)
    table[1:] *= np.log(table[1:])
    clogc = np.empty(k)
    kernels.table_sum_rows(c, table, clogc)
    n = total.astype(np.float64)
    return {
        "diversity": 1.0 - squares / n**2,
        "surviving": live.astype(np.float64),
        "tail_mass": tail_sum / n,
        "entropy": np.maximum(np.log(n) - clogc / n, 0.0),  # rounding can leave -1e-16 for a single category
        "absorbed": (live == 1).astype(np.float64),
    }


class CategoricalModel(TheoryModel):
    """K chains of a categorical distribution over V categories. Pools: (K, N) int32 tokens."""

    name = "categorical"
    quantities = ("diversity", "surviving", "tail_mass", "entropy", "absorbed")

    def __init__(self, trials: int, seed: int, categories: int = 100, samples: int = 100, zipf: float = 1.0,
                 tail_fraction: float = 0.1, truncate: str | None = None):
        super().__init__(trials, seed)
        self.truncate = parse_truncate(truncate)
        self.categories = int(categories)
        self.samples = int(samples)
        self.zipf = float(zipf)
        self.tail_fraction = float(tail_fraction)
        self.p0 = zipf_probabilities(self.categories, self.zipf)  # (V,)
        self.tail = tail_categories(self.p0, self.tail_fraction)
        self.counts = np.zeros((self.trials, self.categories), dtype=np.int64)

    def params(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {"categories": self.categories, "samples": self.samples, "zipf": self.zipf,
                               "tail_fraction": self.tail_fraction}
        if self.truncate is not None:
            out["truncate"] = f"{self.truncate[0]}:{self.truncate[1]}"
        return out

    def _draw_p0(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(self.categories, size=(self.trials, n), p=self.p0).astype(np.int32)

    def human_pools(self, sizes: MixSizes, fresh_total: int) -> dict[str, np.ndarray]:
        pools = {"human": self._draw_p0(sizes.human, self.rng(0, "human"))}
        if fresh_total:
            pools["human_fresh"] = self._draw_p0(fresh_total, self.rng(0, "hfresh"))
        return pools

    def fit(self, train: np.ndarray, generation: int) -> dict[str, float]:
        # train: (K, N) tokens; p̂ = counts / N.
        return self.fit_stats(self.pool_stats(train), generation)

    # Sufficient statistics: the counts (K, V), additive. The fit is the
    # counts and a draw needs nothing else (``sample_counts``), so under
    # accumulate the loop merges each pool's counts and drops the pool: memory
    # and time per generation stay flat however many tokens have accumulated.
    def pool_stats(self, pool: np.ndarray) -> np.ndarray:
        return bincount_rows(pool, self.categories)

    def merge_stats(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def fit_stats(self, stats: np.ndarray, generation: int) -> dict[str, float]:
        self.counts = stats
        return {"train_size": float(stats[0].sum())}

    def subsample_stats(self, parts: Sequence[np.ndarray], sizes: Sequence[int], count: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
        """Counts (K, V) of every trial's uniform draw of ``count`` tokens from the
        union of ``parts`` (counts (K, V) of ``sizes[i]`` tokens each), and how
        many came from each part (K,): ``accumulate_subsample`` without the pools.

        The union's tokens are laid out part by part, each in category order;
        a uniform subset of positions (``collapse.mixing.uniform_subset_indices``)
        is a uniform subset of the tokens, so the counts are the multivariate
        hypergeometric draw a subsample of the pools gives."""
        v = self.categories
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        cum = np.concatenate([np.cumsum(c, axis=1) + off for c, off in zip(parts, offsets)], axis=1)
        pos = uniform_subset_indices(rng, self.trials, int(sum(sizes)), count)
        at = categories_at(cum, pos)  # part·V + category
        part = at // v
        counts = bincount_rows(at - part * v, v)
        return counts, [np.count_nonzero(part == i, axis=1) for i in range(len(parts))]

    @property
    def p(self) -> np.ndarray:
        """The fitted distributions (K, V)."""
        return self.counts / self.counts.sum(axis=1, keepdims=True)

    def draw(self, n: int, generation: int) -> np.ndarray:
        # p̂ = counts/N is the empirical distribution of the training tokens: a
        # draw is the token at a uniform position of the N tokens in category order.
        if self.truncate is not None:
            return draw_from_counts(truncation_weights(self.counts, self.truncate), n, self.rng(generation, "sample"))
        assert self.counts.any(), "sample() before fit()"
        return sample_counts(self.counts, n, self.rng(generation, "sample"))

    def measure(self) -> dict[str, np.ndarray]:
        # From the counts c (K, V) and N = Σc, compiled passes: Σ p² = Σ c²/N², no (K, V) float temporaries.
        return count_measures(self.counts, self.tail)

    def true_loglik(self, samples: np.ndarray) -> np.ndarray:
        return np.log(self.p0)[samples]

    def closed_form(self, regime: str, fit_sizes: Sequence[int], sizes: MixSizes) -> dict[str, np.ndarray]:
        if self.truncate is not None or self.verify is not None:
            return {}
        return categorical_closed_form(regime, self.p0, self.tail, fit_sizes, sizes)

    def closed_form_text(self, regime: str, sizes: MixSizes) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.truncate is not None or self.verify is not None:
            return out
        if regime == "replace":
            out["diversity"] = "(1 - 1/M)^n·(1 - Σ_i p0_i²)"
        if regime == "accumulate":
            out["diversity"] = "1 - Q_n/N_n², Q_n = Q_(n-1)(1 + 2m/N_(n-1) + (m² - m)/N_(n-1)²) + m, Q_1 = M + M(M-1)Σp0², N_n = M + (n-1)m"
        if regime == "augment":
            out["diversity"] = "1 - Q_n/N_n², Q_n = H + 2kR/N + k - kQ/N² + k²Q/N² (R, Q, N of fit n-1), R_n = H + kR/N, H = M + M(M-1)Σp0², k = round(λM)"
        if regime in ("replace", "accumulate", "augment"):
            out["tail_mass"] = "Σ_(i in tail) p0_i (E[p_n] = p0)"
        return out
