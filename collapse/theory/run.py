"""Run a theory model through the shared generation loop and set the simulation beside its closed form.

``run_theory`` builds the model from a :class:`TheoryConfig`, draws the human
pools, and calls ``collapse.loop.run_generations(..., axis=1)``: the
same loop, the same ``plan_mix`` and the same ``apply_plan`` that drive the
code LMs. The result holds, per generation, the mean over trials of every
tracked quantity, its standard error, and the closed form where the literature
has one (Shumailov et al. 2024; Gerstgrasser et al. 2024; Dohmatob et al. 2024;
Bertrand et al. 2024; Kazdan et al. 2024 for the regimes). ``mirror_to_mlflow``
logs it like any run.

The K trials are independent: the loop runs with ``per_trial=True``, so every
trial draws its own training set from its own pools
(``collapse.mixing.apply_plan_trials``): its own subset positions under
``fixed_fraction`` and ``augment``, and its own composition (a multivariate
hypergeometric draw per trial) under ``accumulate_subsample``. The standard
errors over trials are therefore the standard errors of the means (a test
checks them against the spread across seeds). One plan shared by all trials
would be a common random effect the standard errors cannot see: it made the
spread of the mean across 12 seeds × 1,000 trials 2.8× the reported standard
error (regression, d = 10, 32 samples, generation 20,
accumulate_subsample); with per-trial draws the ratio is 1.1. The ``train`` counts of a
generation are means over trials where the composition varies.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from collapse.generator import GenerationRecord
from collapse.loop import run_generations
from collapse.mixing import HUMAN, HUMAN_FRESH, MixSizes, check_sizes, plan_counts, required_human
from collapse.theory.common import TheoryModel
from collapse.theory.config import TheoryConfig, synthetic_size, validate
from collapse.theory.gmm import GMMModel
from collapse.theory.models import MODELS
from collapse.tracking import RunMirror, resolve_uri


def build_model(cfg: TheoryConfig) -> TheoryModel:
    model = MODELS[cfg.run.model](cfg.run.trials, cfg.run.seed, **cfg.model_section())
    model.verify = cfg.verify.keep
    model.verify_noise = cfg.verify.noise
    return model


def mix_sizes(cfg: TheoryConfig) -> MixSizes:
    m = cfg.samples
    return MixSizes(
        human=m,
        synthetic=synthetic_size(cfg),
        human_fraction=cfg.mix.human_fraction,
        subsample=cfg.mix.subsample_size,
        fresh=cfg.mix.fresh_size,
        synthetic_ratio=cfg.mix.synthetic_ratio,
    )


def _json_number(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class TheoryResult:
    """Simulation beside closed form, one entry per generation 0..N (fit n = g + 1)."""

    model: str
    regime: str
    generations: int
    trials: int
    seed: int
    params: dict[str, Any]
    quantities: tuple[str, ...]
    mean: dict[str, np.ndarray]  # quantity → (N + 1,)
    se: dict[str, np.ndarray]  # quantity → (N + 1,)
    closed: dict[str, np.ndarray]  # quantity → (N + 1,), only where a closed form exists
    closed_forms: dict[str, str]  # quantity → the formula, for the record
    train: list[dict[str, int | float]]  # per generation: human and synthetic examples (mean over trials)
    trial_values: dict[str, np.ndarray] | None = None  # quantity → (N + 1, K) when kept
    seconds: float = 0.0
    extra: dict[str, list[float]] = field(default_factory=dict)  # other per-generation fit statistics

    def z_scores(self, quantity: str) -> np.ndarray:
        """(simulated mean − closed form) / standard error, per generation."""
        return (self.mean[quantity] - self.closed[quantity]) / self.se[quantity]

    def to_json(self) -> dict[str, Any]:
        """The documented JSON object of ``collapse theory --json``."""
        rows = []
        for g in range(self.generations + 1):
            row: dict[str, Any] = {"generation": g, "fits": g + 1, "train": self.train[g]}
            for q in self.quantities:
                row[q] = {
                    "mean": _json_number(self.mean[q][g]),
                    "se": _json_number(self.se[q][g]),
                    "closed": _json_number(self.closed[q][g]) if q in self.closed else None,
                }
            rows.append(row)
        return {
            "model": self.model,
            "regime": self.regime,
            "generations": self.generations,
            "trials": self.trials,
            "seed": self.seed,
            "params": self.params,
            "quantities": list(self.quantities),
            "closed_forms": self.closed_forms,
            "per_generation": rows,
        }


def _train_counts(counts: dict[str, Any]) -> dict[str, int | float]:
    """Human and synthetic examples of a training set; per-trial counts (K,)
    become their mean over trials (an int when every trial has the same)."""

    def num(x: Any) -> int | float:
        x = np.asarray(x)
        return int(x.flat[0]) if np.all(x == x.flat[0]) else float(x.mean())

    human = sum((np.asarray(c) for p, c in counts.items() if p in (HUMAN, HUMAN_FRESH)), np.zeros(1, dtype=np.int64))
    total = sum((np.asarray(c) for c in counts.values()), np.zeros(1, dtype=np.int64))
    return {"human": num(human), "synthetic": num(total - human)}


def run_theory(
    cfg: TheoryConfig,
    *,
    keep_trials: bool = False,
    on_generation: Callable[[int, dict[str, float]], None] | None = None,
    pool_based: bool = False,
    reference: bool = False,
) -> TheoryResult:
    """Run generations 0..N of ``cfg.run.model`` under ``cfg.run.regime``.

    ``keep_trials`` keeps every trial's values (N + 1, K) per quantity;
    ``on_generation(g, metrics)`` sees each generation's summary as it finishes.
    Under ``accumulate`` the gaussian, regression and categorical models refit
    from running sufficient statistics; ``pool_based`` rebuilds the
    accumulated training set every generation instead (the reference).
    ``reference`` runs every reference path the fast ones are tested and
    benchmarked against: ``pool_based``, and for the ``gmm`` model the numpy
    general EM also for two components (``collapse.theory.gmm.em_fit``), W₂
    and l2_gen0 in place of the compiled kernels."""
    validate(cfg)
    t0 = time.perf_counter()
    run = cfg.run
    pool_based = pool_based or reference
    model = build_model(cfg)
    if reference and isinstance(model, GMMModel):
        model.reference = True
    sizes = mix_sizes(cfg)
    fresh_total = required_human(run.regime, run.generations, sizes) - sizes.human
    check_sizes(run.regime, run.generations, sizes, sizes.human + fresh_total)
    pools = model.human_pools(sizes, fresh_total)

    quantities = tuple(model.quantities)
    mean = {q: [] for q in quantities}
    se = {q: [] for q in quantities}
    kept: dict[str, list[np.ndarray]] = {q: [] for q in quantities}
    train: list[dict[str, int]] = []
    fit_sizes: list[int] = []
    extra: dict[str, list[float]] = {}

    def collect(rec: GenerationRecord) -> None:
        rec.samples = None  # the loop's pools hold what later generations need; records need not
        counts = rec.trial_counts if rec.trial_counts is not None else plan_counts(rec.plan)  # whole pools: every trial alike
        train.append(_train_counts(counts))
        fit_sizes.append(int(sum(np.asarray(c).flat[0] for c in counts.values())))  # the same in every trial
        for q in quantities:
            mean[q].append(rec.metrics[q])
            se[q].append(rec.metrics[f"{q}_se"])
            if keep_trials:
                kept[q].append(model.trial_values[q].copy())
        for k, v in rec.metrics.items():
            if k not in mean and not k.endswith("_se"):
                extra.setdefault(k, []).append(float(v))
        if on_generation is not None:
            on_generation(rec.generation, rec.metrics)

    run_generations(model, pools, run.regime, sizes, run.generations, run.seed, axis=1,
                    on_generation=collect, keep_samples=False, per_trial=True, sufficient_stats=not pool_based)
    del pools
    closed = {q: np.asarray(v, dtype=np.float64) for q, v in model.closed_form(run.regime, fit_sizes, sizes).items()}
    return TheoryResult(
        model=run.model,
        regime=run.regime,
        generations=run.generations,
        trials=run.trials,
        seed=run.seed,
        params={**dict(model.params()), "synthetic_size": sizes.synthetic, "human_fraction": sizes.human_fraction,
                "subsample_size": sizes.subsample or sizes.human, "fresh_size": sizes.fresh or sizes.human,
                **({"synthetic_ratio": sizes.synthetic_ratio} if run.regime == "augment" else {}),
                **({"verify_keep": cfg.verify.keep, "verify_noise": cfg.verify.noise} if cfg.verify.keep is not None else {})},
        quantities=quantities,
        mean={q: np.asarray(v) for q, v in mean.items()},
        se={q: np.asarray(v) for q, v in se.items()},
        closed=closed,
        closed_forms=model.closed_form_text(run.regime, sizes),
        train=train,
        trial_values={q: np.stack(v) for q, v in kept.items()} if keep_trials else None,
        seconds=time.perf_counter() - t0,
        extra=extra,
    )


def mirror_to_mlflow(result: TheoryResult, cfg: TheoryConfig, artifacts: Sequence[str | Path] = ()) -> str:
    """Log a finished theory run to MLflow: params, per-generation metrics at
    step=generation (``q``, ``q_se``, ``q_closed``), artifacts. Returns the run id."""
    uri = resolve_uri(cfg.tracking.uri, cfg.tracking.root)
    artifact_root = None
    if uri.startswith("sqlite:///"):
        artifact_root = Path(uri[len("sqlite:///"):]).parent / "mlartifacts"
    experiment = cfg.tracking.experiment or f"theory_{cfg.run.model}"
    name = f"{cfg.run.model}_{cfg.run.regime}_s{cfg.run.seed}"
    mirror = RunMirror(uri, experiment, name, artifact_root=artifact_root,
                       tags={"theory.model": cfg.run.model, "regime": cfg.run.regime})
    try:
        mirror.log_params(cfg.resolved())
        for g in range(result.generations + 1):
            metrics: dict[str, float] = {}
            for q in result.quantities:
                metrics[q] = result.mean[q][g]
                if math.isfinite(result.se[q][g]):
                    metrics[f"{q}_se"] = result.se[q][g]
                if q in result.closed:
                    metrics[f"{q}_closed"] = result.closed[q][g]
            for k, v in result.extra.items():
                metrics[k] = v[g]
            mirror.log_metrics(metrics, step=g)
        mirror.set_tags({"seconds": f"{result.seconds:.3f}"})
        for path in artifacts:
            mirror.log_artifact(path)
    except BaseException:
        mirror.finish("FAILED")
        raise
    mirror.finish()
    return mirror.run_id
