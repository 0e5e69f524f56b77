"""Collapse summary statistics: a metric's whole curve over generations in three numbers.

Per run and metric (:func:`summarize_runs`; from tracked runs: ``collapse.summarize``
or ``collapse.load_runs(..., summary=True)``):

- ``slope``: the least-squares slope of the metric against the generation
  number (change per generation), with its t-based 95 % confidence interval
  ``slope ± t(0.975, n − 2) · se`` over the run's n generations (no interval
  below 3 generations; a curve that is exactly a line has a zero-width one);
- ``area``: the signed area between the curve and its generation-0 value,
  ``∫ (y(g) − y(0)) dg`` by the trapezoid rule over the generations logged
  (positive when the metric rose, in metric × generations);
- ``first_gen``: the first generation whose value has moved from the
  generation-0 value by at least ``threshold`` (relative, default 10 %):
  ``|y(g) − y(0)| ≥ threshold · |y(0)|``; missing (``<NA>``) when it never
  does, or when y(0) is 0 or not logged (a relative move is undefined then).

Over seeds (:func:`group_summary`; the report's ``summary.md``, drawn by
:func:`collapse.reporting.summary_markdown`): per group and
metric, the mean slope and mean area with t-based 95 % intervals over the runs
(:func:`collapse.stats.mean_ci`: none below 3 seeds), and how many runs crossed
the threshold with the mean first generation of those that did.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from collapse.errors import CollapseError

from collapse.stats import MIN_SEEDS, mean_ci
if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

DEFAULT_THRESHOLD = 0.1
LEVEL = 0.95
SUMMARY_COLUMNS = ["metric", "n_generations", "last_generation", "gen0", "last", "slope", "slope_lo", "slope_hi",
                   "area", "first_gen", "threshold"]


def curve_summary(generations: Iterable[float], values: Iterable[float], threshold: float = DEFAULT_THRESHOLD,
                  level: float = LEVEL) -> dict[str, Any]:
    """Slope (with its CI), area and first generation of one curve. Points whose value is
    not finite are left out; the generations need not be consecutive."""
    from scipy import stats

    g = np.asarray(list(generations), dtype=np.float64)
    y = np.asarray(list(values), dtype=np.float64)
    ok = np.isfinite(g) & np.isfinite(y)
    g, y = g[ok], y[ok]
    order = np.argsort(g, kind="stable")
    g, y = g[order], y[order]
    n = len(g)
    out: dict[str, Any] = {"n_generations": n, "last_generation": int(g[-1]) if n else None,
                           "gen0": math.nan, "last": float(y[-1]) if n else math.nan, "slope": math.nan,
                           "slope_lo": math.nan, "slope_hi": math.nan, "area": math.nan, "first_gen": None,
                           "threshold": threshold}
    if n >= 2 and np.ptp(g) > 0:
        gm = g.mean()
        sxx = float(((g - gm) ** 2).sum())
        slope = float(((g - gm) * (y - y.mean())).sum() / sxx)
        out["slope"] = slope
        if n >= 3:
            resid = y - (y.mean() + slope * (g - gm))
            se = math.sqrt(float((resid ** 2).sum()) / (n - 2) / sxx)
            half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * se
            out["slope_lo"], out["slope_hi"] = slope - half, slope + half
    at0 = np.flatnonzero(g == 0)
    if len(at0):
        y0 = float(y[at0[0]])
        out["gen0"] = y0
        d = y - y0
        out["area"] = float(np.sum((d[1:] + d[:-1]) / 2 * np.diff(g))) if n >= 2 else 0.0
        if y0 != 0:
            # A move of exactly the threshold counts (up to float rounding of the difference).
            moved = np.flatnonzero((g > 0) & (np.abs(d) >= threshold * abs(y0) * (1 - 1e-12)))
            if len(moved):
                out["first_gen"] = int(g[moved[0]])
    return out


def _id_columns(frame: "pd.DataFrame") -> list[str]:
    """The columns naming a run: those before ``generation`` (the layout of collapse.load_runs)."""
    cols = list(frame.columns)
    if "generation" not in cols:
        raise CollapseError("summary statistics need a generation column (a frame like collapse.load_runs)")
    return cols[:cols.index("generation")]


def summarize_runs(frame: "pd.DataFrame", threshold: float = DEFAULT_THRESHOLD,
                   metrics: list[str] | None = None) -> "pd.DataFrame":
    """One row per (run, metric) of a runs table shaped like :func:`collapse.load_runs`
    (identifying columns, then ``generation``, then one column per metric): the
    run's identifying columns, then :data:`SUMMARY_COLUMNS`. ``metrics``: which
    metric columns (default: every numeric one after ``generation``)."""
    import pandas as pd

    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise CollapseError(f"summary threshold: expected a relative change > 0 (0.1 = 10 %), got {threshold!r}")
    ids = _id_columns(frame)
    after = list(frame.columns)[list(frame.columns).index("generation") + 1:]
    if metrics is None:
        metrics = [m for m in after if frame[m].dtype.kind in "fiu"]
    else:
        missing = [m for m in metrics if m not in frame.columns]
        if missing:
            raise CollapseError(f"metrics not in the runs table: {', '.join(missing)}")
    key = ["run_id"] if "run_id" in ids else (["run_name"] if "run_name" in ids else ids)
    rows = []
    for _, run in frame.groupby(key, sort=False, dropna=False) if key else [((), frame)]:
        first = run.iloc[0]
        ident = {c: first[c] for c in ids}
        for m in metrics:
            s = curve_summary(run["generation"].to_numpy(dtype=float), run[m].to_numpy(dtype=float), threshold)
            if s["n_generations"] == 0:
                continue
            rows.append({**ident, "metric": m, **s})
    out = pd.DataFrame(rows, columns=ids + SUMMARY_COLUMNS)
    out["first_gen"] = out["first_gen"].astype("Int64")
    out["last_generation"] = out["last_generation"].astype("Int64")
    return out


def group_summary(summary: "pd.DataFrame", by: str, metrics: list[str] | None = None) -> "pd.DataFrame":
    """Per value of ``by`` (an axis column) and metric, over its runs (seeds): the mean
    slope and mean area with t-based 95 % CIs, the runs that crossed the threshold
    and the mean first generation of those (with its CI)."""
    import pandas as pd

    rows = []
    chosen = list(dict.fromkeys(summary["metric"])) if metrics is None else [m for m in metrics
                                                                              if m in set(summary["metric"])]
    values = sorted(summary[by].dropna().unique(), key=str)
    for m in chosen:
        for h in values:
            sub = summary[(summary["metric"] == m) & (summary[by] == h)]
            if not len(sub):
                continue
            sl = mean_ci(sub["slope"].to_numpy(dtype=float))
            ar = mean_ci(sub["area"].to_numpy(dtype=float))
            crossed = sub["first_gen"].dropna().to_numpy(dtype=float)
            fg = mean_ci(crossed)
            note = f"fewer than {MIN_SEEDS} runs: no interval" if len(sub) < MIN_SEEDS else ""
            rows.append({"metric": m, by: h, "n_runs": len(sub), "slope_mean": sl.mean, "slope_lo": sl.lo,
                         "slope_hi": sl.hi, "area_mean": ar.mean, "area_lo": ar.lo, "area_hi": ar.hi,
                         "crossed": len(crossed), "first_gen_mean": fg.mean, "first_gen_lo": fg.lo,
                         "first_gen_hi": fg.hi, "threshold": float(sub["threshold"].iloc[0]), "note": note})
    return pd.DataFrame(rows, columns=["metric", by, "n_runs", "slope_mean", "slope_lo", "slope_hi", "area_mean",
                                       "area_lo", "area_hi", "crossed", "first_gen_mean", "first_gen_lo",
                                       "first_gen_hi", "threshold", "note"])


__all__ = ["curve_summary", "summarize_runs", "group_summary", "DEFAULT_THRESHOLD", "SUMMARY_COLUMNS"]
