"""The typed configuration of a theory run (``experiments/theory_*.yaml``).

Sections: ``run`` (model, regime, generations, trials, seed, output folder),
one section per model (``gaussian``, ``regression``, ``categorical``, ``gmm``, ``kde``;
only the chosen model's section is used), ``mix`` (the sizes the mixing
regimes need), ``verify`` (selection of the synthetic samples by a verifier,
Feng et al. 2024) and ``tracking`` (MLflow). Built with the same machinery as the
LM config (``collapse.config.build_dataclass``, ``apply_overrides``): unknown
keys, wrong types and out-of-range values raise a one-line ``ConfigError``
naming the key, and so do sizes a model cannot work with (M < 2 for the
unbiased estimator, T − d − 1 ≤ 0 for regression). The ``mix`` keys are the
LM config's, so a regime (Shumailov et al. 2024; Gerstgrasser et al. 2024;
Kazdan et al. 2024) means the same thing for both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


from collapse.config import _f, apply_overrides, build_dataclass, describe, read_yaml_mapping
from collapse.errors import ConfigError
from collapse.mixing import REGIMES
from collapse.theory.categorical import parse_truncate
from collapse.theory.models import MODELS

_pos = (lambda v: v > 0, "> 0")
_nonneg = (lambda v: v >= 0, ">= 0")
_unit = (lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
_open_unit = (lambda v: 0.0 < v < 1.0, "in (0, 1)")
_pos_or_none = (lambda v: v is None or v > 0, "> 0 or null")


@dataclass
class TheoryRunConfig:
    model: str = _f("gaussian", "theory model: " + " | ".join(MODELS))
    regime: str = _f("replace", "mixing regime: " + " | ".join(REGIMES))
    generations: int = _f(100, "generations after generation 0: runs generations 0..N (generation g is fit n = g + 1)", *_nonneg)
    trials: int = _f(1000, "independent trials run at once (K); standard errors are over trials", *_pos)
    seed: int = _f(0, "seed for every random choice of the run", *_nonneg)
    out: str = _f("reports/theory", "folder for the figure (PNG and PDF) of a run without --json")


@dataclass
class GaussianConfig:
    dim: int = _f(1, "dimension d (diagonal covariance: every coordinate runs the 1-D chain)", *_pos)
    samples: int = _f(100, "M: human samples of generation 0, and samples per generation unless mix.synthetic_size is set", *_pos)
    estimator: Literal["mle", "unbiased"] = _f("unbiased", "variance estimator: mle (divide by M) | unbiased (divide by M - 1)")
    truncate: float | None = _f(None, "tail cutting: generations sample from the fit truncated to |x - μ| <= τσ per coordinate; null = no truncation", *_pos_or_none)
    covariance: Literal["diagonal", "full"] = _f("diagonal", "diagonal: each coordinate runs the 1-D chain | full: full sample covariance (d >= 2), tracks det(Σ_n)/det(Σ_0)")


@dataclass
class RegressionConfig:
    dim: int = _f(10, "d: features of the design X", *_pos)
    samples: int = _f(50, "T: rows of the fixed design X (labels per generation)", *_pos)
    noise: float = _f(1.0, "σ²: variance of the label noise", *_nonneg)
    design: Literal["per_trial", "shared"] = _f("per_trial", "per_trial: each trial draws its own X (closed form uses d/(T-d-1)) | shared: one X for all trials (uses tr((XᵀX)⁻¹))")


@dataclass
class CategoricalConfig:
    categories: int = _f(100, "V: number of categories (tokens)", *_pos)
    samples: int = _f(100, "M: tokens drawn per generation", *_pos)
    zipf: float = _f(1.0, "β: starting distribution p_i ∝ i^-β (0 = uniform)", *_nonneg)
    tail_fraction: float = _f(0.1, "share of categories, the rarest under the start, whose mass is tracked as tail_mass", *_open_unit)
    truncate: str | None = _f(None, "tail cutting: top_k:K (sample from the K most likely categories of the fit) | top_p:P (from the smallest most-likely set of mass >= P); null = none")


@dataclass
class GMMConfig:
    components: int = _f(2, "C: mixture components (the start has C unit-variance components, equal weights)", *_pos)
    samples: int = _f(100, "M: samples per generation", *_pos)
    separation: float = _f(4.0, "distance between neighbouring component means at the start", *_nonneg)
    distance: Literal["w2", "l2"] = _f("w2", "distance to the start: w2 (2-Wasserstein) | l2 (L2 norm of the density difference)")
    em_iters: int = _f(100, "EM iterations per generation at most", *_pos)
    em_tol: float = _f(1e-5, "EM stops in a trial when its mean log-likelihood per sample improves by less than this", *_pos)
    dim: int = _f(1, "1 or 2: the 2-D mixture of Shumailov et al.'s notebook (full covariances; tracks l2_gen0, l2 to the start, variance)", lambda v: v in (1, 2), "1 or 2")
    init: Literal["quantiles", "kmeans"] = _f("quantiles", "EM initialisation: quantiles (means at the (i + 1/2)/C quantiles, overall variance, equal weights) | kmeans (k-means++ and Lloyd, as scikit-learn's GaussianMixture)")


@dataclass
class KDEConfig:
    samples: int = _f(100, "M: samples per generation", *_pos)
    bandwidth: Literal["scott", "silverman", "fixed"] = _f("scott", "bandwidth rule: scott h = s·M^(-1/5) | silverman h = s·(3M/4)^(-1/5) | fixed h = kde.fixed_bandwidth")
    fixed_bandwidth: float = _f(0.3, "h of the fixed rule", *_pos)


@dataclass
class TheoryMixConfig:
    synthetic_size: int | None = _f(None, "synthetic samples per generation; null = the model's samples (M or T)", *_pos_or_none)
    human_fraction: float = _f(0.1, "fixed_fraction: share of each training set that is human", *_unit)
    subsample_size: int | None = _f(None, "accumulate_subsample: size of the draw from the accumulated pool; null = the model's samples", *_pos_or_none)
    fresh_size: int | None = _f(None, "fresh: new human samples per generation; null = the model's samples", *_pos_or_none)
    synthetic_ratio: float = _f(1.0, "augment: λ, each training set is the M human samples plus round(λ·M) synthetic ones (synthetic_size defaults to max(M, round(λ·M)))", *_nonneg)


@dataclass
class VerifyConfig:
    keep: float | None = _f(None, "verification: draw samples/keep candidates per generation and keep the best by the verifier's score; null = no selection", lambda v: v is None or 0.0 < v <= 1.0, "in (0, 1] or null")
    noise: float = _f(0.0, "verifier noise: Gaussian noise on its score (the true log-likelihood), in units of the score's spread over a trial's candidates; 0 = a perfect verifier", *_nonneg)


@dataclass
class TheoryTrackingConfig:
    enabled: bool = _f(False, "log the run to MLflow (params, per-generation metrics at step=generation, artifacts)")
    uri: str | None = _f(None, "MLflow tracking URI; null = $MLFLOW_TRACKING_URI, else sqlite:///<root>/mlflow.db")
    root: str = _f("runs", "folder holding the default sqlite database and its artifacts")
    experiment: str | None = _f(None, "MLflow experiment name; null = theory_<model>")


@dataclass
class TheoryConfig:
    run: TheoryRunConfig = field(default_factory=TheoryRunConfig)
    gaussian: GaussianConfig = field(default_factory=GaussianConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    categorical: CategoricalConfig = field(default_factory=CategoricalConfig)
    gmm: GMMConfig = field(default_factory=GMMConfig)
    kde: KDEConfig = field(default_factory=KDEConfig)
    mix: TheoryMixConfig = field(default_factory=TheoryMixConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    tracking: TheoryTrackingConfig = field(default_factory=TheoryTrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_section(self) -> dict[str, Any]:
        """The chosen model's options."""
        return dataclasses.asdict(getattr(self, self.run.model))

    @property
    def samples(self) -> int:
        return int(getattr(self, self.run.model).samples)

    def resolved(self) -> dict[str, Any]:
        """The parts of the config that shape this run (logged as params)."""
        return {"run": dataclasses.asdict(self.run), self.run.model: self.model_section(), "mix": dataclasses.asdict(self.mix),
                "verify": dataclasses.asdict(self.verify)}


def synthetic_size(cfg: TheoryConfig) -> int:
    """Synthetic samples per generation: mix.synthetic_size, else the model's
    samples (under augment at least round(λ·M), so every λ works by default)."""
    if cfg.mix.synthetic_size:
        return cfg.mix.synthetic_size
    m = cfg.samples
    if cfg.run.regime == "augment":
        return max(m, int(round(cfg.mix.synthetic_ratio * m)))
    return m


def validate(cfg: TheoryConfig) -> None:
    """Checks that span several fields; one-line ConfigError each."""
    run = cfg.run
    if run.model not in MODELS:
        raise ConfigError(f"run.model: unknown theory model {run.model!r} (known: {', '.join(MODELS)})")
    if run.regime not in REGIMES:
        raise ConfigError(f"run.regime: unknown regime {run.regime!r} (known: {', '.join(REGIMES)})")
    m = cfg.samples
    mix = cfg.mix
    synthetic = synthetic_size(cfg)
    # The smallest training set any generation of this regime can see.
    sizes = {"human": m, "synthetic": synthetic}
    if run.regime == "accumulate_subsample":
        sizes["subsample"] = mix.subsample_size or m
    if run.regime == "augment":
        need = int(round(mix.synthetic_ratio * m))
        if need > synthetic:
            raise ConfigError(f"mix.synthetic_size: augment needs round({mix.synthetic_ratio:g}·{m}) = {need} synthetic samples per generation, got {synthetic}")
    if run.regime == "fixed_fraction":
        n_h = int(round(mix.human_fraction * m))
        if m - n_h > synthetic:
            raise ConfigError(f"mix.synthetic_size: fixed_fraction needs {m - n_h} synthetic samples per generation, got {synthetic}")
    key = {"human": f"{run.model}.samples", "synthetic": "mix.synthetic_size", "subsample": "mix.subsample_size"}
    if run.model == "gaussian" and cfg.gaussian.estimator == "unbiased":
        for what, n in sizes.items():
            if n < 2:
                raise ConfigError(f"{key[what]}: the unbiased estimator needs at least 2 samples per fit, got {n}")
    if run.model == "regression":
        r = cfg.regression
        if r.samples - r.dim - 1 <= 0:
            raise ConfigError(f"regression.samples: expected T > d + 1 = {r.dim + 1} so that T - d - 1 > 0, got {r.samples}")
        for what, n in sizes.items():
            if n < r.dim:
                raise ConfigError(f"{key[what]}: least squares in d = {r.dim} dimensions needs at least {r.dim} rows per fit, got {n}")
    if run.model == "gmm" and cfg.gmm.dim == 2 and cfg.gmm.distance != "l2":
        raise ConfigError("gmm.distance: the 2-D mixture tracks the L2 distance only; set gmm.distance: l2 with gmm.dim: 2")
    if run.model == "kde":
        for what, n in sizes.items():
            if n < 2:
                raise ConfigError(f"{key[what]}: a KDE bandwidth rule needs at least 2 samples per fit, got {n}")
    if run.model == "gmm":
        for what, n in sizes.items():
            if n <= cfg.gmm.components:
                raise ConfigError(f"{key[what]}: EM with {cfg.gmm.components} components needs more samples per fit than components, got {n}")
    if run.model == "gaussian" and cfg.gaussian.covariance == "full":
        if cfg.gaussian.truncate is not None:
            raise ConfigError("gaussian.truncate: tail cutting is per coordinate and needs covariance: diagonal")
        for what, n in sizes.items():
            if n <= cfg.gaussian.dim:
                raise ConfigError(f"{key[what]}: a full covariance in d = {cfg.gaussian.dim} dimensions needs more than d samples per fit, got {n}")
    if run.model == "categorical" and cfg.categorical.truncate is not None:
        try:
            parse_truncate(cfg.categorical.truncate)
        except ValueError as e:
            raise ConfigError(f"categorical.truncate: {e}") from None
    if cfg.tracking.experiment is not None and (not cfg.tracking.experiment or "/" in cfg.tracking.experiment):
        raise ConfigError(f"tracking.experiment: expected a non-empty name without '/', got {cfg.tracking.experiment!r}")


def theory_config_from_dict(data: dict[str, Any]) -> TheoryConfig:
    cfg = build_dataclass(TheoryConfig, data, "")
    validate(cfg)
    return cfg


read_theory_yaml = read_yaml_mapping  # the raw mapping of a theory recipe


def load_theory_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> TheoryConfig:
    """Load a theory recipe, apply dotted ``key=value`` overrides, validate.
    Raises ConfigError (one line) on any problem."""
    data = read_theory_yaml(path) if path is not None else {}
    apply_overrides(data, overrides or [])
    return theory_config_from_dict(data)


def describe_theory() -> str:
    """Every key with its type, default and doc."""
    return describe(TheoryConfig)
