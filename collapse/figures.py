"""Figures of runs: metric against generation, perplexity histograms, quality against diversity.

The drawing half of ``collapse report`` (:mod:`collapse.reporting` reads the
tracked runs and writes tables next to these figures), also used by a run's
own figures after each generation (:class:`collapse.callbacks.DrawFigures`)
and by the notebooks. Functions take data frames (and a run directory, for
the perplexity values) and return or save matplotlib figures; nothing here
reads MLflow or a sweep. Names, units and log scales come from the metric
registry (:func:`collapse.metrics.registry.key_info`); one colour per regime
or axis value in every figure (:func:`palette`); widths of one or two paper
columns with fonts of at least 6 pt there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from collapse.metrics.registry import key_info
from collapse.mixing import REGIMES
from collapse.rundir import RunDirReader
from collapse.errors import CollapseError
from collapse.stats import mean_ci

log = logging.getLogger("collapse")

# Panels drawn by default: the story in at most 8 panels (quality, diversity,
# tails, memorization), each slot the first of its candidates that was logged;
# ``--metrics`` chooses others. Display names and units: collapse.metrics.registry.KEYS.
STORY: list[tuple[str, tuple[str, ...]]] = [
    ("quality", ("test_ce", "prompt_ce", "val_loss")),
    ("quality", ("syntax_valid", "undefined_free", "compile_ok", "humaneval_pass_at_1")),
    ("diversity", ("distinct_4", "distinct_3", "ngram_entropy_4", "gzip_ratio")),
    ("diversity", ("ast_shape_distinct", "self_bleu", "identifiers_per_1k", "vendi")),
    ("tails", ("tail_mass", "tail_type_coverage", "vocab_coverage")),
    ("tails", ("ppl_gen0_q50", "kl_unigram_reverse", "zipf_exponent")),
    ("memorization", ("copy_rate", "corpus_copy_rate", "copy_token_share")),
    ("memorization", ("synthetic_copy_rate", "synthetic_copy_token_share")),
]
MAX_PANELS = 8
# The order of the other metrics, after these, wherever metrics are listed.
KEY_METRICS = ["test_ce", "prompt_ce", "syntax_valid", "undefined_free", "distinct_4", "self_bleu", "ast_shape_distinct",
               "identifiers_per_1k", "ppl_gen0_q50", "tail_mass", "kl_unigram", "vocab_coverage", "zipf_exponent",
               "copy_rate", "synthetic_copy_rate", "humaneval_pass_at_1"]
# A paper column and a full text width, in inches: figures are saved at exactly this width.
WIDTHS = {"single": 3.4, "double": 7.0}
# Font sizes in points at print size (the figure is saved at its printed width): nothing below 6 pt.
FONT = {"title": 7, "label": 7, "tick": 6.5, "legend": 7, "note": 6}
HUMAN = {"color": "0.35", "ls": "--", "lw": 0.9}  # the held-out human reference line, in every figure
HUMAN_LABEL = "held-out human code"


def _style():
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=0.8)
    # TrueType fonts in the PDF (not Type 3): text stays text, as publishers ask.
    matplotlib.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "axes.titlesize": FONT["title"],
                                "axes.labelsize": FONT["label"], "xtick.labelsize": FONT["tick"],
                                "ytick.labelsize": FONT["tick"], "legend.fontsize": FONT["legend"],
                                "legend.title_fontsize": FONT["legend"], "figure.titlesize": FONT["title"] + 0.5})


class FigurePaths(list):
    """The written paths (PNG, PDF) of a figure, with ``note``: a sentence for its
    caption (panels left out and why; "" when none), ``panels`` (the keys drawn)
    and ``constant`` (key → value of the panels left out as constant)."""

    note: str = ""
    panels: list[str]
    constant: dict[str, float]


def _save(fig, out_base: Path, quick: bool = False) -> list[Path]:
    """PNG (300 dpi) and vector PDF at the figure's size (its print size: no
    cropping, no scaling); ``quick``: a 120-dpi PNG only (the per-run preview)."""
    import matplotlib.pyplot as plt

    out_base.parent.mkdir(parents=True, exist_ok=True)
    if quick:
        paths = [out_base.with_suffix(".png")]
        fig.savefig(paths[0], dpi=120)
    else:
        paths = [out_base.with_suffix(".png"), out_base.with_suffix(".pdf")]
        fig.savefig(paths[0], dpi=300)
        fig.savefig(paths[1])
    plt.close(fig)
    return paths


def _split_columns(wide: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(identifying columns incl. sweep axes, metric columns): load_runs puts the metrics after ``generation``."""
    cols = list(wide.columns)
    g = cols.index("generation")
    return cols[:g + 1], cols[g + 1:]


def axis_columns(wide: pd.DataFrame) -> list[str]:
    """The sweep axes (columns between the run identity and ``generation``), plus regime and seed."""
    ids, _ = _split_columns(wide)
    return [c for c in ids if c not in ("run_id", "run_name", "status", "generation")]


def to_long(wide: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, generation) → one row per (run, generation, metric)."""
    ids, metrics = _split_columns(wide)
    return wide.melt(id_vars=ids, value_vars=metrics, var_name="metric", value_name="value").dropna(subset=["value"])


def _ordered_metrics(names: Iterable[str]) -> list[str]:
    names = [n for n in names if not n.startswith(("human.", "time.", "train_steps", "train_tokens", "train_examples", "train_flops", "model_params", "gate."))]
    first = [m for m in KEY_METRICS if m in names]
    return first + sorted(set(names) - set(first))


def default_metrics(names: Iterable[str]) -> list[str]:
    """The default panels: per slot of :data:`STORY` the first candidate logged (at
    most 8: quality, diversity, tails, memorization); when none is, the first 8
    metrics logged."""
    names = set(names)
    out: list[str] = []
    for _, candidates in STORY:
        pick = next((c for c in candidates if c in names and c not in out), None)
        if pick is not None:
            out.append(pick)
    return out or _ordered_metrics(names)[:MAX_PANELS]


def metric_label(key: str, unit: bool = True) -> str:
    """What a figure or table calls a logged key: its display name from the metric
    registry, with its unit (``test_ce`` → "held-out cross-entropy (nats/token)");
    the key itself when the registry does not know it."""
    info = key_info(key)
    return info.label if unit else info.display


# ----------------------------------------------------------------- colours
# Colours: seaborn's colour-blind palette without its grey (index 7: kept for the
# human reference), the regimes most often compared first (replace, accumulate,
# fixed_fraction, fresh: blue, orange, green, purple).
_COLORS = (0, 1, 2, 3, 4, 5, 6, 8, 9)
_REGIME_SLOTS = {"replace": 0, "accumulate": 1, "accumulate_subsample": 3, "fixed_fraction": 2, "fresh": 4, "augment": 5}


def _is_missing(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def hue_order(values: Iterable) -> list:
    """The order of hue values in every legend: regimes in the order of the regime
    registry (:data:`collapse.mixing.REGIMES`), then other values sorted (numbers
    by value)."""
    vals = list(dict.fromkeys(v for v in values if not _is_missing(v)))
    known = sorted((v for v in vals if isinstance(v, str) and v in REGIMES), key=list(REGIMES).index)
    rest = [v for v in vals if v not in known]
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in rest):
        rest.sort(key=float)
    else:
        rest.sort(key=str)
    return known + rest


def palette(values: Iterable) -> dict:
    """Value → colour (an RGB tuple), the same in every figure, report and notebook.

    Regimes have fixed colours by their place in the regime registry, whatever
    subset is drawn (``replace`` is always the first colour, ``accumulate`` the
    second, …); other values (a sweep axis) take the colours in their sorted
    order after any regimes, so one call over every value of an axis gives every
    figure of that axis the same mapping. Colour-blind-safe (seaborn
    ``colorblind``, its grey kept for the human reference), then ``husl``."""
    import seaborn as sns

    order = hue_order(values)
    cb = sns.color_palette("colorblind", 10)
    base = [cb[i] for i in _COLORS]
    slots, nxt = {}, 0
    if any(isinstance(v, str) and v in REGIMES for v in order):
        nxt = len(REGIMES)
    for v in order:
        if isinstance(v, str) and v in REGIMES:
            slots[v] = _REGIME_SLOTS.get(v, list(REGIMES).index(v))
        else:
            slots[v] = nxt
            nxt += 1
    extra = sns.color_palette("husl", max(0, max(slots.values(), default=0) + 1 - len(base)))
    colors = base + list(extra)
    return {v: tuple(colors[s]) for v, s in slots.items()}


# ----------------------------------------------------------------- axes
def constant_metrics(df: pd.DataFrame, metrics: Iterable[str]) -> dict[str, float]:
    """Metric → its value, for the metrics of a tidy frame whose values are the same
    over every row (every hue value, seed and generation; NaN ignored)."""
    out = {}
    for m in metrics:
        v = df.loc[df["metric"] == m, "value"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if len(v) and np.ptp(v) <= 1e-12 * max(1.0, float(np.abs(v).max())):
            out[m] = float(v[0])
    return out


def use_log_scale(key: str, values) -> bool:
    """A log axis for ``key``: when the registry says its values span decades
    (perplexity, compute), or when they do here (all positive, max/min > 100)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v) or (v <= 0).any():
        return False
    return key_info(key).log_scale or float(v.max() / v.min()) > 100


def _log_axis(axis) -> None:
    """A log axis labelled with plain numbers (1, 2, 5 × 10^k; 1, 3 × 10^k; or
    10^k), as many as the axis has room for (one per ~0.3 inch): readable over a
    decade or less, too. Call after the data is drawn."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax = axis.axes
    lo, hi = sorted(ax.get_xlim() if axis is ax.xaxis else ax.get_ylim())
    box = ax.get_position()
    fw, fh = ax.figure.get_size_inches()
    room = max(2, int((box.width * fw if axis is ax.xaxis else box.height * fh) / 0.3))
    decades = np.log10(hi / lo) if lo > 0 else 1.0
    subs = next((s for s in ((1.0, 2.0, 5.0), (1.0, 3.0)) if decades * len(s) <= room), (1.0,))
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=room + 1))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _tick_number(v)))
    axis.set_minor_formatter(NullFormatter())


def _tick_number(v: float) -> str:
    """0.05, 20, 5000; from 10^4 on (and below 10^-3) a power of ten: $10^{15}$, $3×10^{14}$."""
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:g}"
    m, e = f"{v:.0e}".split("e")
    return f"$10^{{{int(e)}}}$" if m == "1" else f"${m}\\times10^{{{int(e)}}}$"


def _integer_generations(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))


def _wrap(text: str, width_in: float, size: float) -> str:
    """Wrap a title to the width of its panel (``width_in`` less about half an inch
    of tick labels; about 0.55 em per character)."""
    import textwrap

    chars = max(8, int((width_in - 0.5) * 72 / (0.55 * size)))
    return "\n".join(textwrap.wrap(text, chars, break_on_hyphens=False)) if len(text) > chars else text


def _grid(n: int, most: int) -> tuple[int, int]:
    """(columns, rows) for ``n`` panels, at most ``most`` to a row, rows filled evenly."""
    nrow = -(-n // most)
    return -(-n // nrow), nrow


def _human_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], **HUMAN)


def _constant_note(constant: dict[str, float], hue: str) -> str:
    if not constant:
        return ""
    items = ", ".join(f"{metric_label(m, unit=False)} (`{m}`) = {v:.4g}" for m, v in constant.items())
    return f"Left out, constant over every {hue} and generation: {items}."


def metrics_figure(df: pd.DataFrame, metrics: list[str] | None = None, hue: str = "regime",
                   title: str | None = None, width: str = "double", colors: dict | None = None):
    """The figure of :func:`plot_metrics`, not saved: (figure, panels drawn, constant
    panels left out: key → value)."""
    _style()
    import matplotlib.pyplot as plt

    logged = set(df["metric"])
    chosen = default_metrics(logged) if not metrics else list(metrics)
    missing = [m for m in chosen if m not in logged]
    if missing:
        raise CollapseError(f"metrics not logged: {', '.join(missing)} (logged: {', '.join(_ordered_metrics(logged))})")
    constant = constant_metrics(df, chosen)
    if len(constant) == len(chosen):  # every panel constant: nothing else to show, so draw them
        constant = {}
    panels = [m for m in chosen if m not in constant]
    n = len(panels)
    ncol, nrow = _grid(n, 4 if width == "double" else 2)
    w = WIDTHS.get(width, WIDTHS["double"])
    panel_h = min(1.6, max(1.35, w / ncol * 0.8))
    fig, axes = plt.subplots(nrow, ncol, figsize=(w, panel_h * nrow + 0.45 + (0.15 if title else 0)), squeeze=False,
                             sharex=True, layout="constrained")
    order = hue_order(df[hue])
    colors = colors or palette(order)
    has_human = False
    for ax, m in zip(axes.flat, panels):
        sub = df[df["metric"] == m]
        shown = []
        for h in order:
            # Mean over seeds with its t-based 95 % CI; the band only where a point has >= 3 seeds.
            pts = [(g, mean_ci(v["value"].to_numpy(dtype=float))) for g, v in sub[sub[hue] == h].groupby("generation")]
            if not pts:
                continue
            gens = np.array([g for g, _ in pts], dtype=float)
            means = np.array([c.mean for _, c in pts])
            ax.plot(gens, means, marker="o", markersize=2.5, lw=1.2, color=colors[h], label=str(h))
            lo, hi = np.array([c.lo for _, c in pts]), np.array([c.hi for _, c in pts])
            shown += [means, lo[np.isfinite(lo)], hi[np.isfinite(hi)]]
            if np.isfinite(lo).any():
                ax.fill_between(gens, lo, hi, where=np.isfinite(lo), color=colors[h], alpha=0.2, lw=0)
        ref = df.loc[df["metric"] == f"human.{m}", "value"].to_numpy(dtype=float)
        ref = ref[np.isfinite(ref)]
        if len(ref):
            ax.axhline(ref.mean(), **HUMAN)
            shown.append(ref)
            has_human = True
        info_title, unit = metric_label(m, unit=False), _unit(m)
        ax.set_title(_wrap(info_title, w / ncol, FONT["title"]), fontsize=FONT["title"])
        ax.set_ylabel(unit, fontsize=FONT["label"])
        ax.set_xlabel("")
        if shown and use_log_scale(m, np.concatenate(shown)):
            ax.set_yscale("log")
            _log_axis(ax.yaxis)
        ax.tick_params(labelsize=FONT["tick"], pad=1.5)
        _integer_generations(ax.xaxis)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    for j in range(ncol):  # "generation" under the lowest visible panel of each column
        col = [axes[i, j] for i in range(nrow) if i * ncol + j < n]
        if col:
            col[-1].set_xlabel("generation", fontsize=FONT["label"])
            col[-1].xaxis.set_tick_params(labelbottom=True)
    from matplotlib.lines import Line2D

    drawn = [h for h in order if (df.loc[df["metric"].isin(panels), hue] == h).any()]
    handles = [Line2D([], [], color=colors[h], marker="o", markersize=2.5, lw=1.2) for h in drawn]
    labels = [str(h) for h in drawn]
    if has_human:
        handles.append(_human_handle())
        labels.append(HUMAN_LABEL)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 7 if width == "double" else 3),
                   fontsize=FONT["legend"], frameon=False, title=None if hue == "regime" else hue,
                   handlelength=1.8, columnspacing=1.2)
    if title:
        fig.suptitle(title, fontsize=FONT["title"] + 0.5)
    return fig, panels, constant


def _unit(key: str) -> str:
    return key_info(key).unit


def plot_metrics(df: pd.DataFrame, out_base: Path, metrics: list[str] | None = None, hue: str = "regime",
                 title: str | None = None, width: str = "double", quick: bool = False,
                 colors: dict | None = None) -> FigurePaths:
    """One panel per metric (tidy ``df``: generation, metric, value, ``hue``), a
    line per ``hue`` value with its mean over seeds and, where a point has at
    least 3 seeds, its t-based 95 % confidence band (:mod:`collapse.stats`),
    the human reference dashed. Panels are titled by the metric registry's
    display names, their y axes labelled with its units, on a log scale where
    the values span decades; generations are whole numbers; colours come from
    :func:`palette` (or ``colors``). Metrics constant over every hue value and
    generation are left out and named in the returned ``note``. Without
    ``metrics``: :func:`default_metrics`. Returns the PNG and PDF paths."""
    fig, panels, constant = metrics_figure(df, metrics, hue=hue, title=title, width=width, colors=colors)
    out = FigurePaths(_save(fig, out_base, quick))
    out.panels, out.constant, out.note = panels, constant, _constant_note(constant, hue)
    return out


def plot_run(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The figures of one run (wide frame: one row per generation)."""
    long = frame.melt(id_vars=["regime", "seed", "generation"], var_name="metric", value_name="value").dropna()
    title = f"{frame['regime'].iloc[0]} (seed {frame['seed'].iloc[0]})"
    paths = plot_metrics(long, Path(out_dir) / "metrics", title=title, quick=True)
    if paths.note:
        log.info("%s: %s", Path(out_dir) / "metrics.png", paths.note)
    ppl = perplexity_values(Path(out_dir).parent)
    if len(ppl):
        paths += plot_perplexity_histograms({title: ppl}, Path(out_dir) / "perplexity_gen0", quick=True)
    return paths


def perplexity_values(run_dir: str | Path) -> pd.DataFrame:
    """Per-sample perplexities under the generation-0 model from a run directory's
    artifacts: columns generation (-1 for the held-out human reference) and ppl."""
    import json

    files = RunDirReader(run_dir).artifact_files("perplexity_gen0.jsonl")
    rows = []
    for g, f in files:
        if f.exists():
            for line in f.read_text().splitlines():
                v = json.loads(line).get("ppl")
                if v is not None:
                    rows.append((g, v))
    return pd.DataFrame(rows, columns=["generation", "ppl"])


def _spread(values: list[int], most: int) -> list[int]:
    """At most ``most`` of the sorted ``values``, evenly spaced, first and last kept."""
    if len(values) <= most:
        return list(values)
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, most)).astype(int))
    return [values[i] for i in idx]


def plot_perplexity_histograms(panels: dict[str, pd.DataFrame], out_base: Path, title: str | None = None,
                               quick: bool = False, width: str = "double", most: int = 6) -> FigurePaths:
    """The figure of :func:`perplexity_figure`, saved (PNG and PDF; ``quick``: a preview PNG)."""
    fig, shown, note = perplexity_figure(panels, title=title, width=width, most=most)
    out = FigurePaths(_save(fig, out_base, quick))
    out.panels, out.constant, out.note = shown, {}, note
    return out


def perplexity_figure(panels: dict[str, pd.DataFrame], title: str | None = None, width: str = "double",
                      most: int = 6):
    """The figure of Shumailov et al. (2024, Fig. 1b): per panel (a regime), one
    histogram per generation of the samples' perplexity under the generation-0
    model, generations coloured in sequence, held-out human code dashed. At most
    ``most`` generations, evenly spaced from the first to the last (more would
    hide each other; ``note`` says which). Panels wrap into rows that
    fit ``width`` (``single`` or ``double`` column). Returns (figure, panel
    names, note)."""
    _style()
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.patches import Patch

    panels = {k: v for k, v in panels.items() if len(v)}
    if not panels:
        raise CollapseError("no perplexity_gen0 artifacts found: add perplexity_gen0 to metrics.names")
    panels = {k: panels[k] for k in hue_order(panels)}  # regimes in the registry's order
    allv = pd.concat(panels.values())["ppl"]
    bins = np.geomspace(max(allv.min(), 1.0), allv.max() * 1.0001, 40)
    gens_all = sorted({int(g) for v in panels.values() for g in v["generation"] if g >= 0})
    shown = _spread(gens_all, most)
    colors = dict(zip(shown, sns.color_palette("rocket_r", len(shown) + 1)[1:]))  # the palest is too pale
    w = WIDTHS["single"] if len(panels) == 1 else WIDTHS.get(width, WIDTHS["double"])
    ncol, nrow = _grid(len(panels), 3 if width == "double" else 2)
    fig, axes = plt.subplots(nrow, ncol, figsize=(w, 1.7 * nrow + 0.55 + (0.15 if title else 0)), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    for ax, (label, df) in zip(axes.flat, panels.items()):
        for g, sub in df.groupby("generation"):
            if g >= 0 and int(g) not in colors:
                continue
            # Density per decade: the area over a log axis is one for every generation.
            dens, _ = np.histogram(np.log10(sub["ppl"]), bins=np.log10(bins), density=True)
            if g < 0:
                ax.stairs(dens, bins, zorder=3, **HUMAN)
            else:
                ax.stairs(dens, bins, fill=True, alpha=0.25, color=colors[int(g)])
                ax.stairs(dens, bins, color=colors[int(g)], lw=0.8)
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_title(_wrap(str(label), w / ncol, FONT["title"]), fontsize=FONT["title"])
        ax.tick_params(labelsize=FONT["tick"], pad=1.5)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for j in range(ncol):
        col = [axes[i, j] for i in range(nrow) if i * ncol + j < len(panels)]
        col[-1].xaxis.set_tick_params(labelbottom=True)
    fig.supxlabel(metric_label("ppl_gen0"), fontsize=FONT["label"])
    fig.supylabel("density per decade", fontsize=FONT["label"])
    handles = [Patch(facecolor=(*colors[g], 0.25), edgecolor=colors[g], lw=0.8) for g in shown]
    labels = [f"gen {g}" for g in shown]
    if any((v["generation"] < 0).any() for v in panels.values()):
        handles.append(_human_handle())
        labels.append(HUMAN_LABEL)
    # The legend on top, under the title as its own (a suptitle would overlap it, as would a
    # legend below overlap the shared x label).
    fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), 7 if w > 5 else 4),
               fontsize=FONT["legend"], frameon=False, handlelength=1.5, columnspacing=1.0, title=title,
               title_fontproperties={"size": FONT["title"] + 0.5})
    note = ("" if shown == gens_all else
            f"Generations {', '.join(map(str, shown))} of {gens_all[0]}–{gens_all[-1]} shown (evenly spaced).")
    return fig, list(panels), note


def plot_trajectory(wide: pd.DataFrame, out_base: Path, x: str, y: str = "test_ce", hue: str = "regime",
                    width: str = "single", colors: dict | None = None) -> list[Path]:
    """The figure of :func:`trajectory_figure`, saved as PNG and PDF."""
    return _save(trajectory_figure(wide, x, y, hue=hue, width=width, colors=colors), out_base)


def trajectory_figure(wide: pd.DataFrame, x: str, y: str = "test_ce", hue: str = "regime", width: str = "single",
                      colors: dict | None = None):
    """Quality against diversity: per ``hue`` value the mean over seeds of
    (``x``, ``y``) at each generation, joined in order, with t-based 95 % error
    bars where a point has at least 3 seeds; the first and last generations are
    numbered. Axes labelled from the metric registry (name, unit, which way is
    better), colours from :func:`palette` (or ``colors``), human reference dashed."""
    _style()
    import matplotlib.pyplot as plt

    means = wide.groupby([hue, "generation"], dropna=False)[[x, y]].mean().reset_index()
    order = hue_order(means[hue])
    colors = colors or palette(order)
    w = WIDTHS.get(width, WIDTHS["single"])
    fig, ax = plt.subplots(figsize=(w, w * 0.85 if width == "single" else w * 0.5), layout="constrained")
    first = int(means["generation"].min())
    for k, h in enumerate(order):
        path = means[means[hue] == h].sort_values("generation")
        ax.plot(path[x], path[y], "-o", color=colors[h], ms=3, lw=1.0, label=str(h))
        # Seed error bars: t-based 95 % CIs of both coordinates, where a point has >= 3 seeds.
        for g in path["generation"]:
            at = wide[(wide[hue] == h) & (wide["generation"] == g)]
            cx, cy = mean_ci(at[x].to_numpy(dtype=float)), mean_ci(at[y].to_numpy(dtype=float))
            if np.isfinite(cx.lo) and np.isfinite(cy.lo):
                ax.errorbar(cx.mean, cy.mean, xerr=[[cx.mean - cx.lo], [cx.hi - cx.mean]],
                            yerr=[[cy.mean - cy.lo], [cy.hi - cy.mean]], color=colors[h], lw=0.5, capsize=1.2,
                            alpha=0.6)
        # Generation numbers at the ends of each path (every path starts near the same generation-0 point: once).
        ends = path.iloc[[-1]] if k else path.iloc[[0, -1]] if len(path) > 1 else path
        for _, r in ends.iterrows():
            g = int(r["generation"])
            ax.annotate(f"gen {g}" if g == first else str(g), (r[x], r[y]), fontsize=FONT["note"],
                        xytext=(3, 3), textcoords="offset points", color="0.15")
    hx, hy = f"human.{x}", f"human.{y}"
    human = False
    if hx in wide and wide[hx].notna().any():
        ax.axvline(wide[hx].mean(), **HUMAN)
        human = True
    if hy in wide and wide[hy].notna().any():
        ax.axhline(wide[hy].mean(), **HUMAN)
        human = True
    for key, axis, set_label, set_scale in ((x, ax.xaxis, ax.set_xlabel, ax.set_xscale),
                                            (y, ax.yaxis, ax.set_ylabel, ax.set_yscale)):
        vals = np.concatenate([wide[key].to_numpy(dtype=float)]
                              + ([wide[f"human.{key}"].to_numpy(dtype=float)] if f"human.{key}" in wide else []))
        if use_log_scale(key, vals):
            set_scale("log")
            _log_axis(axis)
        better = key_info(key).better
        set_label(metric_label(key) + (f"\n{better} is better" if better else ""), fontsize=FONT["label"])
    ax.tick_params(labelsize=FONT["tick"])
    handles, labels = ax.get_legend_handles_labels()
    if human:
        handles.append(_human_handle())
        labels.append(HUMAN_LABEL)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3 if width == "single" else 6),
               fontsize=FONT["legend"], frameon=False, title=None if hue == "regime" else hue,
               handlelength=1.8, columnspacing=1.2)
    return fig
