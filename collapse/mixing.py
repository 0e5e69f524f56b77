"""Mixing regimes: which pools each generation's training set is drawn from.

A regime is a small pure function ``(generation, pool sizes, mix config, rng)
→ Plan``. A plan says how many examples to take from which pool; applying it
to ``datasets.Dataset`` pools (code LMs) or numpy arrays (theory models) is a
separate step, so the same plans drive every generator and are logged as the
record of each generation's composition.

Pools are named ``human`` (the human training pool of generation 0),
``human_fresh`` (the rest of the human train split, which ``fresh`` consumes in
consecutive chunks) and ``synthetic_<g>`` (the samples of generation g). Generation 0 always trains on the human pool alone.

Regimes (generation g ≥ 1, n = human pool size, m = synthetic samples per
generation):

- ``replace``: the newest synthetic pool only (Shumailov et al. 2024).
- ``accumulate``: all human data plus every synthetic pool so far
  (Gerstgrasser et al. 2024).
- ``accumulate_subsample``: a fixed-size uniform draw (default n) from the
  accumulated pool; per-pool counts follow a multivariate hypergeometric draw
  (Gerstgrasser et al. 2024; Kazdan et al. 2024).
- ``fixed_fraction``: round(p·n) human examples (a fresh random subset each
  generation) plus n − round(p·n) from the newest synthetic pool; p = 0.1 is
  Shumailov et al.'s setting.
- ``fresh``: a new, never-used chunk of human data plus the newest synthetic
  pool (the "fresh data loop" of Alemohammad et al. 2024, Bertrand et al. 2024).
- ``augment``: the whole human pool plus round(λ·n) samples of the newest
  synthetic pool (a uniform subset without replacement; the whole pool when
  it holds exactly that many), λ = ``synthetic_ratio`` (the "synthetic
  augmentation loop" of Alemohammad et al. 2024; Bertrand et al. 2024).

Array pools of independent trials (theory models: shape (K, samples, ...),
examples on axis 1) go through :func:`apply_plan_trials`, which gives every
trial its own draw: its own subset positions, and under
``accumulate_subsample`` its own composition. One shared draw would be a
common random effect that standard errors over trials cannot see.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from collapse.errors import CollapseError
from collapse.seeding import generation_rng, torch_seed  # re-exported for callers of mixing

HUMAN = "human"
HUMAN_FRESH = "human_fresh"


def synthetic_pool(generation: int) -> str:
    return f"synthetic_{generation}"


@dataclass(frozen=True)
class Take:
    """Take ``count`` examples from ``pool``: a contiguous slice from ``start``
    when start is given, every example when count is the pool's size, else a
    seeded uniform subset without replacement."""

    pool: str
    count: int
    start: int | None = None


@dataclass(frozen=True)
class MixSizes:
    """The sizes a regime needs, resolved from the mix config and the data."""

    human: int  # n: human examples in generation 0's pool
    synthetic: int  # m: synthetic samples per generation
    human_fraction: float = 0.1
    subsample: int | None = None  # accumulate_subsample draw size (default n)
    fresh: int | None = None  # fresh: human examples per generation (default n)
    synthetic_ratio: float = 1.0  # augment: λ, synthetic examples per human example

    def augment_count(self) -> int:
        """augment: synthetic examples per training set, round(λ·n)."""
        return int(round(self.synthetic_ratio * self.human))


Plan = list[Take]


def plan_to_dict(plan: Plan) -> list[dict[str, Any]]:
    return [asdict(t) for t in plan]


def plan_counts(plan: Plan) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in plan:
        out[t.pool] = out.get(t.pool, 0) + t.count
    return out


def _gen0(sizes: MixSizes) -> Plan:
    return [Take(HUMAN, sizes.human)]


def plan_replace(g: int, pool_sizes: Mapping[str, int], sizes: MixSizes, rng: np.random.Generator) -> Plan:
    if g == 0:
        return _gen0(sizes)
    return [Take(synthetic_pool(g - 1), pool_sizes[synthetic_pool(g - 1)])]


def plan_accumulate(g: int, pool_sizes: Mapping[str, int], sizes: MixSizes, rng: np.random.Generator) -> Plan:
    if g == 0:
        return _gen0(sizes)
    return [Take(HUMAN, sizes.human)] + [Take(synthetic_pool(i), pool_sizes[synthetic_pool(i)]) for i in range(g)]


def plan_accumulate_subsample(g: int, pool_sizes: Mapping[str, int], sizes: MixSizes, rng: np.random.Generator) -> Plan:
    if g == 0:
        return _gen0(sizes)
    names = [HUMAN] + [synthetic_pool(i) for i in range(g)]
    avail = np.array([sizes.human] + [pool_sizes[n] for n in names[1:]], dtype=np.int64)
    total = sizes.subsample if sizes.subsample is not None else sizes.human
    total = min(total, int(avail.sum()))
    counts = rng.multivariate_hypergeometric(avail, total)
    plan: Plan = []
    for name, c in zip(names, counts):
        if c == 0:
            continue
        plan.append(Take(name, int(c)))
    return plan


def plan_fixed_fraction(g: int, pool_sizes: Mapping[str, int], sizes: MixSizes, rng: np.random.Generator) -> Plan:
    if g == 0:
        return _gen0(sizes)
    n_h = int(round(sizes.human_fraction * sizes.human))
    n_s = sizes.human - n_h
    newest = synthetic_pool(g - 1)
    have = pool_sizes.get(newest, n_s)
    if have < n_s:
        # Synthetic-data gates left fewer samples than planned: keep the human
        # fraction, shrink the training set.
        n_s = have
        p = sizes.human_fraction
        n_h = min(n_h, int(round(p / (1.0 - p) * n_s))) if p < 1.0 else n_h
    plan: Plan = []
    if n_h:
        plan.append(Take(HUMAN, n_h))
    if n_s:
        plan.append(Take(newest, n_s))
    return plan


def plan_fresh(g: int, pool_sizes: Mapping[str, int], sizes: MixSizes, rng: np.random.Generator) -> Plan:
    if g == 0:
        return _gen0(sizes)
    chunk = sizes.fresh if sizes.fresh is not None else sizes.human
    return [Take(HUMAN_FRESH, chunk, (g - 1) * chunk), Take(synthetic_pool(g - 1), pool_sizes[synthetic_pool(g - 1)])]


def plan_augment(g: int, pool_sizes: Mapping[str, int], sizes: MixSizes, rng: np.random.Generator) -> Plan:
    if g == 0:
        return _gen0(sizes)
    n_s = sizes.augment_count()
    plan: Plan = [Take(HUMAN, sizes.human)]
    if n_s:
        # A count above the pool's size is caught by plan_mix with a one-line error.
        plan.append(Take(synthetic_pool(g - 1), n_s))
    return plan


REGIMES: dict[str, Callable[[int, Mapping[str, int], MixSizes, np.random.Generator], Plan]] = {
    "replace": plan_replace,
    "accumulate": plan_accumulate,
    "accumulate_subsample": plan_accumulate_subsample,
    "fixed_fraction": plan_fixed_fraction,
    "fresh": plan_fresh,
    "augment": plan_augment,
}


def plan_mix(regime: str, generation: int, pool_sizes: Mapping[str, int], sizes: MixSizes, rng: np.random.Generator) -> Plan:
    """The plan of one generation. ``pool_sizes`` holds the size of every pool
    that exists."""
    if regime not in REGIMES:
        raise CollapseError(f"unknown regime {regime!r} (known: {', '.join(REGIMES)})")
    try:
        plan = REGIMES[regime](generation, pool_sizes, sizes, rng)
    except KeyError as e:
        raise CollapseError(f"generation {generation}: {regime} needs pool {e.args[0]!r}, which does not exist") from None
    for t in plan:
        have = pool_sizes.get(t.pool)
        if have is None:
            raise CollapseError(f"generation {generation}: plan needs pool {t.pool!r}, which does not exist")
        end = (t.start or 0) + t.count
        if t.count > have or end > have:
            raise CollapseError(
                f"generation {generation}: {regime} needs {t.count} examples from {t.pool!r}"
                f"{'' if t.start is None else f' starting at {t.start}'} but it holds {have}"
            )
    return plan


def required_human(regime: str, generations: int, sizes: MixSizes) -> int:
    """Human train examples a run of generations 0..N needs (checked up front)."""
    if regime == "fresh":
        chunk = sizes.fresh if sizes.fresh is not None else sizes.human
        return sizes.human + generations * chunk
    return sizes.human


def check_sizes(regime: str, generations: int, sizes: MixSizes, human_available: int) -> None:
    """Raise a one-line CollapseError when the sizes cannot be met."""
    need = required_human(regime, generations, sizes)
    if need > human_available:
        what = "fresh human examples" if regime == "fresh" else "human training examples"
        raise CollapseError(
            f"{regime}: {generations} generations need {need} {what} but the human train split holds {human_available}"
            " (lower data.train_size, mix.fresh_size or run.generations, or use a larger corpus)"
        )
    if regime == "augment" and generations > 0 and sizes.augment_count() > sizes.synthetic:
        raise CollapseError(
            f"augment: each training set needs round({sizes.synthetic_ratio:g}·{sizes.human}) = {sizes.augment_count()}"
            f" synthetic examples but mix.synthetic_size is {sizes.synthetic} (raise mix.synthetic_size or lower mix.synthetic_ratio)"
        )
    if regime == "fixed_fraction" and generations > 0:
        n_s = sizes.human - int(round(sizes.human_fraction * sizes.human))
        if n_s > sizes.synthetic:
            raise CollapseError(
                f"fixed_fraction: each training set needs {n_s} synthetic examples but mix.synthetic_size is {sizes.synthetic}"
            )


def plan_indices(plan: Plan, pool_sizes: Mapping[str, int], rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Resolve a plan into (pool, sorted indices) pairs, drawing subsets with ``rng``."""
    out = []
    for t in plan:
        n = pool_sizes[t.pool]
        if t.start is not None:
            idx = np.arange(t.start, t.start + t.count)
        elif t.count == n:
            idx = np.arange(n)
        else:
            idx = np.sort(rng.choice(n, size=t.count, replace=False))
        out.append((t.pool, idx))
    return out


def apply_plan(plan: Plan, pools: Mapping[str, Any], rng: np.random.Generator, axis: int = 0) -> Any:
    """Build a training set from pools following ``plan``.

    Pools are ``datasets.Dataset`` objects (concatenated with
    ``concatenate_datasets``) or numpy arrays (concatenated along ``axis``,
    e.g. ``axis=1`` for theory arrays of shape (trials, samples, ...))."""
    sizes = {k: (len(v) if not isinstance(v, np.ndarray) else v.shape[axis]) for k, v in pools.items()}
    parts = plan_indices(plan, sizes, rng)
    first = pools[parts[0][0]]
    if isinstance(first, np.ndarray):
        # A take of a whole pool uses the pool as it is (no gather): for
        # accumulate, building the training set is most of a theory run's time.
        arrays = [pools[p] if len(idx) == sizes[p] else np.take(pools[p], idx, axis=axis) for p, idx in parts]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=axis)
    from datasets import concatenate_datasets

    chunks = []
    for p, idx in parts:
        ds = pools[p]
        chunks.append(ds if len(idx) == len(ds) else ds.select(idx.tolist()))
    # Pools share the provenance columns; extra per-pool columns (sampling
    # details of synthetic pools) stay in the pools.
    common = [c for c in chunks[0].column_names if all(c in ch.column_names for ch in chunks)]
    chunks = [ch.select_columns(common) if ch.column_names != common else ch for ch in chunks]
    return chunks[0] if len(chunks) == 1 else concatenate_datasets(chunks)


def pooled_union(regime: str, generation: int) -> list[str] | None:
    """The pools a regime's training set is one uniform draw from, when its plan
    is such a draw (``accumulate_subsample``, g ≥ 1: its per-pool counts are a
    multivariate hypergeometric draw); else None."""
    if regime == "accumulate_subsample" and generation >= 1:
        return [HUMAN] + [synthetic_pool(i) for i in range(generation)]
    return None


def _uniform_subsets(rng: np.random.Generator, k: int, n: int, count: int) -> np.ndarray:
    """Column indices (k, count), sorted per row, of an independent uniform
    subset of ``count`` of ``n`` positions for each of k rows."""
    keys = rng.random((k, n))
    return np.sort(np.argpartition(keys, count - 1, axis=1)[:, :count], axis=1)


def _uniform_masks(rng: np.random.Generator, k: int, n: int, counts: np.ndarray) -> np.ndarray:
    """A (k, n) mask whose row r marks a uniform subset of ``counts[r]`` of the n positions."""
    order = np.argsort(rng.random((k, n)), axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), (k, n)), axis=1)
    return rank < counts[:, None]


def uniform_subset_indices(rng: np.random.Generator, k: int, n: int, count: int) -> np.ndarray:
    """Positions (k, count), sorted per row, of an independent uniform subset of
    ``count`` of ``n`` positions in each of k rows, in O(k·count) memory.

    Draws ``count`` positions with replacement and redraws the repeats until a
    row's positions are distinct. Each round keeps the distinct positions and
    adds fresh uniform draws, a rule that treats every position alike, so the
    final set is a uniform ``count``-subset; about count²/2n repeats in the first
    round, geometrically fewer after. Dense draws (2·count ≥ n) take the
    ``n``-key way (:func:`_uniform_subsets`)."""
    if 2 * count >= n:
        return _uniform_subsets(rng, k, n, count)
    idx = rng.integers(0, n, size=(k, count))
    idx.sort(axis=1)
    rows = np.arange(k)
    while rows.size:
        sub = idx[rows]
        rep = sub[:, 1:] == sub[:, :-1]  # the later of two equal positions
        again = rep.any(axis=1)
        rows, sub, rep = rows[again], sub[again], rep[again]
        if not rows.size:
            break
        sub[:, 1:][rep] = rng.integers(0, n, size=int(rep.sum()))
        sub.sort(axis=1)
        idx[rows] = sub
    return idx


class UnionBuffer:
    """The pools of an ``accumulate_subsample`` union, (K, size, ...) arrays laid
    end to end in one buffer preallocated for every generation: a new pool costs
    a copy of itself, and a generation's training set is a per-trial uniform
    draw of positions gathered from the buffer (:meth:`draw`) instead of a
    pass over every pool.

    A subsample needs the individual examples: for continuous data (Gaussian
    samples, regression labels, mixture draws) the statistics of a uniform
    subset are not a function of the union's sufficient statistics, so the
    union itself is kept; the categorical model, whose union is a multiset of
    V values, draws from counts instead (``subsample_stats``)."""

    def __init__(self, first: np.ndarray, capacity: int):
        self.data = np.empty((first.shape[0], capacity) + first.shape[2:], dtype=first.dtype)
        self.names: list[str] = []
        self.ends: list[int] = []
        self.size = 0

    def append(self, name: str, pool: np.ndarray) -> np.ndarray:
        """Copy ``pool`` in after the others; returns its view in the buffer."""
        end = self.size + pool.shape[1]
        if end > self.data.shape[1]:  # not foreseen: grow
            grown = np.empty((self.data.shape[0], max(end, 2 * self.data.shape[1])) + self.data.shape[2:], self.data.dtype)
            grown[:, :self.size] = self.data[:, :self.size]
            self.data = grown
        self.data[:, self.size:end] = pool
        self.names.append(name)
        self.ends.append(end)
        self.size = end
        return self.data[:, end - pool.shape[1]:end]

    def draw(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Every trial's uniform draw of ``count`` examples from the union
        (positions in union order) and the per-trial count of each pool (K,)."""
        k = self.data.shape[0]
        idx = uniform_subset_indices(rng, k, self.size, count)
        view = self.data[:, :self.size]
        train = np.take_along_axis(view, idx.reshape(idx.shape + (1,) * (view.ndim - 2)), axis=1)
        if len(self.names) == 1:
            return train, {self.names[0]: np.full(k, count, dtype=np.int64)}
        p = len(self.names)
        which = np.searchsorted(np.asarray(self.ends[:-1]), idx, side="right")  # pool of each position
        which += (np.arange(k) * p)[:, None]
        per = np.bincount(which.ravel(), minlength=k * p).reshape(k, p)
        return train, {name: per[:, j] for j, name in enumerate(self.names)}


def apply_plan_trials(plan: Plan, pools: Mapping[str, np.ndarray], rng: np.random.Generator,
                      union: Sequence[str] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Build K independent trials' training sets (K, N, ...) from array pools
    (K, size, ...), every trial drawing its own subsets.

    Whole-pool takes and contiguous slices are the same for every trial (they
    draw nothing). A subset take (count < pool size) picks its own uniform
    positions in each trial. With ``union`` (see :func:`pooled_union`) the plan
    is one uniform draw of its total from the union of those pools: each trial
    draws its own per-pool counts (multivariate hypergeometric) and positions.
    Returns the training sets and the per-trial count of every pool (K,)."""
    first = pools[plan[0].pool]
    k = first.shape[0]
    tail = first.shape[2:]
    if union is not None:
        total = sum(t.count for t in plan)
        avail = np.array([pools[p].shape[1] for p in union], dtype=np.int64)
        counts = rng.multivariate_hypergeometric(avail, total, size=k)  # (K, pools)
        out = np.empty((k, total) + tail, dtype=first.dtype)
        offset = np.zeros(k, dtype=np.int64)
        per_pool: dict[str, np.ndarray] = {}
        for j, p in enumerate(union):
            c = counts[:, j]
            per_pool[p] = c
            if not c.any():
                continue
            pool = pools[p]
            if np.all(c == avail[j]) and np.all(offset == offset[0]):
                out[:, offset[0]:offset[0] + avail[j]] = pool  # every trial takes the whole pool, at the same place
            else:
                mask = _uniform_masks(rng, k, int(avail[j]), c)
                rows, cols = np.nonzero(mask)  # row-major: each row's picks in order
                pos = offset[rows] + (np.cumsum(mask, axis=1) - 1)[rows, cols]
                out[rows, pos] = pool[rows, cols]
            offset += c
        return out, per_pool
    arrays = []
    per_pool = {}
    for t in plan:
        pool = pools[t.pool]
        n = pool.shape[1]
        if t.start is not None:
            arrays.append(pool[:, t.start:t.start + t.count])
        elif t.count == n:
            arrays.append(pool)
        else:
            cols = _uniform_subsets(rng, k, n, t.count)
            arrays.append(np.take_along_axis(pool, cols.reshape(cols.shape + (1,) * len(tail)), axis=1))
        per_pool[t.pool] = per_pool.get(t.pool, 0) + np.full(k, t.count, dtype=np.int64)
    train = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)
    return train, per_pool


__all__: Sequence[str] = [
    "HUMAN", "HUMAN_FRESH", "Take", "MixSizes", "Plan", "REGIMES", "plan_mix", "apply_plan", "apply_plan_trials",
    "pooled_union", "plan_indices", "uniform_subset_indices", "UnionBuffer",
    "plan_counts", "plan_to_dict", "check_sizes", "required_human", "synthetic_pool", "generation_rng", "torch_seed",
]
