"""``collapse.load_runs``: a sweep's (or any experiment's) results as one tidy table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from collapse.errors import CollapseError
from collapse.summary import summarize_runs
from collapse.sweep.spec import load_sweep
from collapse.sweep.state import read_sweep_state
from collapse.tracking import NoStore, client, read_json, resolve_uri

BASE_COLUMNS = ["run_id", "run_name", "status", "regime", "seed"]


def _parse_tag(v: str) -> Any:
    """Axis tags hold ``str(value)`` (JSON for lists): give numbers back their type."""
    import yaml

    try:
        out = yaml.safe_load(v)
    except yaml.YAMLError:
        return v
    if isinstance(out, str) and out != v:
        return v
    if out is None and v not in ("null", "None", "~", ""):
        return v
    if isinstance(out, (dict, list)):
        try:
            return json.dumps(json.loads(v))
        except ValueError:
            return v
    return out


def _is_sweep_file(arg: str | Path) -> bool:
    p = Path(arg)
    return p.suffix in (".yaml", ".yml") and p.is_file()


def sweep_tracking_uri(sweep) -> str:
    """The tracking URI a sweep was launched with (its ``sweep.json``), else the one it would use."""
    return read_sweep_state(sweep).get("tracking_uri") or resolve_uri(sweep.tracking_uri, sweep.root, create=False)


def resolve_source(experiment_or_sweep: str | Path, tracking_uri: str | None = None,
                   root: str | Path = "runs") -> tuple[str, str, list[str] | None, Path]:
    """``(experiment name, tracking URI, sweep axes or None, run root)`` of an experiment
    name or a sweep file, creating nothing. The URI: ``tracking_uri`` when given, else
    the one the sweep was launched with (``<root>/<sweep>/sweep.json``, for a sweep file
    or a name that is a sweep's), else the sweep's ``tracking.uri``, else
    ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db``."""
    if _is_sweep_file(experiment_or_sweep):
        sweep = load_sweep(experiment_or_sweep)
        return sweep.name, tracking_uri or sweep_tracking_uri(sweep), sweep.axis_keys, sweep.root
    name = str(experiment_or_sweep)
    recorded = None
    state = Path(root) / name / "sweep.json"
    if tracking_uri is None and "/" not in name and state.is_file():
        try:
            recorded = read_json(state).get("tracking_uri")
        except (CollapseError, OSError, AttributeError):
            recorded = None
    return name, tracking_uri or recorded or resolve_uri(None, root, create=False), None, Path(root)


def open_experiment(name: str, uri: str, root: str | Path | None = None, sweep_file: str | Path | None = None):
    """``(client, experiment)`` for reading, creating nothing: a missing store or
    experiment is one :class:`CollapseError` line that lists what there is."""
    where = f" (`collapse ls {root}` lists the runs on disk)" if root is not None else ""
    try:
        c = client(uri, create=False)
    except NoStore as e:
        first = f" (launch the sweep first: collapse sweep {sweep_file})" if sweep_file is not None else ""
        raise CollapseError(f"{e}: nothing has been tracked there yet{first}; pass --tracking-uri (or --root) "
                            f"where the runs of {name!r} were logged{where}") from None
    exp = c.get_experiment_by_name(name)
    if exp is None:
        names = sorted(e.name for e in c.search_experiments() if e.name != "Default")
        have = f"experiments there: {', '.join(names)}" if names else "no experiment there yet"
        raise CollapseError(f"no MLflow experiment named {name!r} at {uri} ({have}){where}")
    return c, exp


def load_runs(experiment_or_sweep: str | Path, *, tracking_uri: str | None = None,
              root: str | Path = "runs", summary: bool = False, threshold: float = 0.1) -> pd.DataFrame:
    """One row per (run, generation) of an MLflow experiment, read from MLflow.

    ``experiment_or_sweep`` is an experiment name or a sweep file (its name is
    the experiment; its tracking store is the one it was launched with, as for
    a name that is a sweep's under ``root``). Columns: ``run_id``, ``run_name``,
    ``status``, ``regime``, ``seed``, one column per sweep axis named by its key
    (``mix.regime``, ``run.seed``, ``sample.temperature`` ...), ``generation``,
    then every metric. A sweep's parent run is left out. Ready for seaborn, e.g.
    ``sns.lineplot(df, x="generation", y="test_ce", hue="mix.regime")``.

    ``summary=True`` returns the collapse summary frame instead: one row per
    (run, metric) with the slope per generation and its 95 % CI, the signed
    area between the curve and its generation-0 value, and the first
    generation that moved by ``threshold`` (relative) from generation 0
    (:func:`collapse.summary.summarize_runs`; the same as
    ``collapse.summarize(load_runs(...))``).

    Reading never writes: a store or experiment that does not exist is one
    :class:`CollapseError` line (listing the experiments there), not a new
    empty database.
    """
    name, uri, axis_keys, src_root = resolve_source(experiment_or_sweep, tracking_uri, root)
    c, exp = open_experiment(name, uri, src_root, experiment_or_sweep if axis_keys is not None else None)
    runs = []
    token = None
    while True:
        page = c.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    runs = [r for r in runs if r.data.tags.get("sweep.role") != "parent"]
    if axis_keys is None:
        axis_keys = sorted({k[len("axis."):] for r in runs for k in r.data.tags if k.startswith("axis.")})
    rows: list[dict[str, Any]] = []
    metric_names: set[str] = set()
    for run in sorted(runs, key=lambda r: (r.info.run_name or "", r.info.start_time or 0)):
        tags = run.data.tags
        base: dict[str, Any] = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
                                "regime": tags.get("regime"), "seed": _parse_tag(tags["seed"]) if "seed" in tags else None}
        for k in axis_keys:
            base[k] = _parse_tag(tags[f"axis.{k}"]) if f"axis.{k}" in tags else None
        by_gen: dict[int, dict[str, Any]] = {}
        for key in run.data.metrics:
            metric_names.add(key)
            for m in c.get_metric_history(run.info.run_id, key):
                by_gen.setdefault(int(m.step), {})[key] = float(m.value)  # a step logged twice keeps its last value
        for g in sorted(by_gen):
            rows.append({**base, "generation": g, **by_gen[g]})
    columns = BASE_COLUMNS + [k for k in axis_keys if k not in BASE_COLUMNS] + ["generation"] + sorted(metric_names)
    df = pd.DataFrame(rows, columns=columns)
    if len(df):
        df["generation"] = df["generation"].astype(int)
    df = df.reset_index(drop=True)
    if summary:
        return summarize_runs(df, threshold=threshold)
    return df
