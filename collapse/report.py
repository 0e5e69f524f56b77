"""Figures from tracked runs: metric-vs-generation per regime, read back from MLflow.

``collapse report EXPERIMENT`` reads every run of the MLflow experiment,
builds one tidy table (run, regime, seed, generation, metric, value) and draws
one panel per metric with a line per regime (mean and 95 % confidence band
over seeds when there are several) and the human reference as a dashed line.
Figures are written as PNG and vector PDF under ``reports/<experiment>/``.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import logging
from pathlib import Path
from typing import Iterable

import pandas as pd

from collapse.errors import CollapseError

log = logging.getLogger("collapse")

# Panels drawn first, in this order, when present.
KEY_METRICS = ["test_ce", "test_bpb", "val_loss", "syntax_valid", "distinct_1", "distinct_4", "kl_unigram",
               "js_unigram", "vocab_coverage", "mean_tokens", "sample_eos_rate", "train_loss"]


def _style():
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")


def load_metrics(experiment: str, tracking_uri: str | None = None, root: str | Path = "runs") -> pd.DataFrame:
    """Every logged metric of every run of ``experiment`` as a tidy table:
    columns run_id, run_name, regime, seed, generation, metric, value."""
    from collapse.tracking import client, resolve_uri

    uri = resolve_uri(tracking_uri, root)
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise CollapseError(f"no MLflow experiment named {experiment!r} at {uri}")
    rows = []
    for run in c.search_runs([exp.experiment_id], max_results=50000):
        tags = run.data.tags
        for key in run.data.metrics:
            for m in c.get_metric_history(run.info.run_id, key):
                rows.append({"run_id": run.info.run_id, "run_name": run.info.run_name,
                             "regime": tags.get("regime", "?"), "seed": tags.get("seed", "?"),
                             "generation": int(m.step), "metric": key, "value": float(m.value)})
    if not rows:
        raise CollapseError(f"experiment {experiment!r} has no logged metrics yet")
    df = pd.DataFrame(rows)
    # A step logged twice (a resumed mirror) keeps its last value.
    return df.drop_duplicates(["run_id", "metric", "generation"], keep="last").reset_index(drop=True)


def _ordered_metrics(names: Iterable[str]) -> list[str]:
    names = [n for n in names if not n.startswith(("human.", "time.", "train_steps", "train_tokens", "train_examples"))]
    first = [m for m in KEY_METRICS if m in names]
    return first + sorted(set(names) - set(first))


def plot_metrics(df: pd.DataFrame, out_base: Path, metrics: list[str] | None = None, hue: str = "regime",
                 title: str | None = None) -> list[Path]:
    """One panel per metric, a line per ``hue`` value, human references dashed.
    Returns the PNG and PDF paths."""
    _style()
    import matplotlib.pyplot as plt
    import seaborn as sns

    chosen = _ordered_metrics(df["metric"].unique()) if not metrics else list(metrics)
    missing = [m for m in chosen if m not in set(df["metric"])]
    if missing:
        raise CollapseError(f"metrics not logged: {', '.join(missing)} (logged: {', '.join(_ordered_metrics(df['metric'].unique()))})")
    ncol = min(4, len(chosen))
    nrow = -(-len(chosen) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.9 * ncol + 0.6, 1.7 * nrow + 0.5), squeeze=False, sharex=True)
    hue_order = sorted(df[hue].unique())
    for ax, m in zip(axes.flat, chosen):
        sub = df[df["metric"] == m]
        sns.lineplot(sub, x="generation", y="value", hue=hue, hue_order=hue_order, marker="o", markersize=3,
                     errorbar=("ci", 95), ax=ax, legend=ax is axes.flat[0])
        ref = df[df["metric"] == f"human.{m}"]
        if len(ref):
            ax.axhline(ref["value"].mean(), color="0.3", ls="--", lw=0.8, label="human")
        ax.set_title(m, fontsize=8)
        ax.set_ylabel("")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    if axes.flat[0].get_legend() is not None:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        axes.flat[0].get_legend().remove()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_suffix(".png"), out_base.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=200)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def plot_run(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The figure of one run (wide frame: one row per generation)."""
    long = frame.melt(id_vars=["regime", "seed", "generation"], var_name="metric", value_name="value").dropna()
    return plot_metrics(long, Path(out_dir) / "metrics", title=f"{frame['regime'].iloc[0]} (seed {frame['seed'].iloc[0]})")


def report(experiment: str, out: str | Path = "reports", metrics: list[str] | None = None,
           tracking_uri: str | None = None, root: str | Path = "runs") -> list[Path]:
    """Draw the experiment's metric-vs-generation figure and write its tidy table."""
    df = load_metrics(experiment, tracking_uri, root)
    out_dir = Path(out) / experiment
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "metrics.csv", index=False)
    paths = plot_metrics(df, out_dir / "metrics", metrics, title=experiment)
    n_seeds = df.groupby("regime")["seed"].nunique().to_dict()
    log.info("report: %s (%d runs; seeds per regime %s) → %s", experiment, df["run_id"].nunique(), n_seeds, out_dir)
    for p in paths:
        print(p)
    return paths
