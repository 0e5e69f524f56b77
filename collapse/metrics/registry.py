"""The metric registry: plain functions from samples (+ context) to flat numbers.

A metric takes the generation's samples (texts) and a :class:`MetricContext`
(tokenizer, human reference, the fitted model, evaluation data) and returns a
flat ``{name: float}``. ``needs_model`` metrics measure the model itself (for
example held-out cross-entropy); the others measure samples and are also
computed once on human reference text, logged as ``human.<name>``. Each
metric's docstring says what it measures, its range and the paper it follows.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

MetricFn = Callable[[list[str], "MetricContext"], dict[str, float]]


@dataclass
class Metric:
    name: str
    fn: MetricFn
    needs_model: bool = False
    superlinear: bool = False  # cost grows faster than n log n
    subsampled: bool = False  # runs on a seeded subsample (every superlinear metric does)

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()


@dataclass
class MetricContext:
    """What metrics may use besides the samples. Fields a metric does not need may be None.

    ``shared`` lives as long as the generator (one run), so indexes built on
    the human data (memorization) are built once; ``cache`` lives for one
    ``compute`` call. ``loaders`` hold callables for expensive things a metric
    may or may not ask for (``reference_model``: the generation-0 model;
    ``synthetic_history``: earlier generations' samples)."""

    tokenizer: Any = None
    model: Any = None
    device: Any = None
    precision: str = "fp32"
    generation: int = 0
    seed: int = 0
    settings: dict = field(default_factory=dict)  # MetricsConfig.settings(): per-metric knobs
    artifact_dir: Path | None = None  # where large outputs (per-sample values, attributions) go
    human_train_counts: Any = None  # np.ndarray (V,): token counts of the human train split
    human_train_texts: list[str] | None = None
    human_train_sources: list[str] | None = None  # "file:start-end" per human train text
    human_trained: int | None = None  # leading human train texts a model of the run trained on so far (None: all)
    human_test_texts: list[str] | None = None
    test_blocks: Any = None  # torch.LongTensor (N, T): packed human test split
    val_blocks: Any = None  # torch.LongTensor (N, T): packed human validation split
    token_bytes: Any = None  # torch.LongTensor (V,): UTF-8 bytes per token id
    eval_batch_size: int = 32
    loaders: dict[str, Callable[[], Any]] = field(default_factory=dict)
    shared: dict = field(default_factory=dict)  # memo across generations of one run
    cache: dict = field(default_factory=dict)  # per-call memo (e.g. tokenized samples)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per metric, filled by compute

    def token_ids(self, samples: list[str]) -> list[list[int]]:
        key = ("ids", id(samples))
        hit = self.cache.get(key)
        if hit is None or hit[0] is not samples:  # the list itself is kept, so its id cannot be reused
            from collapse.lm.train import tokenize_texts

            hit = self.cache[key] = (samples, tokenize_texts(self.tokenizer, samples))
        return hit[1]

    def setting(self, name: str, default: Any) -> Any:
        v = self.settings.get(name)
        return default if v is None else v

    def load(self, name: str, *, per_run: bool = False) -> Any:
        """The value of loader ``name``, memoized for this call (for the whole run
        when ``per_run``: e.g. the generation-0 model); None when there is no such loader."""
        memo = self.shared if per_run else self.cache
        key = ("loaded", name)
        if key not in memo:
            fn = self.loaders.get(name)
            memo[key] = fn() if fn is not None else None
        return memo[key]

    def subsample_index(self, total: int, purpose: str, n: int | None = None) -> np.ndarray:
        """Sorted indices of a seeded subsample of at most ``n`` (default
        ``settings['subsample']``) of ``total`` items, the same for the same
        (seed, generation, purpose)."""
        n = int(n or self.setting("subsample", 500))
        if total <= n:
            return np.arange(total)
        from collapse.seeding import generation_rng

        return np.sort(generation_rng(self.seed, self.generation, f"metric:{purpose}").choice(total, n, replace=False))

    def subsample(self, samples: list[str], purpose: str, n: int | None = None) -> list[str]:
        """The samples at :meth:`subsample_index`."""
        return [samples[i] for i in self.subsample_index(len(samples), purpose, n)]

    def artifact(self, name: str) -> Path | None:
        """Path for a large output of this generation, or None when artifacts are not kept."""
        if self.artifact_dir is None:
            return None
        d = Path(self.artifact_dir)
        d.mkdir(parents=True, exist_ok=True)
        return d / name

    def write_jsonl(self, name: str, rows: Iterable[dict]) -> Path | None:
        """Write rows as JSON lines atomically (temp file + rename); None when artifacts are not kept."""
        path = self.artifact(name)
        if path is None:
            return None
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return path


REGISTRY: dict[str, Metric] = {}


def register(name: str, needs_model: bool = False, superlinear: bool = False,
             subsampled: bool | None = None) -> Callable[[MetricFn], MetricFn]:
    """Register a metric under ``name``. ``superlinear`` marks metrics whose cost
    grows faster than n log n; they, and others marked ``subsampled`` (a model
    forward pass per sample), work on ``MetricContext.subsample``."""

    def deco(fn: MetricFn) -> MetricFn:
        if name in REGISTRY:
            raise ValueError(f"metric {name!r} registered twice")
        REGISTRY[name] = Metric(name, fn, needs_model, superlinear, superlinear if subsampled is None else subsampled)
        return fn

    return deco


def compute(names: list[str], samples: list[str], ctx: MetricContext, *, sample_metrics_only: bool = False) -> dict[str, float]:
    """Run the named metrics; returns one flat dict (seconds per metric land in ``ctx.timings``)."""
    out: dict[str, float] = {}
    for n in names:
        m = REGISTRY[n]
        if sample_metrics_only and m.needs_model:
            continue
        t0 = time.perf_counter()
        for k, v in m.fn(samples, ctx).items():
            if k in out:
                raise ValueError(f"metric key {k!r} produced twice")
            out[k] = float(v)
        ctx.timings[n] = time.perf_counter() - t0
    return out
