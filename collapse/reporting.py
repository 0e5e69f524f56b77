"""Paper-ready figures and tables from tracked runs (``collapse report``).

``collapse report EXPERIMENT_OR_SWEEP`` reads every run of an MLflow
experiment (or of a sweep file's experiment) with :func:`collapse.load_runs`
and writes, under ``reports/<name>/``:

- ``metrics.png|pdf``: metric against generation, one line per regime (or any
  axis: ``--hue``), mean and 95 % confidence band over seeds, faceted by
  metric (by default at most 8 panels that tell the story: quality,
  diversity, tails, memorization; panels constant throughout are left out and
  named in the caption), held-out human code dashed; names, units and log
  scales from the metric registry (:func:`collapse.metrics.registry.key_info`),
  one colour per regime or axis value in every figure (:func:`palette`),
  saved at the width of one or two paper columns (``--width single|double``)
  with fonts of at least 6 pt there;
- ``perplexity_gen0.png|pdf``: histograms of each generation's samples'
  perplexity under the generation-0 model (Shumailov et al. 2024, Fig. 1b),
  at most 6 generations from first to last;
- ``trajectory.png|pdf``: quality against diversity, one path per regime,
  generations as markers;
- ``final_effects.md|tex|csv``: per regime, each metric at generation 0 and
  at the last generation, the change, and Welch's t-test across seeds of the
  last generation against a reference regime;
- ``summary.md|csv``: per regime and metric, the collapse summary statistics
  (:mod:`collapse.summary`) averaged over seeds with 95 % CIs: slope per
  generation, area between the curve and its generation-0 value, and how
  soon the metric moved by 10 % from generation 0;
- ``copies.md``: the longest verbatim copies of human code with their sources;
- ``runs.csv`` (one row per run and generation) and ``metrics.csv`` (tidy);
- ``report.md``: an index of all of the above with one-line captions and the
  runs and config they came from.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from collapse.errors import CollapseError
from collapse.figures import (axis_columns, default_metrics, metric_label, perplexity_values, plot_metrics,
                              plot_perplexity_histograms, plot_trajectory, to_long)
from collapse.figures import hue_order, palette  # noqa: F401 - re-exported: scripts import them from here
from collapse.rundir import RunDirReader
from collapse.stats import MIN_SEEDS, compare, holm, mean_ci
from collapse.summary import DEFAULT_THRESHOLD, group_summary, summarize_runs
from collapse.sweep.load import _is_sweep_file, load_runs, resolve_source
from collapse.sweep.spec import load_sweep
from collapse.tracking import NoStore, client, resolve_uri

log = logging.getLogger("collapse")

def run_dirs(experiment: str, tracking_uri: str | None = None, root: str | Path = "runs") -> dict[str, Path]:
    """run name → run directory (the ``run_dir`` tag) of the experiment's runs that still exist on disk."""
    try:
        c = client(resolve_uri(tracking_uri, root, create=False), create=False)  # reads only
    except NoStore:
        return {}
    exp = c.get_experiment_by_name(experiment)
    out = {}
    for run in c.search_runs([exp.experiment_id], max_results=50000) if exp else []:
        d = run.data.tags.get("run_dir")
        if d and Path(d).is_dir():
            out[run.info.run_name] = Path(d)
    return dict(sorted(out.items()))


def final_effects(wide: pd.DataFrame, metrics: list[str], hue: str = "regime",
                  reference: str | None = None) -> tuple[pd.DataFrame, str]:
    """Per ``hue`` value and metric, over seeds: the mean at generation 0 and at
    the last generation with its t-based 95 % CI, the change, and against the
    ``reference`` value of ``hue`` the difference of last-generation means with
    Welch's 95 % CI, Hedges' g, Welch's t and p, and Holm's adjusted p over
    every test of the table (:mod:`collapse.stats`: fewer than 3 seeds or no
    variance give no test, and ``note`` says so). Returns the table and the
    name of the reference."""
    last = int(wide["generation"].max())
    values = sorted(wide[hue].dropna().unique(), key=str)
    if reference is None:
        reference = "accumulate" if "accumulate" in values else values[0]
    at0 = wide[wide["generation"] == 0]
    atl = wide[wide["generation"] == last]
    rows = []
    for m in metrics:
        if m not in wide:
            continue
        ref_vals = atl.loc[atl[hue] == reference, m].to_numpy(dtype=float)
        for h in values:
            v0 = at0.loc[at0[hue] == h, m].dropna().to_numpy(dtype=float)
            vl = atl.loc[atl[hue] == h, m].to_numpy(dtype=float)
            ci = mean_ci(vl)
            row = {"metric": m, hue: h, "n_seeds": ci.n, "gen0_mean": v0.mean() if len(v0) else np.nan,
                   "last_mean": ci.mean, "last_ci_lo": ci.lo, "last_ci_hi": ci.hi,
                   "last_sd": float(np.nanstd(vl, ddof=1)) if ci.n >= 2 else np.nan,
                   "change": (ci.mean - v0.mean()) if ci.n and len(v0) else np.nan,
                   "diff_vs_ref": np.nan, "diff_ci_lo": np.nan, "diff_ci_hi": np.nan, "hedges_g": np.nan,
                   "welch_t": np.nan, "welch_df": np.nan, "p_value": np.nan, "note": ""}
            if ci.n and ci.n < 3:
                row["note"] = "fewer than 3 seeds: no interval, no test"
            if h != reference:
                c = compare(vl, ref_vals)
                row.update(diff_vs_ref=c.diff, diff_ci_lo=c.lo, diff_ci_hi=c.hi, hedges_g=c.hedges_g, welch_t=c.t,
                           welch_df=c.df, p_value=c.p, note=c.note or row["note"])
            rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = holm(table["p_value"].to_numpy(dtype=float))
    return table, reference


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(v)
    return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"


def _p(v) -> str:
    if v is None or np.isnan(v):
        return "–"
    return "< 0.001" if v < 1e-3 else f"{v:.3f}"


def _ci(lo, hi) -> str:
    return "" if lo is None or np.isnan(lo) else f" [{_fmt(lo)}, {_fmt(hi)}]"


def _effects_notes(table: pd.DataFrame, reference: str) -> list[str]:
    notes = sorted({n for n in table.get("note", pd.Series(dtype=str)).fillna("") if n})
    out = [f"Means over seeds with t-based 95 % confidence intervals; Δ is the difference from {reference} at the "
           "last generation with Welch's 95 % interval, g is Hedges' g, p is Welch's two-sided test, Holm-adjusted "
           "over every test of this table."]
    if notes:
        out.append("Not tested: " + "; ".join(notes) + " (a test needs at least 3 seeds per group and some variance).")
    return out


def effects_markdown(table: pd.DataFrame, hue: str, reference: str, last: int) -> str:
    head = (f"| metric | {hue} | seeds | gen 0 | gen {last} [95 % CI] | change | Δ vs {reference} [95 % CI] | "
            "Hedges g | p (Welch) | p (Holm) |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _, r in table.iterrows():
        lines.append(f"| {_metric_cell(r['metric'])} | {r[hue]} | {r['n_seeds']} | {_fmt(r['gen0_mean'])} | "
                     f"{_fmt(r['last_mean'])}{_ci(r['last_ci_lo'], r['last_ci_hi'])} | {_fmt(r['change'])} | "
                     f"{_fmt(r['diff_vs_ref'])}{_ci(r['diff_ci_lo'], r['diff_ci_hi'])} | {_fmt(r['hedges_g'], 2)} | "
                     f"{_p(r['p_value'])} | {_p(r['p_holm'])} |")
    return "\n".join(lines) + "\n\n" + "\n\n".join(_effects_notes(table, reference)) + "\n"


def _metric_cell(key: str) -> str:
    """A table's metric cell: the registry's name and unit, then the key (the key alone when unknown)."""
    label = metric_label(key)
    return f"`{key}`" if label == key else f"{label} `{key}`"


def _pct(x: float) -> str:
    return f"{x * 100:g} %"


def summary_markdown(table: pd.DataFrame, by: str) -> str:
    """The report's summary.md: :func:`collapse.summary.group_summary` as a Markdown table."""
    thr = float(table["threshold"].iloc[0]) if len(table) else DEFAULT_THRESHOLD
    lines = [f"| metric | {by} | runs | slope per generation [95 % CI] | area vs gen 0 [95 % CI] | "
             f"runs moved ≥ {_pct(thr)} | first such generation [95 % CI] |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for _, r in table.iterrows():
        lines.append(f"| {_metric_cell(r['metric'])} | {r[by]} | {r['n_runs']} | {_fmt(r['slope_mean'])}{_ci(r['slope_lo'], r['slope_hi'])} | "
                     f"{_fmt(r['area_mean'])}{_ci(r['area_lo'], r['area_hi'])} | {r['crossed']}/{r['n_runs']} | "
                     f"{_fmt(r['first_gen_mean'], 2)}{_ci(r['first_gen_lo'], r['first_gen_hi'])} |")
    text = ("Per run: the least-squares slope of the metric against the generation, the signed area between its "
            "curve and its generation-0 value (trapezoid rule; metric × generations), and the first generation at "
            f"which it had moved by {_pct(thr)} of its generation-0 value. Means over runs (seeds) with t-based 95 % "
            f"confidence intervals (none below {MIN_SEEDS} runs); the first generation is averaged over the runs that "
            "moved that far.")
    return "\n".join(lines) + "\n\n" + text + "\n"


def effects_latex(table: pd.DataFrame, hue: str, reference: str, last: int) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``)."""
    def esc(s) -> str:
        return str(s).replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("#", r"\#")

    def tex(s) -> str:  # esc, and the non-ASCII signs of the registry's names in plain LaTeX
        s = esc(s)
        for a, b in (("≥", r"$\geq$"), ("‖", r"$\|$"), ("–", "--"), ("×", r"$\times$")):
            s = s.replace(a, b)
        return s

    def cell(v, lo=None, hi=None, digits=3) -> str:
        text = _fmt(v, digits) + ("" if lo is None else _ci(lo, hi))
        return text.replace("–", "--")

    out = [r"\begin{tabular}{llrrrrrrrr}", r"\toprule",
           f"metric & {esc(hue)} & seeds & gen 0 & gen {last} [95\\% CI] & change & $\\Delta$ vs {esc(reference)} "
           r"& $g$ & $p$ & $p_{\mathrm{Holm}}$ \\", r"\midrule"]
    prev = None
    for _, r in table.iterrows():
        if prev is not None and r["metric"] != prev:
            out.append(r"\addlinespace")
        prev = r["metric"]
        cells = [tex(metric_label(r["metric"])), esc(r[hue]), str(r["n_seeds"]), cell(r["gen0_mean"]),
                 cell(r["last_mean"], r["last_ci_lo"], r["last_ci_hi"]), cell(r["change"]),
                 cell(r["diff_vs_ref"], r["diff_ci_lo"], r["diff_ci_hi"]), cell(r["hedges_g"], digits=2),
                 _p(r["p_value"]).replace("< ", "$<$ ").replace("–", "--"),
                 _p(r["p_holm"]).replace("< ", "$<$ ").replace("–", "--")]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def top_copies(dirs: dict[str, Path], top: int = 20) -> list[dict]:
    """The longest verbatim copies (``copies.jsonl`` artifacts) over every run's generations."""
    rows = []
    for name, d in dirs.items():
        for g, f in RunDirReader(d).artifact_files("copies.jsonl"):
            if g < 0:
                continue  # the human reference's, not a generation's
            for line in f.read_text().splitlines():
                r = json.loads(line)
                rows.append({"run": name, "generation": g, **r})
    rows.sort(key=lambda r: (-r.get("length", 0), r["run"], r["generation"], r.get("sample", 0)))
    return rows[:top]


def copies_markdown(rows: list[dict]) -> str:
    lines = ["| run | gen | sample | tokens | source | lines | text |", "|---|---:|---:|---:|---|---|---|"]
    for r in rows:
        text = " ".join(str(r.get("text", "")).split())
        text = (text[:80] + "…") if len(text) > 80 else text
        text = text.replace("|", "\\|").replace("`", "'")
        lines.append(f"| {r['run']} | {r['generation']} | {r.get('sample', '')} | {r.get('length', '')} | "
                     f"`{r.get('file', '')}` | {r.get('line_start', '')}–{r.get('line_end', '')} | `{text}` |")
    return "\n".join(lines) + "\n"


def _pick_hue(wide: pd.DataFrame, hue: str | None) -> str:
    axes = axis_columns(wide)
    if hue is not None:
        if hue not in axes:
            raise CollapseError(f"--hue {hue!r} is not an axis of these runs (axes: {', '.join(axes)})")
        return hue
    if wide["regime"].nunique() > 1:
        return "regime"
    for c in axes:
        if c not in ("seed", "run.seed", "regime") and wide[c].nunique() > 1:
            return c
    return "regime"


def report(experiment_or_sweep: str | Path, out: str | Path = "reports", metrics: list[str] | None = None,
           tracking_uri: str | None = None, root: str | Path = "runs", hue: str | None = None,
           width: str = "double", copies: int = 20) -> list[Path]:
    """Every figure and table of an experiment or sweep into ``<out>/<name>/``; returns the
    written paths (``report.md`` last). The store is the one the sweep was launched with
    unless ``tracking_uri`` says otherwise (:func:`collapse.sweep.load.resolve_source`).
    All or nothing: the files are written to a temporary folder beside it that replaces
    ``<out>/<name>`` when every one is written; a report that fails leaves nothing."""
    import shutil
    import tempfile

    name, uri, _, _ = resolve_source(experiment_or_sweep, tracking_uri, root)
    out = Path(out)
    made = [p for p in (out, *out.parents) if not p.exists()]  # folders to remove again on failure
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.report-", dir=out))
    try:
        paths = _report(experiment_or_sweep, tmp, metrics=metrics, tracking_uri=uri, root=root, hue=hue,
                        width=width, copies=copies)
        final = out / name
        old = None
        if final.exists():
            old = out / f".{name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp / name, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in made:  # the innermost first
            try:
                p.rmdir()
            except OSError:
                break
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    paths = [final / p.relative_to(tmp / name) for p in paths]
    log.info("report: %s → %s", name, final)
    for p in paths:
        print(p)
    return paths


def _report(experiment_or_sweep: str | Path, out: Path, metrics: list[str] | None, tracking_uri: str,
            root: str | Path, hue: str | None, width: str, copies: int) -> list[Path]:
    """The body of :func:`report`: writes under ``out/<name>`` and returns the paths."""
    wide = load_runs(experiment_or_sweep, tracking_uri=tracking_uri, root=root)
    if not len(wide):
        raise CollapseError(f"{experiment_or_sweep}: no run has logged metrics yet")
    name = Path(experiment_or_sweep).stem if _is_sweep_file(experiment_or_sweep) else str(experiment_or_sweep)
    if _is_sweep_file(experiment_or_sweep):
        sw = load_sweep(experiment_or_sweep)
        name = sw.name
        root = sw.root
    hue = _pick_hue(wide, hue)
    out_dir = Path(out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    long = to_long(wide)
    chosen = default_metrics(set(long["metric"])) if not metrics else list(metrics)
    last = int(wide["generation"].max())
    seeds = wide.groupby(hue)["seed"].nunique().to_dict()
    entries: list[tuple[str, str]] = []  # (file, caption)
    paths: list[Path] = []

    wide.to_csv(out_dir / "runs.csv", index=False)
    long.to_csv(out_dir / "metrics.csv", index=False)
    entries += [("runs.csv", "every run × generation with its axis values and metrics (collapse.load_runs)"),
                ("metrics.csv", "the same, tidy: one row per (run, generation, metric)")]

    fig = plot_metrics(long, out_dir / "metrics", chosen, hue=hue, title=name, width=width)
    paths += fig
    band = ("t-based 95 % confidence band over seeds" if min(seeds.values()) >= MIN_SEEDS else
            f"no confidence band where a {hue} has fewer than {MIN_SEEDS} seeds (an interval from fewer says nothing)")
    entries.append(("metrics.pdf", f"metrics against generation, one line per {hue}: mean and {band} "
                                   f"(seeds: {', '.join(f'{k}: {v}' for k, v in seeds.items())}); human reference dashed"
                                   + (f". {fig.note}" if fig.note else "")))

    dirs = run_dirs(name, tracking_uri, root)
    firsts = wide.sort_values("seed").groupby(hue)["run_name"].first().to_dict()
    ppl = {str(h): perplexity_values(dirs[r]) for h, r in firsts.items() if r in dirs}
    if any(len(v) for v in ppl.values()):
        hist = plot_perplexity_histograms(ppl, out_dir / "perplexity_gen0", title=name, width=width)
        paths += hist
        entries.append(("perplexity_gen0.pdf", f"perplexity of each generation's samples under the generation-0 model, "
                                               f"one panel per {hue} (its lowest seed), human dashed"
                                               + (f". {hist.note}" if hist.note else "")))

    y = next((m for m in ("test_ce", "prompt_ce", "val_loss") if m in wide), None)
    x = next((m for m in ("distinct_4", "ast_shape_distinct", "self_bleu") if m in wide), None)
    if x and y:
        paths += plot_trajectory(wide, out_dir / "trajectory", x=x, y=y, hue=hue)
        entries.append(("trajectory.pdf", f"quality ({y}) against diversity ({x}), one path per {hue}, first and last "
                                          f"generations numbered, t-based 95 % error bars over seeds where a point has "
                                          f"{MIN_SEEDS} or more; human reference dashed"))

    table, reference = final_effects(wide, [m for m in chosen if m in wide], hue=hue)
    table.to_csv(out_dir / "final_effects.csv", index=False)
    (out_dir / "final_effects.md").write_text(effects_markdown(table, hue, reference, last))
    (out_dir / "final_effects.tex").write_text(effects_latex(table, hue, reference, last))
    paths += [out_dir / "final_effects.md", out_dir / "final_effects.tex", out_dir / "final_effects.csv"]
    entries.append(("final_effects.md", f"each metric at generation 0 and {last} per {hue} with t-based 95 % CIs over "
                                        f"seeds, the change, and against {reference} the difference with Welch's 95 % CI, "
                                        f"Hedges' g and Welch's p, Holm-adjusted (no test below {MIN_SEEDS} seeds or "
                                        "without variance); also .tex (booktabs) and .csv"))

    summ = group_summary(summarize_runs(wide, threshold=DEFAULT_THRESHOLD, metrics=[m for m in chosen if m in wide]),
                         hue, chosen)
    summ.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.md").write_text(summary_markdown(summ, hue))
    paths += [out_dir / "summary.md", out_dir / "summary.csv"]
    entries.append(("summary.md", f"collapse summary statistics per {hue} and metric: the slope per generation, the "
                                  f"area between each curve and its generation-0 value, and the first generation that "
                                  f"moved by {DEFAULT_THRESHOLD * 100:g} %, means over seeds with t-based 95 % CIs; also .csv "
                                  "(collapse.summarize gives them per run)"))

    top = top_copies(dirs, copies)
    if top:
        (out_dir / "copies.md").write_text(copies_markdown(top))
        paths.append(out_dir / "copies.md")
        entries.append(("copies.md", f"the {len(top)} longest verbatim copies of human training code in the samples, "
                                     "with the source file and line span each came from"))

    runs = wide.drop_duplicates("run_id")[["run_name", "run_id", hue, "seed"] + (["status"] if "status" in wide else [])]
    lines = [f"# Report: {name}", "",
             f"{len(runs)} runs, generations 0–{last}; source: `{experiment_or_sweep}` "
             f"(MLflow experiment `{name}`). Regenerate with `collapse report {experiment_or_sweep}`.", "",
             "## Figures and tables", ""]
    for f, cap in entries:
        lines.append(f"- [{f}]({f}): {cap}")
        if f.endswith(".pdf"):
            lines.append(f"\n  ![{f}]({f[:-4]}.png)\n")
    lines += ["", "## Runs", "", "| run | MLflow run id | " + hue + " | seed | config |", "|---|---|---|---:|---|"]
    for _, r in runs.iterrows():
        d = dirs.get(r["run_name"])
        cfg = f"`{RunDirReader(d).config_path}`" if d and RunDirReader(d).config_path.exists() else "–"
        lines.append(f"| {r['run_name']} | `{r['run_id']}` | {r[hue]} | {r['seed']} | {cfg} |")
    cards = [(RunDirReader(d), RunDirReader(d).card_path(0)) for d in dirs.values()]
    cards = [(rd, c) for rd, c in cards if c.exists()]
    if cards:
        lines += ["", "## Dataset cards", ""] + [f"- [{rd.name}/{rd.gen_dir(0).name}]({c})" for rd, c in cards[:20]]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    paths.append(out_dir / "report.md")
    log.info("report: %s (%d runs, hue %s)", name, len(runs), hue)
    return paths
