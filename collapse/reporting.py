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
    title = f"{frame['regime'].iloc[0]} (seed {frame['seed'].iloc[0]})"
    paths = plot_metrics(long, Path(out_dir) / "metrics", title=title)
    ppl = perplexity_values(Path(out_dir).parent)
    if len(ppl):
        paths += plot_perplexity_histograms({title: ppl}, Path(out_dir) / "perplexity_gen0")
    return paths


def perplexity_values(run_dir: str | Path) -> pd.DataFrame:
    """Per-sample perplexities under the generation-0 model from a run directory's
    artifacts: columns generation (-1 for the held-out human reference) and ppl."""
    import json

    run_dir = Path(run_dir)
    files = [(-1, run_dir / "human_reference" / "perplexity_gen0.jsonl")]
    files += [(int(d.name.split("_")[1]), d / "metrics" / "perplexity_gen0.jsonl") for d in sorted(run_dir.glob("gen_[0-9][0-9][0-9]"))]
    rows = []
    for g, f in files:
        if f.exists():
            for line in f.read_text().splitlines():
                v = json.loads(line).get("ppl")
                if v is not None:
                    rows.append((g, v))
    return pd.DataFrame(rows, columns=["generation", "ppl"])


def plot_perplexity_histograms(panels: dict[str, pd.DataFrame], out_base: Path, title: str | None = None) -> list[Path]:
    """The figure of Shumailov et al. (2024, Fig. 1b): per panel (a regime), one
    histogram per generation of the samples' perplexity under the generation-0
    model, generations coloured in sequence, held-out human code dashed."""
    _style()
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    panels = {k: v for k, v in panels.items() if len(v)}
    if not panels:
        raise CollapseError("no perplexity_gen0 artifacts found: add perplexity_gen0 to metrics.names")
    allv = pd.concat(panels.values())["ppl"]
    bins = np.geomspace(max(allv.min(), 1.0), allv.max() * 1.0001, 40)
    gmax = int(max(v["generation"].max() for v in panels.values()))
    colors = sns.color_palette("rocket_r", gmax + 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 0.4, 2.3), squeeze=False, sharey=True)
    for ax, (label, df) in zip(axes.flat, panels.items()):
        for g, sub in df.groupby("generation"):
            # Density per decade: the area over a log axis is one for every generation.
            dens, _ = np.histogram(np.log10(sub["ppl"]), bins=np.log10(bins), density=True)
            if g < 0:
                ax.stairs(dens, bins, color="0.2", ls="--", lw=1.0, label="human")
            else:
                ax.stairs(dens, bins, fill=True, alpha=0.35, color=colors[int(g)], label=f"gen {g}")
                ax.stairs(dens, bins, color=colors[int(g)], lw=0.8)
        ax.set_xscale("log")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("perplexity under the generation-0 model", fontsize=7)
        ax.tick_params(labelsize=7)
    axes.flat[0].set_ylabel("density per decade", fontsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=6, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_suffix(".png"), out_base.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=200)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def run_dirs(experiment: str, tracking_uri: str | None = None, root: str | Path = "runs") -> dict[str, Path]:
    """run name → run directory (the ``run_dir`` tag) of the experiment's runs that still exist on disk."""
    from collapse.tracking import client, resolve_uri

    c = client(resolve_uri(tracking_uri, root))
    exp = c.get_experiment_by_name(experiment)
    out = {}
    for run in c.search_runs([exp.experiment_id], max_results=50000) if exp else []:
        d = run.data.tags.get("run_dir")
        if d and Path(d).is_dir():
            out[run.info.run_name] = Path(d)
    return dict(sorted(out.items()))


def report(experiment: str, out: str | Path = "reports", metrics: list[str] | None = None,
           tracking_uri: str | None = None, root: str | Path = "runs") -> list[Path]:
    """Draw the experiment's metric-vs-generation figure and write its tidy table."""
    df = load_metrics(experiment, tracking_uri, root)
    out_dir = Path(out) / experiment
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "metrics.csv", index=False)
    paths = plot_metrics(df, out_dir / "metrics", metrics, title=experiment)
    ppl = {name: perplexity_values(d) for name, d in run_dirs(experiment, tracking_uri, root).items()}
    if any(len(v) for v in ppl.values()):
        paths += plot_perplexity_histograms(ppl, out_dir / "perplexity_gen0", title=experiment)
    n_seeds = df.groupby("regime")["seed"].nunique().to_dict()
    log.info("report: %s (%d runs; seeds per regime %s) → %s", experiment, df["run_id"].nunique(), n_seeds, out_dir)
    for p in paths:
        print(p)
    return paths
