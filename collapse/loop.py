"""The generation loop, shared by code LMs and theory models.

One generation, top to bottom::

    plan    = plan_mix(regime, g, pool sizes, sizes, rng(g, "mix"))
    train   = apply_plan(plan, pools, rng(g, "mix"))
    fit     = generator.fit(train, g)
    drawn   = generator.sample(sizes.synthetic, g)        # samples + gate statistics
    metrics = fit + generator.evaluate(drawn, g)
    store.commit(record, checkpoint)                      # DONE written last
    for cb in callbacks: cb.on_generation(record)         # MLflow mirror, log, figures, release

Every random choice of generation g comes from an rng seeded by
(seed, g, purpose), so re-running after an interruption draws exactly what an
uninterrupted run draws. A :class:`GenerationStore` decides what survives: the
in-memory store keeps nothing (theory sweeps), the run directory
(:class:`collapse.rundir.RunDir`) writes ``gen_NNN/`` with a ``DONE`` marker
last and restores finished generations. Side effects after a generation are
:class:`Callback` objects; the loop itself only computes and commits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

import numpy as np

from collapse.generator import Checkpointable, Drawn, GenerationRecord, Generator, Timed
from collapse.mixing import (HUMAN, MixSizes, Plan, UnionBuffer, apply_plan, apply_plan_trials, plan_mix, pooled_union,
                             synthetic_pool)
from collapse.seeding import generation_rng

log = logging.getLogger("collapse")

__all__ = ["SYNTHETIC", "Callback", "Drawn", "GenerationRecord", "GenerationStore", "LoopResult", "MemoryStore",
           "run_generations"]

SYNTHETIC = "synthetic"  # trial_counts key of every synthetic pool together


class GenerationStore(Protocol):
    def is_done(self, generation: int) -> bool: ...

    def restore(self, generation: int, *, last: bool) -> GenerationRecord:
        """Read a finished generation back: its plan, samples and metrics (``last``: the
        newest finished one, after which the loop computes)."""

    def commit(self, record: GenerationRecord, checkpoint: Checkpointable | None = None) -> None:
        """Persist a finished generation (``checkpoint`` saves the model; completion marker last)."""


class Callback(Protocol):
    """A side effect after each generation (computed or read back), in the order given."""

    def on_generation(self, record: GenerationRecord) -> None: ...


class MemoryStore:
    """Keeps nothing: for theory sweeps where a run is seconds long."""

    def is_done(self, generation: int) -> bool:
        return False

    def restore(self, generation: int, *, last: bool) -> GenerationRecord:  # pragma: no cover - never called
        raise RuntimeError("MemoryStore holds no generations")

    def commit(self, record: GenerationRecord, checkpoint: Checkpointable | None = None) -> None:
        pass


class _FunctionCallback:
    """A plain function ``f(record)`` as a :class:`Callback`."""

    def __init__(self, fn: Callable[[GenerationRecord], None]):
        self.fn = fn

    def on_generation(self, record: GenerationRecord) -> None:
        self.fn(record)


def _pool_size(pool: Any, axis: int) -> int:
    return pool.shape[axis] if isinstance(pool, np.ndarray) else len(pool)


class _RunningStats:
    """Sufficient statistics of the pools a plan takes whole, kept as a running
    total: a plan that extends the previous one (accumulate) costs only the
    statistics of its new pools, so a generation's fit takes constant time."""

    def __init__(self, generator: Any):
        self.generator = generator
        self.names: list[str] = []
        self.total: Any = None

    def update(self, names: list[str], pools: Mapping[str, Any]) -> Any:
        if names[:len(self.names)] != self.names:
            self.names, self.total = [], None
        for name in names[len(self.names):]:
            stats = self.generator.pool_stats(pools[name])
            self.total = stats if self.total is None else self.generator.merge_stats(self.total, stats)
            self.names.append(name)
        return self.total


class _SubsampleUnion:
    """The union an ``accumulate_subsample`` run draws from: a
    :class:`collapse.mixing.UnionBuffer` of the pools, or (``counts_only``)
    the generator's statistics of the human pool and of the synthetic pools."""

    def __init__(self, generator: Any, human: np.ndarray, capacity: int, counts_only: bool):
        self.generator = generator
        self.counts_only = counts_only
        self.buffer = None if counts_only else UnionBuffer(human, capacity)
        self.human: Any = None
        self.synthetic: Any = None
        self.sizes = [0, 0]  # examples per trial: human, synthetic

    def add(self, name: str, pool: np.ndarray) -> np.ndarray:
        if not self.counts_only:
            return self.buffer.append(name, pool)
        stats = self.generator.pool_stats(pool)
        if name == HUMAN:
            self.human, self.sizes[0] = stats, pool.shape[1]
        else:
            self.synthetic = stats if self.synthetic is None else self.generator.merge_stats(self.synthetic, stats)
            self.sizes[1] += pool.shape[1]
        return pool

    def fit(self, count: int, rng: np.random.Generator, generation: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Fit on every trial's uniform draw of ``count`` examples from the union."""
        if self.counts_only:
            stats, (human, synthetic) = self.generator.subsample_stats([self.human, self.synthetic], self.sizes, count, rng)
            return dict(self.generator.fit_stats(stats, generation)), {HUMAN: human, SYNTHETIC: synthetic}
        train, counts = self.buffer.draw(count, rng)
        return dict(self.generator.fit(train, generation)), counts


class _Pools:
    """The pools a run mixes from, and how a plan becomes a fitted generator:
    the training set built from the pools, or (theory fast paths, see
    :func:`run_generations`) running sufficient statistics or a draw from the
    union buffer. Pools whose examples are no longer needed are dropped, their
    sizes kept for planning."""

    def __init__(self, generator: Any, human_pools: Mapping[str, Any], regime: str, sizes: MixSizes, generations: int,
                 axis: int, keep_samples: bool, per_trial: bool, fast: bool):
        self.generator = generator
        self.regime = regime
        self.generations = generations
        self.axis = axis
        self.keep_samples = keep_samples
        self.per_trial = per_trial
        self.pools: dict[str, Any] = dict(human_pools)
        self.dropped: dict[str, int] = {}  # sizes of pools whose statistics are kept but whose examples are not
        has_stats = all(hasattr(generator, f) for f in ("pool_stats", "merge_stats", "fit_stats"))
        self.running = _RunningStats(generator) if fast and regime == "accumulate" and has_stats else None
        self.union: _SubsampleUnion | None = None
        if fast and regime == "accumulate_subsample":
            self.union = _SubsampleUnion(generator, self.pools[HUMAN], sizes.human + generations * sizes.synthetic,
                                         counts_only=has_stats and hasattr(generator, "subsample_stats"))
            self.pools[HUMAN] = self.union.add(HUMAN, self.pools[HUMAN])

    def sizes(self) -> dict[str, int]:
        """Examples in every pool (dropped ones included): what a regime plans from."""
        return {**self.dropped, **{k: _pool_size(v, self.axis) for k, v in self.pools.items()}}

    def fit(self, plan: Plan, generation: int, rng: np.random.Generator) -> tuple[dict[str, float], Any, Any]:
        """Apply ``plan`` and fit the generator: ``(fit statistics, training set or None,
        per-trial counts or None)``."""
        g, union, generator = generation, self.union, self.generator
        if self.running is not None:
            # accumulate takes every pool whole: the same for every trial, nothing drawn.
            metrics = dict(generator.fit_stats(self.running.update([t.pool for t in plan], self.pools), g))
            if not self.keep_samples:
                for t in plan:
                    if t.pool in self.pools:
                        self.dropped[t.pool] = _pool_size(self.pools.pop(t.pool), self.axis)
            return metrics, None, None
        if union is not None and g >= 1:
            metrics, trial_counts = union.fit(sum(t.count for t in plan), rng, g)
            return metrics, None, trial_counts
        if union is not None and union.counts_only:
            return dict(generator.fit_stats(union.human, g)), None, None
        trial_counts = None
        if self.per_trial:
            train, trial_counts = apply_plan_trials(plan, self.pools, rng, union=pooled_union(self.regime, g))
        else:
            train = apply_plan(plan, self.pools, rng, axis=self.axis)
        return dict(generator.fit(train, g)), train, trial_counts

    def add(self, generation: int, samples: Any) -> None:
        """Generation ``generation``'s samples become its synthetic pool."""
        g, union, name = generation, self.union, synthetic_pool(generation)
        self.pools[name] = samples
        if union is not None and g < self.generations:
            self.pools[name] = union.add(name, samples)
            if union.counts_only and not self.keep_samples:
                self.dropped[name] = _pool_size(self.pools.pop(name), self.axis)
        # Regimes other than accumulate* only ever read the newest pool.
        if not self.keep_samples and g >= 1 and self.regime not in ("accumulate", "accumulate_subsample"):
            self.pools.pop(synthetic_pool(g - 1), None)


@dataclass
class LoopResult:
    records: list[GenerationRecord] = field(default_factory=list)

    @property
    def metrics(self) -> list[dict[str, float]]:
        return [r.metrics for r in self.records]


def run_generations(
    generator: Generator,
    human_pools: Mapping[str, Any],
    regime: str,
    sizes: MixSizes,
    generations: int,
    seed: int,
    store: GenerationStore | None = None,
    axis: int = 0,
    on_generation: Callable[[GenerationRecord], None] | None = None,
    keep_samples: bool = True,
    per_trial: bool = False,
    sufficient_stats: bool = True,
    callbacks: Iterable[Callback] = (),
) -> LoopResult:
    """Run generations 0..``generations`` of one regime.

    ``human_pools`` maps ``human`` (and ``human_fresh`` for the fresh regime)
    to the human data. ``axis`` is the example axis of array pools (theory
    models keep trials on axis 0 and samples on axis 1). ``per_trial``: array
    pools hold independent trials on axis 0 and examples on axis 1, and each
    trial draws its own subsets and composition
    (``collapse.mixing.apply_plan_trials``); the record keeps the plan drawn
    for the generation and the per-trial counts.

    Under ``accumulate`` with ``per_trial``, a generator that offers
    ``pool_stats(pool)``, ``merge_stats(a, b)`` and ``fit_stats(stats, g)``
    is fitted from running sufficient statistics instead of the rebuilt
    accumulated training set (constant time per generation), and without
    ``keep_samples`` a pool is dropped once its statistics are in the total
    (memory flat in the number of generations).

    Under ``accumulate_subsample`` with ``per_trial``, every trial's draw from
    the union comes from positions drawn per trial
    (``collapse.mixing.uniform_subset_indices``): a generator that also offers
    ``subsample_stats(parts, sizes, count, rng)`` (the categorical model: a
    subsample of a multiset is a function of its counts) gets the statistics
    of the human pool and of the synthetic pools merged, and its pools are
    dropped (memory flat); any other keeps the union in one preallocated
    buffer (``collapse.mixing.UnionBuffer``: a subsample of continuous data
    needs the examples themselves) and gathers the drawn positions, a copy of
    each new pool and O(K·count) per generation instead of a pass over the
    whole union.

    ``sufficient_stats=False`` always builds the training set from the pools
    (``collapse.mixing.apply_plan_trials``; the reference the fast paths are
    tested against).

    After each generation (also one read back from ``store``), every callback's
    ``on_generation(record)`` runs, in order; ``on_generation`` is a plain
    function run after them."""
    if per_trial and axis != 1:
        raise ValueError("per_trial needs array pools with trials on axis 0 and examples on axis 1 (axis=1)")
    store = store or MemoryStore()
    fast = per_trial and sufficient_stats and store.__class__ is MemoryStore
    pools = _Pools(generator, human_pools, regime, sizes, generations, axis, keep_samples, per_trial, fast)
    hooks = list(callbacks) + ([_FunctionCallback(on_generation)] if on_generation else [])
    checkpoint = generator if isinstance(generator, Checkpointable) else None
    timed = isinstance(generator, Timed)
    result = LoopResult()
    # Generations are only ever completed in order, so the done ones form a prefix.
    n_done = 0
    while n_done <= generations and store.is_done(n_done):
        n_done += 1
    for g in range(generations + 1):
        if g < n_done:
            rec = store.restore(g, last=(g == n_done - 1))
            rec.cached = True
            pools.add(g, rec.samples)
        else:
            rng = generation_rng(seed, g, "mix")
            plan = plan_mix(regime, g, pools.sizes(), sizes, rng)
            metrics, train, trial_counts = pools.fit(plan, g, rng)
            drawn = Drawn.of(generator.sample(sizes.synthetic, g))
            metrics.update(generator.evaluate(drawn, g))
            rec = GenerationRecord(g, plan, metrics, drawn.samples, train, trial_counts, gate_stats=drawn.gate_stats,
                                   timings=dict(generator.timings) if timed else {})
            store.commit(rec, checkpoint)
            rec.train = None  # the store has what it needs; do not hold every training set
            pools.add(g, drawn.samples)
            if not keep_samples:
                rec.samples = None
        result.records.append(rec)
        for cb in hooks:
            cb.on_generation(rec)
    return result
