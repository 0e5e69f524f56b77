"""Tables and figures of theory runs: the simulation with its error band beside the closed form.

Used by ``collapse theory`` without ``--json``: a plain-text table on stdout
and one figure per run (one panel per tracked quantity; the mean over trials
with a ±2 standard-error band, the closed form as a dashed line where the
literature has one — Shumailov et al. 2024; Gerstgrasser et al. 2024; Dohmatob
et al. 2024; Bertrand et al. 2024), saved as PNG and PDF with the Agg backend.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from collapse.theory.run import TheoryResult


def table_generations(generations: int, rows: int = 12) -> list[int]:
    """All generations when there are few, else a roughly log-spaced selection (always 0 and the last)."""
    if generations + 1 <= rows:
        return list(range(generations + 1))
    picks = set(np.unique(np.round(np.geomspace(1, generations + 1, rows)).astype(int) - 1).tolist())
    return sorted(picks | {0, generations})


def _fmt(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.4g}"


def format_table(result: TheoryResult) -> str:
    """One row per selected generation: mean ± s.e. of every quantity, and its closed form."""
    head = ["gen", "n"]
    for q in result.quantities:
        head.append(f"{q} (mean ± se)")
        if q in result.closed:
            head.append(f"{q} closed")
    body = []
    for g in table_generations(result.generations):
        row = [str(g), str(g + 1)]
        for q in result.quantities:
            row.append(f"{_fmt(result.mean[q][g])} ± {_fmt(result.se[q][g])}")
            if q in result.closed:
                row.append(_fmt(result.closed[q][g]))
        body.append(row)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
    title = (f"{result.model} · {result.regime} · {result.trials} trials · seed {result.seed} · "
             + ", ".join(f"{k}={v}" for k, v in result.params.items()))
    lines = [title, line(head), line(["-" * w for w in widths])] + [line(r) for r in body]
    if result.closed_forms:
        lines.append("closed forms (n = fits = generation + 1): " + "; ".join(f"{q} = {f}" for q, f in result.closed_forms.items()))
    else:
        lines.append(f"no closed form is known for {result.model} under {result.regime}")
    return "\n".join(lines)


def plot_result(result: TheoryResult, out_dir: str | Path) -> list[Path]:
    """Save ``<model>_<regime>.png`` and ``.pdf`` under ``out_dir``; return the paths."""
    import seaborn as sns
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    qs = result.quantities
    gens = np.arange(result.generations + 1)
    with sns.axes_style("whitegrid"):
        # A bare Figure on an Agg canvas: no pyplot, no global backend switch.
        fig = Figure(figsize=(4.0 * len(qs), 3.4), constrained_layout=True)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(qs), squeeze=False)[0]
        color = sns.color_palette("deep")[0]
        for ax, q in zip(axes, qs):
            mean, se = result.mean[q], np.nan_to_num(result.se[q])
            ax.plot(gens, mean, color=color, lw=1.6, label="simulation (mean)")
            ax.fill_between(gens, mean - 2 * se, mean + 2 * se, color=color, alpha=0.25, lw=0, label="±2 s.e.")
            if q in result.closed:
                ax.plot(gens, result.closed[q], color="black", ls="--", lw=1.2, label="closed form")
            ax.set_title(q)
            ax.set_xlabel("generation")
        axes[0].legend(loc="best", fontsize=8)
        fig.suptitle(f"{result.model} · {result.regime} · {result.trials} trials", fontsize=11)
        stem = out_dir / f"{result.model}_{result.regime}"
        paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
        fig.savefig(paths[0], dpi=150)
        fig.savefig(paths[1])
    return paths
