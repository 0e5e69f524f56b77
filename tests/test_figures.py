"""Figures a paper can print, on hand-made metric frames (no runs): names and units from the metric
registry, one colour per regime, constant panels left out and named, log scales, integer
generations, exact column widths, fonts of at least 6 pt and no text over other text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from collapse import figures as F  # noqa: E402
from collapse import reporting as R  # noqa: E402
from collapse.metrics.registry import REGISTRY, KeyInfo, key_info, key_label  # noqa: E402

REGIMES = {"replace": 1.0, "accumulate": 0.3, "fresh": 0.1}


def wide_frame(generations: int = 6, seeds: int = 3) -> pd.DataFrame:
    """One row per (run, generation), as load_runs gives: the eight story metrics, the human
    reference, a metric constant everywhere (synthetic_copy_rate) and one spanning decades."""
    rng = np.random.default_rng(0)
    rows = []
    for regime, k in REGIMES.items():
        for seed in range(seeds):
            for g in range(generations + 1):
                rows.append({"run_id": f"{regime}{seed}", "run_name": f"{regime}_s{seed}", "status": "FINISHED",
                             "regime": regime, "seed": seed, "generation": g,
                             "test_ce": 2.0 + 0.1 * k * g + rng.normal(0, 0.01),
                             "syntax_valid": 0.9 - 0.03 * k * g + rng.normal(0, 0.01),
                             "distinct_4": 0.95 - 0.04 * k * g + rng.normal(0, 0.01),
                             "ast_shape_distinct": 0.8 - 0.03 * k * g + rng.normal(0, 0.01),
                             "tail_mass": 0.02 * np.exp(-0.2 * k * g),
                             "ppl_gen0_q50": 180 * np.exp(-0.35 * k * g),
                             "copy_rate": 0.01 + 0.005 * k * g,
                             "synthetic_copy_rate": 0.0,
                             "decades": 10.0 ** (g * k),  # unknown to the registry, spans decades when k = 1
                             "human.test_ce": 2.0, "human.distinct_4": 0.69, "human.tail_mass": 0.03})
    return pd.DataFrame(rows)


def texts_drawn(fig):
    """Every piece of text the figure draws: titles, labels, the tick labels of drawn ticks, legends, notes."""
    fig.canvas.draw()
    texts = [t for t in (fig._suptitle, fig._supxlabel, fig._supylabel) if t is not None]
    for legend in fig.legends:
        texts += [*legend.get_texts(), legend.get_title()]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis._update_ticks():
                texts += [tick.label1, tick.label2]
        if ax.get_legend():
            texts += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def assert_printable(fig, width: str):
    """Saved at the column's width (no cropping or scaling: what is drawn is what is printed), every
    text at least 6 pt there, inside the figure and clear of every other text."""
    import matplotlib.pyplot as plt

    assert fig.get_size_inches()[0] == pytest.approx(F.WIDTHS[width])
    texts = texts_drawn(fig)
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 6]
    assert not small, small
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    w, h = fig.bbox.width, fig.bbox.height
    outside = [s for s, b in boxes if b.x0 < -1 or b.y0 < -1 or b.x1 > w + 1 or b.y1 > h + 1]
    assert not outside, outside
    overlapping = []
    for i, (s, a) in enumerate(boxes):
        for t, b in boxes[i + 1:]:
            if a.overlaps(b):
                cut = a.intersection(a, b)
                if cut is not None and cut.width > 1 and cut.height > 1:
                    overlapping.append((s, t))
    assert not overlapping, overlapping
    plt.close(fig)


# ------------------------------------------------------------------ registry
def test_registry_gives_display_names_units_and_scales():
    assert key_label("test_ce") == "held-out cross-entropy (nats/token)"
    assert key_label("distinct_4") == "distinct 4-grams (share)"
    assert key_info("test_ce").better == "lower" and key_info("distinct_4").better == "higher"
    assert key_info("ppl_gen0_q50").log_scale and not key_info("test_ce").log_scale
    assert key_info("human.distinct_4") == key_info("distinct_4")  # the reference is shown as its metric
    assert key_label("copy_rate_k16") == "samples copying human code, ≥ 16 tokens (share)"
    assert key_label("humaneval_pass_at_10") == "HumanEval pass@10 (share)"
    assert key_info("no_such_key") == KeyInfo("no_such_key") and key_label("no_such_key") == "no_such_key"
    # Every entry names a registered metric (or none: the run's bookkeeping), and every registered metric logs a described key.
    from collapse.metrics.registry import KEYS

    assert {i.metric for i in KEYS.values()} - {None} <= set(REGISTRY)
    assert set(REGISTRY) <= {i.metric for i in KEYS.values()} | {key_info("humaneval_pass_at_1").metric}
    assert all(i.better in (None, "higher", "lower") for i in KEYS.values())


def test_figures_read_names_and_units_from_the_registry():
    long = F.to_long(wide_frame())
    fig, panels, _ = F.metrics_figure(long, ["test_ce", "distinct_4", "decades"])
    axes = {ax.get_title().replace("\n", " "): ax for ax in fig.axes if ax.get_visible()}
    assert set(axes) == {"held-out cross-entropy", "distinct 4-grams", "decades"}
    assert axes["held-out cross-entropy"].get_ylabel() == "nats/token"
    assert axes["distinct 4-grams"].get_ylabel() == "share"
    assert axes["decades"].get_ylabel() == ""  # not in the registry: the key itself, no unit
    fig = F.trajectory_figure(wide_frame(), x="distinct_4", y="test_ce")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "distinct 4-grams (share)\nhigher is better"
    assert ax.get_ylabel() == "held-out cross-entropy (nats/token)\nlower is better"


# ------------------------------------------------------------------ colours
def test_palette_is_stable_across_calls_and_subsets():
    every = F.palette(["replace", "accumulate", "accumulate_subsample", "fixed_fraction", "fresh", "augment"])
    assert F.palette(["fresh", "replace", "accumulate"]) == F.palette(["accumulate", "replace", "fresh"])
    for subset in (["replace"], ["accumulate", "fresh"], ["fresh", "fixed_fraction", "replace"]):
        assert F.palette(subset) == {r: every[r] for r in subset}
    assert len(set(every.values())) == len(every)  # six regimes, six colours
    assert F.hue_order(["fresh", "accumulate", "replace"]) == ["replace", "accumulate", "fresh"]  # registry order
    # Another axis: sorted values (numbers by value), the same mapping on every call.
    assert F.hue_order([0.5, 0.1, 0.25]) == [0.1, 0.25, 0.5]
    assert F.palette([0.5, 0.1, 0.25]) == F.palette([0.25, 0.5, 0.1])
    grey = (0.5803921568627451, 0.5803921568627451, 0.5803921568627451)  # kept for the human reference
    assert grey not in F.palette(list(range(12))).values()


def test_every_figure_draws_a_regime_in_its_colour():
    import matplotlib.colors as mc

    wide = wide_frame()
    colors = F.palette(wide["regime"])
    fig, _, _ = F.metrics_figure(F.to_long(wide), ["test_ce"])
    legend = {t.get_text(): mc.to_rgb(h.get_color()) for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert np.allclose(legend["replace"], colors["replace"]) and "held-out human code" in legend
    lines = {ln.get_label(): mc.to_rgb(ln.get_color()) for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")}
    assert set(lines) == set(REGIMES) and all(np.allclose(c, colors[k]) for k, c in lines.items())
    fig = F.trajectory_figure(wide, x="distinct_4", y="test_ce")
    lines = {ln.get_label(): mc.to_rgb(ln.get_color()) for ln in fig.axes[0].get_lines() if ln.get_label() in colors}
    assert set(lines) == set(REGIMES) and all(np.allclose(c, colors[k]) for k, c in lines.items())
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["replace", "accumulate", "fresh", "held-out human code"]


# ------------------------------------------------------------------ panels
def test_default_panels_tell_the_story_in_at_most_eight():
    names = set(F.to_long(wide_frame())["metric"]) | {"prompt_ce", "self_bleu", "kl_unigram", "zipf_exponent",
                                                     "vocab_coverage", "corpus_copy_rate", "humaneval_pass_at_1"}
    chosen = F.default_metrics(names)
    assert chosen == ["test_ce", "syntax_valid", "distinct_4", "ast_shape_distinct", "tail_mass", "ppl_gen0_q50",
                      "copy_rate", "synthetic_copy_rate"]
    assert len(F.default_metrics(names | {f"m{i}" for i in range(30)})) <= 8
    assert F.default_metrics([f"m{i}" for i in range(30)]) == sorted(f"m{i}" for i in range(30))[:8]
    assert F.default_metrics(["val_loss", "compile_ok"]) == ["val_loss", "compile_ok"]


def test_a_constant_panel_is_left_out_and_named_in_the_note(tmp_path):
    long = F.to_long(wide_frame())
    paths = F.plot_metrics(long, tmp_path / "metrics")
    assert [p.name for p in paths] == ["metrics.png", "metrics.pdf"] and all(p.stat().st_size > 1000 for p in paths)
    assert "synthetic_copy_rate" not in paths.panels and len(paths.panels) == 7
    assert paths.constant == {"synthetic_copy_rate": 0.0}
    assert "`synthetic_copy_rate`" in paths.note and "samples copying earlier generations" in paths.note
    assert paths.note.startswith("Left out, constant over every regime and generation")
    # Chosen by hand: the same.
    paths = F.plot_metrics(long, tmp_path / "chosen", ["test_ce", "synthetic_copy_rate"], quick=True)
    assert paths.panels == ["test_ce"] and "synthetic_copy_rate" in paths.note
    # Varying in one group only is not constant; every panel constant: drawn, nothing left out.
    long.loc[(long.metric == "synthetic_copy_rate") & (long.regime == "replace") & (long.generation == 3), "value"] = 0.1
    assert "synthetic_copy_rate" not in F.constant_metrics(long, ["synthetic_copy_rate"])
    flat = long[long.metric == "synthetic_copy_rate"].assign(metric="flat", value=0.5)
    fig, panels, constant = F.metrics_figure(pd.concat([long, flat]), ["flat"])
    assert panels == ["flat"] and constant == {}


def test_log_scale_for_a_metric_spanning_decades():
    assert F.use_log_scale("ppl_gen0_q50", [150, 180, 200])  # the registry says so
    assert F.use_log_scale("decades", [1, 10, 1000])  # max/min > 100, all positive
    assert not F.use_log_scale("decades", [1, 10, 99])
    assert not F.use_log_scale("decades", [0, 10, 1000]) and not F.use_log_scale("ppl_gen0_q50", [-1, 10])
    fig, _, _ = F.metrics_figure(F.to_long(wide_frame()), ["test_ce", "ppl_gen0_q50", "decades"])
    scales = {ax.get_title(): ax.get_yscale() for ax in fig.axes if ax.get_visible()}
    assert scales == {"held-out cross-entropy": "linear", "gen-0 perplexity, median": "log", "decades": "log"}


def test_generation_ticks_are_whole_numbers():
    for generations in (0, 2, 6, 30):
        fig, _, _ = F.metrics_figure(F.to_long(wide_frame(generations, seeds=1)), ["test_ce", "distinct_4"])
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert len(ticks) >= min(2, generations + 1) and all(float(t).is_integer() for t in ticks), ticks


def test_trajectory_has_seed_error_bars_only_with_three_seeds():
    fig = F.trajectory_figure(wide_frame(seeds=3), x="distinct_4", y="test_ce")
    assert fig.axes[0].containers  # errorbar containers: t-based 95 % CIs over seeds
    fig = F.trajectory_figure(wide_frame(seeds=2), x="distinct_4", y="test_ce")
    assert not fig.axes[0].containers


# ------------------------------------------------------------------ print sizes
@pytest.mark.parametrize("width", ["single", "double"])
def test_figures_print_at_column_width_with_readable_fonts(width, tmp_path):
    wide = wide_frame(generations=10)
    long = F.to_long(wide)
    assert_printable(F.metrics_figure(long, title="a sweep", width=width)[0], width)
    assert_printable(F.metrics_figure(long, ["test_ce", "ppl_gen0_q50", "decades"], width=width)[0], width)
    assert_printable(F.trajectory_figure(wide, x="distinct_4", y="test_ce", width=width), width)
    rng = np.random.default_rng(1)
    ppl = {r: pd.DataFrame([(g, v) for g in range(-1, 11) for v in np.exp(rng.normal(5 - 0.2 * k * max(g, 0), 0.5, 50))],
                           columns=["generation", "ppl"]) for r, k in REGIMES.items()}
    fig, panels, note = F.perplexity_figure(ppl, title="a sweep", width=width)
    assert panels == list(REGIMES) and note == "Generations 0, 2, 4, 6, 8, 10 of 0–10 shown (evenly spaced)."
    assert_printable(fig, width)
    # The PDF is that size: no cropping.
    paths = F.plot_metrics(long, tmp_path / "m", width=width)
    import re

    box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)", paths[1].read_bytes())
    assert float(box.group(1)) == pytest.approx(F.WIDTHS[width] * 72)


def test_report_md_names_the_panels_left_out(tmp_path, monkeypatch):
    """collapse.report on a hand-made frame (load_runs stubbed: no MLflow, no runs): the metrics
    figure's caption in report.md names the constant panel it left out."""
    wide = wide_frame(generations=3)
    monkeypatch.setattr(R, "load_runs", lambda *a, **k: wide.copy())
    monkeypatch.setattr(R, "run_dirs", lambda *a, **k: {})
    R.report("hand_made", out=tmp_path, root=tmp_path / "runs")
    index = (tmp_path / "hand_made" / "report.md").read_text()
    caption = next(line for line in index.splitlines() if line.startswith("- [metrics.pdf]"))
    assert "Left out, constant over every regime and generation" in caption and "`synthetic_copy_rate`" in caption
    assert (tmp_path / "hand_made" / "metrics.pdf").exists() and (tmp_path / "hand_made" / "trajectory.pdf").exists()


def test_tables_name_metrics_as_the_registry_does():
    wide = wide_frame(generations=2)
    table, ref = R.final_effects(wide, ["test_ce", "copy_rate"])
    md = R.effects_markdown(table, "regime", ref, 2)
    assert "| held-out cross-entropy (nats/token) `test_ce` |" in md
    tex = R.effects_latex(table, "regime", ref, 2)
    assert "held-out cross-entropy (nats/token) & replace" in tex and all(ord(c) < 128 for c in tex)
    table, ref = R.final_effects(wide.rename(columns={"copy_rate": "copy_rate_k16"}), ["copy_rate_k16"])
    assert r"samples copying human code, $\geq$ 16 tokens (share)" in R.effects_latex(table, "regime", ref, 2)
