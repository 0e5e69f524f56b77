"""collapse report on a small real sweep: 2 regimes × 2 seeds × generations 0..2 of the tiny model."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from scipy import stats

import collapse
from collapse.cli import main
from tests.conftest import TINY

pytestmark = pytest.mark.slow

METRICS = ["test_ce", "syntax_valid", "distinct_n", "perplexity_gen0", "verbatim_copy"]


@pytest.fixture(scope="module")
def grid(shared_root, tmp_path_factory):
    """The sweep ``report_grid`` launched locally (its MLflow experiment has the same name)."""
    import yaml

    from collapse.sweep import launch, load_sweep

    uri = f"sqlite:///{shared_root}/mlflow.db"
    sweep = {"name": "report_grid",
             "base": {"recipe": str(TINY), "overrides": {
                 "run.root": str(shared_root), "tracking.uri": uri, "run.generations": 2, "metrics.names": METRICS,
                 "metrics.copy_k": 4}},  # short spans, so that the tiny model has copies to attribute
             "axes": {"grid": {"mix.regime": ["replace", "accumulate"]}, "seeds": [0, 1]}}
    path = tmp_path_factory.mktemp("sweeps") / "report_grid.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    res = launch(load_sweep(path), "local", parallel=2, echo=lambda line: None)
    assert res.ok and len(res.launched) == 4, res
    return uri


def test_report_writes_every_file(grid, shared_root, tmp_path):
    assert main(["report", "report_grid", "--root", str(shared_root), "--tracking-uri", grid, "--out", str(tmp_path),
                 "--metrics", "test_ce", "distinct_4", "copy_rate"]) == 0
    out = tmp_path / "report_grid"
    for f in ("metrics.png", "metrics.pdf", "perplexity_gen0.png", "perplexity_gen0.pdf", "trajectory.png",
              "trajectory.pdf", "final_effects.md", "final_effects.tex", "final_effects.csv", "summary.md",
              "summary.csv", "copies.md", "runs.csv", "metrics.csv", "report.md"):
        assert (out / f).stat().st_size > 100, f
    index = (out / "report.md").read_text()
    for f in ("metrics.pdf", "perplexity_gen0.pdf", "trajectory.pdf", "final_effects.md", "summary.md", "copies.md"):
        assert f"[{f}]({f})" in index
    runs = collapse.load_runs("report_grid", tracking_uri=grid)
    for run_id in runs["run_id"].unique():
        assert run_id in index  # the exact runs it came from
    assert "config.yaml" in index
    tex = (out / "final_effects.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and "\\bottomrule" in tex
    copies = (out / "copies.md").read_text().splitlines()
    assert len(copies) > 2 and re.search(r"`[\w/.-]+\.py` \| \d+–\d+", copies[2])  # a source file and its line span


def test_table_numbers_are_the_mlflow_values_and_welch_matches_scipy(grid, shared_root, tmp_path):
    from mlflow.tracking import MlflowClient

    collapse.report("report_grid", out=tmp_path, tracking_uri=grid, root=shared_root, metrics=["test_ce", "distinct_4"])
    table = pd.read_csv(tmp_path / "report_grid" / "final_effects.csv")
    client = MlflowClient(grid)
    exp = client.get_experiment_by_name("report_grid")
    values: dict[tuple[str, str, int], list[float]] = {}
    for run in client.search_runs([exp.experiment_id]):
        for metric in ("test_ce", "distinct_4"):
            for m in client.get_metric_history(run.info.run_id, metric):
                values.setdefault((run.data.tags["regime"], metric, m.step), []).append(m.value)
    for _, row in table.iterrows():
        last = values[(row["regime"], row["metric"], 2)]
        first = values[(row["regime"], row["metric"], 0)]
        assert row["n_seeds"] == len(last) == 2
        assert row["last_mean"] == pytest.approx(sum(last) / 2, rel=1e-12)
        assert row["gen0_mean"] == pytest.approx(sum(first) / 2, rel=1e-12)
        assert row["change"] == pytest.approx(sum(last) / 2 - sum(first) / 2, rel=1e-9, abs=1e-12)
        # Two seeds: no interval, no test, and the table says why.
        assert math.isnan(row["welch_t"]) and math.isnan(row["p_value"]) and math.isnan(row["last_ci_lo"])
        assert "fewer than 3 seeds" in row["note"]
        if row["regime"] == "replace":
            ref = values[("accumulate", row["metric"], 2)]
            assert row["diff_vs_ref"] == pytest.approx(sum(last) / 2 - sum(ref) / 2, rel=1e-9, abs=1e-12)
    md = (tmp_path / "report_grid" / "final_effects.md").read_text()
    assert "Δ vs accumulate [95 % CI]" in md and "Not tested: fewer than 3 seeds" in md
    index = (tmp_path / "report_grid" / "report.md").read_text()
    assert "no confidence band where a regime has fewer than 3 seeds" in index


def test_final_effects_on_a_hand_made_table():
    """Three seeds: the CI, Welch's test, Hedges' g and Holm's p are those of collapse.stats / scipy on the
    same numbers; a metric constant across seeds gets no p-value."""
    from collapse.reporting import final_effects
    from collapse.stats import compare, holm, mean_ci

    rows = []
    vals = {"replace": [2.0, 2.4, 2.2], "accumulate": [1.0, 1.1, 0.9]}
    for regime, last in vals.items():
        for seed, v in enumerate(last):
            rows.append({"run_id": f"{regime}{seed}", "run_name": f"{regime}_s{seed}", "status": "FINISHED",
                         "regime": regime, "seed": seed, "generation": 0, "ce": 1.0, "flat": 0.5})
            rows.append({"run_id": f"{regime}{seed}", "run_name": f"{regime}_s{seed}", "status": "FINISHED",
                         "regime": regime, "seed": seed, "generation": 3, "ce": v, "flat": 0.5})
    table, ref = final_effects(pd.DataFrame(rows), ["ce", "flat"])
    assert ref == "accumulate"
    r = table[(table.metric == "ce") & (table.regime == "replace")].iloc[0]
    ci, c = mean_ci(vals["replace"]), compare(vals["replace"], vals["accumulate"])
    assert (r.last_mean, r.last_ci_lo, r.last_ci_hi) == pytest.approx((ci.mean, ci.lo, ci.hi))
    want = stats.ttest_ind(vals["replace"], vals["accumulate"], equal_var=False)
    assert r.welch_t == pytest.approx(want.statistic) and r.p_value == pytest.approx(want.pvalue)
    assert (r.diff_vs_ref, r.diff_ci_lo, r.diff_ci_hi, r.hedges_g) == pytest.approx((c.diff, c.lo, c.hi, c.hedges_g))
    assert r.diff_ci_lo > 0 and r.change == pytest.approx(ci.mean - 1.0)
    flat = table[(table.metric == "flat") & (table.regime == "replace")].iloc[0]
    assert math.isnan(flat.p_value) and "no variance" in flat.note
    assert table.p_holm.tolist() == pytest.approx(holm(table.p_value.to_numpy()).tolist(), nan_ok=True)


def test_report_of_an_unknown_experiment_is_one_line(shared_root, capsys, grid):
    assert main(["report", "no_such_experiment", "--root", str(shared_root), "--tracking-uri", grid]) == 2
    err = capsys.readouterr().err.strip()
    assert "no MLflow experiment named 'no_such_experiment'" in err and "\n" not in err
    assert main(["report", "report_grid", "--root", str(shared_root), "--tracking-uri", grid, "--hue", "bogus"]) == 2
    assert "not an axis" in capsys.readouterr().err


def test_summary_table_is_the_per_run_summary_averaged(grid, shared_root, tmp_path):
    """summary.csv: per regime and metric, the mean over seeds of collapse.summarize's per-run slopes and areas."""
    collapse.report("report_grid", out=tmp_path, tracking_uri=grid, root=shared_root, metrics=["test_ce"])
    table = pd.read_csv(tmp_path / "report_grid" / "summary.csv")
    per_run = collapse.load_runs("report_grid", tracking_uri=grid, summary=True)
    per_run = per_run[per_run.metric == "test_ce"]
    for _, row in table.iterrows():
        runs = per_run[per_run.regime == row["regime"]]
        assert row["n_runs"] == len(runs) == 2
        assert row["slope_mean"] == pytest.approx(runs.slope.mean()) and row["area_mean"] == pytest.approx(runs.area.mean())
        assert math.isnan(row["slope_lo"])  # two seeds: no interval


def test_findings_on_the_tracked_sweep(grid, shared_root, tmp_path, capsys):
    """collapse findings on a sweep file of the same runs with claims added: two seeds per group, so no
    interval and the verdict says so; the launch command and wall time come from sweep.json."""
    import yaml

    uri = f"sqlite:///{shared_root}/mlflow.db"
    sweep = {"name": "report_grid",
             "base": {"recipe": str(TINY), "overrides": {
                 "run.root": str(shared_root), "tracking.uri": uri, "run.generations": 2, "metrics.names": METRICS,
                 "metrics.copy_k": 4}},
             "axes": {"grid": {"mix.regime": ["replace", "accumulate"]}, "seeds": [0, 1]},
             "claims": [{"name": "replace drifts", "metric": "test_ce", "groups": {"mix.regime": ["replace", "accumulate"]},
                         "direction": "greater"}]}
    path = tmp_path / "report_grid.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    out = tmp_path / "FINDINGS.md"
    assert main(["findings", str(path), "--out", str(out)]) == 0
    row = pd.read_csv(out.with_name(out.stem.lower() + ".csv")).iloc[0]
    runs = collapse.load_runs(path)
    last = runs[runs.generation == 2]
    want = last[last.regime == "replace"].test_ce.mean() - last[last.regime == "accumulate"].test_ce.mean()
    assert row["verdict"] == "insufficient seeds" and row["effect"] == pytest.approx(want)
    assert math.isnan(row["ci_lo"]) and (row["n_first"], row["n_second"]) == (2, 2)
    assert row["command"].startswith("collapse sweep ") and row["wall_s"] > 0
    md = out.read_text()
    assert "| insufficient seeds |" in md and "2 / 2" in md and "4 of 4" in md
