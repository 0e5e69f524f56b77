"""The registries of the toolkit's named concepts, and a config checked against them.

Each concept that a config names has one registry, owned by the component
that implements it:

- ``mix.regime``: :data:`collapse.mixing.REGIMES`, the mixing regimes;
- ``model.preset``: :data:`collapse.lm.presets.PRESETS`, the model sizes;
- ``sample.gates``: :data:`collapse.gates.GATES`, the synthetic-data gates;
- ``data.pipeline``: :data:`collapse.data.pipeline.STEPS`, the corpus pipeline's row steps;
- ``metrics.names``: :data:`collapse.metrics.REGISTRY`, the metrics;
- the theory study's ``run.model``: :data:`collapse.theory.models.MODELS`
  (checked by :mod:`collapse.theory.config`, which is above the models).

:mod:`collapse.config` is core and imports no component, so it cannot check
these names; this module, above the components, does: :func:`check_names`,
and :func:`load_config` / :func:`from_dict`, which load a config with that
check (what entry points, sweeps and pretraining use, so a bad name fails in
one line, naming the key, before any work). :func:`describe` is
``--help-config``: every key, with the registries' names in the docs of the
keys that take them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from collapse import config as _config
from collapse.config import Config
from collapse.data.pipeline import STEPS
from collapse.errors import ConfigError
from collapse.gates import GATES
from collapse.lm.presets import PRESETS
from collapse.metrics import REGISTRY as METRICS
from collapse.metrics.keys import suggest_metric
from collapse.mixing import REGIMES

__all__ = ["REGISTRIES", "check_names", "describe", "from_dict", "load_config"]

#: Registry name (the ``choices`` of a config field) -> the names it holds, in registry order.
REGISTRIES: Mapping[str, Iterable[str]] = {
    "regimes": REGIMES,
    "presets": PRESETS,
    "gates": GATES,
    "pipeline_steps": STEPS,
    "metrics": METRICS,
}


def _distinct_among(key: str, what: str, values: list[str], known: Iterable[str]) -> None:
    known = list(known)
    if any(v not in known for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"{key}: expected distinct {what} among {', '.join(known)}, got {values!r}")


def check_names(cfg: Config) -> None:
    """Every name of ``cfg`` against its registry; one-line ConfigError naming the key."""
    for r in cfg.regimes:
        if r not in REGIMES:
            raise ConfigError(f"mix.regime: expected one of {', '.join(REGIMES)}, got {r!r}")
    if len(set(cfg.regimes)) != len(cfg.regimes) or not cfg.regimes:
        raise ConfigError(f"mix.regime: expected distinct regimes, got {cfg.mix.regime!r}")
    if cfg.model.preset not in PRESETS:
        raise ConfigError(f"model.preset: expected one of {', '.join(PRESETS)}, got {cfg.model.preset!r}")
    _distinct_among("data.pipeline", "steps", cfg.data.pipeline, STEPS)
    _distinct_among("sample.gates", "gates", cfg.sample.gates, GATES)
    for m in cfg.metrics.names:
        if m not in METRICS:
            hint = suggest_metric(m)
            raise ConfigError(f"metrics.names: unknown metric {m!r}" + (f"; {hint}" if hint else "")
                              + f" (known: {', '.join(sorted(METRICS))})")
    if len(set(cfg.metrics.names)) != len(cfg.metrics.names):
        raise ConfigError(f"metrics.names: expected distinct names, got {cfg.metrics.names!r}")


def from_dict(data: dict[str, Any]) -> Config:
    """:func:`collapse.config.from_dict` with the names checked."""
    return _config.from_dict(data, check_names)


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """:func:`collapse.config.load_config` with the names checked: a YAML recipe, overrides, every check."""
    return _config.load_config(path, overrides, check_names)


def describe() -> str:
    """``collapse run --help-config``: every key with its type, default and doc, registries' names filled in."""
    return _config.describe(Config, REGISTRIES)
