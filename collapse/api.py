"""The Python API for notebooks and scripts: ``collapse.run`` and ``collapse.summarize``.

    import collapse
    res = collapse.run("experiments/tiny.yaml", run__generations=2, mix={"regime": ["replace", "accumulate"]})
    res.metrics                      # one row per (regime, generation), one column per metric
    res.samples(2, "accumulate")     # generation 2's samples (a datasets.Dataset)
    res.run_dirs                     # where everything is on disk

It runs exactly what ``collapse run`` runs (same run directories, resume,
MLflow mirror); only the way overrides are written differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collapse.config import Config, apply_overrides
from collapse.errors import ConfigError
from collapse.registries import from_dict, load_config

SECTIONS = ("data", "tokenizer", "model", "train", "sample", "mix", "metrics", "tracking", "run")


def _override_items(overrides: dict[str, Any]) -> dict[str, Any]:
    """Keyword overrides → dotted keys: ``run__generations=2``, ``**{"run.generations": 2}``
    and whole sections ``run={"generations": 2}`` all mean run.generations = 2."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = key.replace("__", ".")
        if dotted in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted}: expected a mapping of {dotted} keys, got {value!r}")
            for k, v in value.items():
                out[f"{dotted}.{k}"] = v
        elif dotted.split(".")[0] in SECTIONS and "." in dotted:
            out[dotted] = value
        else:
            raise ConfigError(f"{key}: expected a config key such as run__generations=2 or run={{'generations': 2}} "
                              f"(sections: {', '.join(SECTIONS)})")
    return out


def resolve_config(config_or_path: str | Path | Config | dict | None = None, **overrides: Any) -> Config:
    """A validated Config from a YAML path, a Config, a plain dict or nothing (the defaults), plus overrides."""
    items = _override_items(overrides)
    if config_or_path is None or isinstance(config_or_path, (str, Path)):
        return load_config(config_or_path, items)
    if isinstance(config_or_path, Config):
        data = config_or_path.to_dict()
    elif isinstance(config_or_path, dict):
        import copy

        data = copy.deepcopy(config_or_path)
    else:
        raise ConfigError(f"expected a YAML path, a Config or a dict, got {type(config_or_path).__name__}")
    return from_dict(apply_overrides(data, items))


@dataclass
class Results:
    """What ``collapse.run`` returns: every regime's run, their metrics and samples."""

    config: Config
    runs: dict[str, Any] = field(default_factory=dict)  # regime → collapse.experiment.RunResult

    @property
    def metrics(self):
        """One row per (regime, seed, generation); a column per metric (``human.*`` references included)."""
        import pandas as pd

        return pd.concat([r.metrics_frame for r in self.runs.values()], ignore_index=True)

    @property
    def run_dirs(self) -> dict[str, Path]:
        return {k: r.run_dir for k, r in self.runs.items()}

    @property
    def run_dir(self) -> Path:
        """The run directory (one regime), or the folder holding all regimes' run directories."""
        dirs = list(self.run_dirs.values())
        return dirs[0] if len(dirs) == 1 else Path(*Path(dirs[0]).parts[:-1])

    @property
    def generations(self) -> list[int]:
        return list(range(self.config.run.generations + 1))

    def _run(self, regime: str | None):
        if regime is None:
            if len(self.runs) > 1:
                raise ValueError(f"several regimes ran ({', '.join(self.runs)}): name one")
            return next(iter(self.runs.values()))
        if regime not in self.runs:
            raise ValueError(f"no regime {regime!r} in this result ({', '.join(self.runs)})")
        return self.runs[regime]

    def samples(self, generation: int, regime: str | None = None):
        """Generation ``generation``'s samples (a ``datasets.Dataset`` with text, prompt, provenance)."""
        return self._run(regime).samples(generation)

    def texts(self, generation: int, regime: str | None = None, n: int | None = None) -> list[str]:
        """The first ``n`` sample texts of a generation (all when ``n`` is None)."""
        ds = self.samples(generation, regime)
        return list(ds["text"][: n if n is not None else len(ds)])

    def __repr__(self) -> str:
        last = self.config.run.generations
        parts = []
        for regime, r in self.runs.items():
            m = r.metrics[-1] if r.metrics else {}
            ce = m.get("test_ce")
            parts.append(f"{regime}: gen {len(r.metrics) - 1}/{last}" + (f", test_ce {ce:.3f}" if ce is not None else ""))
        return f"Results({self.config.run.experiment}; {'; '.join(parts)})"


def run(config_or_path: str | Path | Config | dict | None = None, **overrides: Any) -> Results:
    """Run (or resume) an experiment and return its :class:`Results`.

    ``config_or_path``: a YAML recipe, a ``Config``, a dict shaped like the
    YAML, or None for the defaults. Overrides as keywords: ``run__generations=2``
    (double underscore for the dot), ``mix={"regime": "accumulate"}`` (a
    section), or ``**{"run.generations": 2}``. Re-running the same call reads
    back what is finished.

    Logs the CLI's lines (one per generation: times, headline metrics, time
    left, ``(cached)`` for generations read back) on stderr, unless the
    caller has configured logging; progress bars follow ``run.progress``."""
    from collapse.experiment import run_experiment
    from collapse.logs import ensure_api_logging

    cfg = resolve_config(config_or_path, **overrides)
    ensure_api_logging()
    results = run_experiment(cfg)
    return Results(cfg, {r.regime: r for r in results})


def summarize(source: Any, threshold: float = 0.1, metrics: list[str] | None = None, **load_kwargs: Any):
    """``collapse.summarize``: the collapse summary statistics, one row per (run, metric):
    slope per generation with its 95 % CI, signed area between the curve and its
    generation-0 value, first generation that moved by ``threshold`` (relative)
    from generation 0 (:func:`collapse.summary.summarize_runs`). ``source``: a runs
    table shaped like :func:`collapse.load_runs`'s, or an experiment name / sweep
    file read with it (``load_kwargs``: ``tracking_uri``, ``root``)."""
    import pandas as pd

    from collapse.summary import summarize_runs

    if not isinstance(source, pd.DataFrame):
        from collapse.sweep.load import load_runs

        source = load_runs(source, **load_kwargs)
    return summarize_runs(source, threshold=threshold, metrics=metrics)
