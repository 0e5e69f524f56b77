"""Claims as data and ``collapse findings``; collapse summary statistics; train.tokens_per_generation.

Fast: hand-made run tables with known answers, sweep files that are only
expanded, one small MLflow store filled by hand (no model is trained here).
"""

from __future__ import annotations

import json
from pathlib import Path
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from collapse.cli import main
from collapse.errors import CollapseError
from collapse.findings import evaluate_claims, parse_claims
from tests.conftest import TINY

CLEAR = {"replace": [2.0, 2.4, 2.2], "accumulate": [1.0, 1.1, 0.9]}


def table(last: dict[str, list[float]], metric: str = "test_ce", generations: int = 2, **extra_axes) -> pd.DataFrame:
    """A runs table like collapse.load_runs: per regime and seed, the metric is 1.0 at generation 0 and
    moves linearly to the given last value."""
    rows = []
    for regime, values in last.items():
        for seed, v in enumerate(values):
            for g in range(generations + 1):
                rows.append({"run_id": f"{regime}{seed}", "run_name": f"{regime}_s{seed}", "status": "FINISHED",
                             "regime": regime, "seed": seed, "mix.regime": regime, **extra_axes, "run.seed": seed,
                             "generation": g, metric: 1.0 + (v - 1.0) * g / generations})
    return pd.DataFrame(rows)


def claims(*items: dict) -> list:
    base = {"metric": "test_ce", "groups": {"mix.regime": ["replace", "accumulate"]}}
    return parse_claims([{**base, **it} for it in items], "test")


def welch_by_hand(a, b, level=0.95):
    """Welch's interval and p-value written out (Welch–Satterthwaite degrees of freedom)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    d = a.mean() - b.mean()
    half = stats.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
    return d, d - half, d + half, df


# ------------------------------------------------------------ evaluate_claims

def test_a_clear_effect_is_reproduced_with_welchs_interval():
    res = evaluate_claims(table(CLEAR), claims({"direction": "greater", "name": "replace grows", "paper": "P"}))
    r = res.iloc[0]
    d, lo, hi, df = welch_by_hand(CLEAR["replace"], CLEAR["accumulate"])
    assert r.verdict == "reproduced" and r.claim == "replace grows" and r.paper == "P"
    assert (r.effect, r.ci_lo, r.ci_hi, r.welch_df) == pytest.approx((d, lo, hi, df))
    assert r.effect == pytest.approx(2.2 - 1.0)  # the means: 2.2 and 1.0
    assert r.p_value == pytest.approx(stats.ttest_ind(CLEAR["replace"], CLEAR["accumulate"], equal_var=False).pvalue)
    assert (r.n_first, r.n_second, r.generation) == (3, 3, 2) and r.note == ""
    assert (r.mean_first, r.mean_second) == pytest.approx((2.2, 1.0))


def test_the_opposite_effect_is_opposite():
    r = evaluate_claims(table(CLEAR), claims({"direction": "less"})).iloc[0]
    assert r.verdict == "opposite" and r.ci_lo > 0


def test_no_effect_is_not_reproduced():
    same = {"replace": [1.0, 1.2, 0.8], "accumulate": [1.1, 0.9, 1.0]}
    r = evaluate_claims(table(same), claims({"direction": "greater"})).iloc[0]
    d, lo, hi, _ = welch_by_hand(same["replace"], same["accumulate"])
    assert r.verdict == "not reproduced" and lo < 0 < hi
    assert (r.effect, r.ci_lo, r.ci_hi) == pytest.approx((d, lo, hi))


def test_an_effect_below_min_effect_is_not_reproduced():
    res = evaluate_claims(table(CLEAR), claims({"direction": "greater", "min_effect": 1.0},
                                               {"direction": "greater", "min_effect": 1.5}))
    assert list(res.verdict) == ["reproduced", "not reproduced"]
    assert "below min_effect 1.5" in res.note.iloc[1]


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_seeds_are_insufficient_no_interval_no_test(n):
    few = {"replace": CLEAR["replace"][:n], "accumulate": CLEAR["accumulate"][:n]}
    r = evaluate_claims(table(few), claims({"direction": "greater"})).iloc[0]
    assert r.verdict == "insufficient seeds" and (r.n_first, r.n_second) == (n, n)
    assert math.isnan(r.ci_lo) and math.isnan(r.ci_hi) and math.isnan(r.p_value)
    assert r.effect == pytest.approx(np.mean(few["replace"]) - np.mean(few["accumulate"]))
    assert "fewer than 3 seeds" in r.note


def test_judged_generation_where_and_column_fallbacks():
    t = table(CLEAR, generations=4)
    # Generation 2 of 4: half way, so the effect is half of the last generation's.
    mid = evaluate_claims(t, claims({"direction": "greater", "generation": 2})).iloc[0]
    assert mid.generation == 2 and mid.effect == pytest.approx(0.6)
    # A plain experiment's table (no axis columns): regime and seed stand in for mix.regime and run.seed.
    plain = t.drop(columns=["mix.regime", "run.seed"])
    assert evaluate_claims(plain, claims({"direction": "greater"})).iloc[0].verdict == "reproduced"
    # Another axis fixed with where:
    hot = table(CLEAR, **{"sample.temperature": 1.0})
    cold = table({k: [1.0] * 3 for k in CLEAR}, **{"sample.temperature": 0.7})
    cold["run_id"] += "c"
    both = pd.concat([hot, cold], ignore_index=True)
    res = evaluate_claims(both, claims({"direction": "greater", "where": {"sample.temperature": 1.0}},
                                       {"direction": "greater", "where": {"sample.temperature": 0.7}}))
    assert list(res.verdict) == ["reproduced", "not reproduced"] and "no variance" in res.note.iloc[1]
    with pytest.raises(CollapseError, match="several runs per seed"):
        evaluate_claims(both, claims({"direction": "greater"}))


def test_runs_behind_are_counted_and_an_unlogged_metric_is_an_error():
    t = table(CLEAR)
    t = t[~((t.run_id == "replace2") & (t.generation == 2))]
    r = evaluate_claims(t, claims({"direction": "greater"})).iloc[0]
    assert r.n_first == 2 and r.verdict == "insufficient seeds" and "1 run(s) with mix.regime = replace" in r.note
    with pytest.raises(CollapseError, match=r"claims\[0\]: metric 'bogus' is not logged"):
        evaluate_claims(t, claims({"direction": "greater", "metric": "bogus"}))


# ------------------------------------------------------------- claim parsing

def write_sweep(tmp_path, claims_list, name="claimed", seeds=3, grid=None, points=None, **extra) -> Path:
    base = {"recipe": str(TINY), "overrides": {"run.root": str(tmp_path / "root"),
                                               "tracking.uri": f"sqlite:///{tmp_path}/root/mlflow.db"}}
    axes = {"grid": grid or {"mix.regime": ["replace", "accumulate"]}, "seeds": seeds}
    if points:
        axes["list"] = points
    doc = {"name": name, "base": base, "axes": axes, **extra}
    if claims_list is not None:
        doc["claims"] = claims_list
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


GOOD = {"metric": "test_ce", "groups": {"mix.regime": ["replace", "accumulate"]}, "direction": "greater"}


@pytest.mark.parametrize("claim, message", [
    ({**GOOD, "metrc": "x"}, "claims[0]: unknown key 'metrc'"),
    ({k: v for k, v in GOOD.items() if k != "direction"}, "claims[0]: direction: missing"),
    ({**GOOD, "direction": "up"}, "claims[0].direction: expected greater or less"),
    ({**GOOD, "generation": -1}, "claims[0].generation: expected last or a generation number"),
    ({**GOOD, "generation": "first"}, "claims[0].generation: expected last or a generation number"),
    ({**GOOD, "min_effect": -0.1}, "claims[0].min_effect: expected a number >= 0"),
    ({**GOOD, "groups": {"mix.regime": ["replace"]}}, "claims[0].groups.mix.regime: expected exactly two values"),
    ({**GOOD, "groups": {"mix.regime": ["replace", "replace"]}}, "expected two different values"),
    ({**GOOD, "groups": {"mix.regime": ["replace", "accumulate"], "run.seed": [0, 1]}},
     "claims[0].groups: expected one axis with two values"),
    ({**GOOD, "metric": ""}, "claims[0].metric: expected a metric key"),
    ({**GOOD, "name": "n", "groups": {"sample.temperature": [1.0, 0.7]}},
     "claims[0] (n).groups: sample.temperature is not an axis of this sweep (its axes: mix.regime)"),
    ({**GOOD, "groups": {"mix.regime": ["replace", "fresh"]}},
     "claims[0].groups.mix.regime: no run of this sweep has mix.regime = fresh (its values: replace, accumulate)"),
    ({**GOOD, "groups": {"run.seed": [0, 1]}}, "claims[0].groups: run.seed is the seed axis"),
    ({**GOOD, "generation": 9}, "claims[0].generation: 9 is beyond the last generation of the runs"),
    ({**GOOD, "where": {"mix.regime": "replace"}}, "claims[0].where: mix.regime is the axis the groups compare"),
])
def test_a_bad_claim_is_one_line_naming_index_and_key(claim, message, tmp_path, capsys):
    path = write_sweep(tmp_path, [claim])
    with pytest.raises(CollapseError) as e:
        from collapse.sweep import load_sweep

        load_sweep(path)
    assert message in str(e.value) and str(e.value).startswith(str(path)), str(e.value)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "root").exists()


def test_claims_must_be_a_list(tmp_path):
    from collapse.sweep import load_sweep

    with pytest.raises(CollapseError, match="claims: expected a list of claims"):
        load_sweep(write_sweep(tmp_path, {"metric": "test_ce"}))


def test_a_group_that_differs_in_another_axis_needs_where(tmp_path):
    from collapse.sweep import load_sweep

    grid = {"mix.regime": ["replace", "accumulate"], "sample.temperature": [0.7, 1.0]}
    with pytest.raises(CollapseError, match=r"claims\[0\]: the runs with mix.regime = replace also differ in "
                                            r"sample.temperature \(0.7, 1.0\); fix it with where"):
        load_sweep(write_sweep(tmp_path, [GOOD], grid=grid))
    fixed = load_sweep(write_sweep(tmp_path, [{**GOOD, "where": {"sample.temperature": 1}}], grid=grid))
    assert fixed.claims[0].where == {"sample.temperature": 1}
    with pytest.raises(CollapseError, match=r"claims\[0\].where.sample.temperature: no run of this sweep has "
                                            r"sample.temperature = 0.5"):
        load_sweep(write_sweep(tmp_path, [{**GOOD, "where": {"sample.temperature": 0.5}}], grid=grid))


def test_list_valued_axes_compare_by_value(tmp_path):
    from collapse.sweep import load_sweep

    grid = {"sample.gates": [[], ["syntax"]]}
    claim = {"metric": "syntax_valid", "groups": {"sample.gates": [["syntax"], []]}, "direction": "greater"}
    sweep = load_sweep(write_sweep(tmp_path, [claim], grid=grid))
    assert sweep.claims[0].expected == '["syntax"] > []'
    # load_runs gives list-valued axis tags back as JSON text: the claim's groups still find them.
    rows = [{"run_id": f"{g}{s}", "seed": s, "sample.gates": g, "generation": 1, "syntax_valid": v}
            for g, vals in (('["syntax"]', [0.9, 0.8, 0.85]), ("[]", [0.5, 0.4, 0.45])) for s, v in enumerate(vals)]
    r = evaluate_claims(pd.DataFrame(rows), sweep.claims).iloc[0]
    assert r.verdict == "reproduced" and r.effect == pytest.approx(0.4)


def test_dry_run_lists_the_claims(tmp_path, capsys):
    path = write_sweep(tmp_path, [{**GOOD, "name": "accumulate stays bounded", "paper": "Gerstgrasser et al. 2024",
                                   "min_effect": 0.05},
                                  {**GOOD, "metric": "distinct_4", "direction": "less", "generation": 1}])
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "claims (2):" in out
    assert ("claims[0] (accumulate stays bounded): test_ce at the last generation: mix.regime replace > accumulate "
            "by ≥ 0.05 [Gerstgrasser et al. 2024]") in out
    assert "claims[1]: distinct_4 at generation 1: mix.regime replace < accumulate" in out
    assert not (tmp_path / "root").exists()


# ------------------------------------------------------ collapse findings CLI

@pytest.fixture()
def tracked(tmp_path):
    """A sweep file with claims whose runs are logged by hand to a new sqlite store (no training):
    3 seeds × replace / accumulate, test_ce over generations 0..2, and a sweep.json with its launch."""
    from mlflow.tracking import MlflowClient

    from collapse.sweep import load_sweep
    from collapse.tracking import write_json_atomic

    path = write_sweep(tmp_path, [{**GOOD, "name": "replace degrades", "paper": "Shumailov et al. 2024"},
                                  {**GOOD, "direction": "less"},
                                  {**GOOD, "metric": "distinct_4", "direction": "greater"}])
    sweep = load_sweep(path)
    uri = f"sqlite:///{tmp_path}/root/mlflow.db"
    (tmp_path / "root").mkdir()
    c = MlflowClient(uri)
    exp = c.create_experiment(sweep.name)
    flat = {"replace": [0.5, 0.6, 0.55], "accumulate": [0.5, 0.6, 0.55]}
    for run in sweep.runs:
        r = c.create_run(exp, run_name=run.name, tags={"regime": run.regime, "seed": str(run.seed),
                                                       "axis.mix.regime": run.regime, "axis.run.seed": str(run.seed)})
        for g in range(3):
            last = CLEAR[run.regime][run.seed]
            c.log_metric(r.info.run_id, "test_ce", 1.0 + (last - 1.0) * g / 2, step=g)
            c.log_metric(r.info.run_id, "distinct_4", flat[run.regime][run.seed], step=g)
            c.log_metric(r.info.run_id, "train_flops", 1e9, step=g)
        c.set_terminated(r.info.run_id)
    sweep.dir.mkdir(parents=True)
    write_json_atomic(sweep.dir / "sweep.json", {"tracking_uri": uri, "launches": [
        {"command": f"collapse sweep {path} --parallel 2", "executor": "local", "wall_s": 3725.0, "launched": 6},
        {"command": f"collapse sweep {path} --parallel 2", "executor": "local", "wall_s": 1.0, "launched": 0}]})
    return path


def test_findings_table_from_tracked_runs(tracked, tmp_path, capsys):
    out = tmp_path / "reports" / "FINDINGS.md"
    assert main(["findings", str(tracked), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), str(out.with_name(out.stem.lower() + ".csv"))]
    md = out.read_text()
    csv = pd.read_csv(out.with_name(out.stem.lower() + ".csv"))
    assert list(csv.verdict) == ["reproduced", "opposite", "not reproduced"]
    d, lo, hi, _ = welch_by_hand(CLEAR["replace"], CLEAR["accumulate"])
    first = csv.iloc[0]
    assert (first.effect, first.ci_lo, first.ci_hi) == pytest.approx((d, lo, hi))
    assert first.sweep == "claimed" and first.claim == "replace degrades" and first.generation == 2
    assert first.wall_s == pytest.approx(3725.0) and first.command == f"collapse sweep {tracked} --parallel 2"
    assert "| claimed | replace degrades | Shumailov et al. 2024 | `test_ce` | 2 | mix.regime: replace − accumulate |" in md
    assert "| reproduced |" in md and "| opposite |" in md and "| not reproduced |" in md
    assert f"`collapse sweep {tracked} --parallel 2`" in md and "1 h 02 min" in md and "6 of 6" in md
    assert "1.8e+10 FLOPs" in md  # 6 runs × 3 generations × 1e9
    # The same numbers as evaluate_claims on collapse.load_runs' table.
    import collapse
    from collapse.sweep import load_sweep

    again = evaluate_claims(collapse.load_runs(tracked), load_sweep(tracked).claims)
    assert again.effect.tolist() == pytest.approx(csv.effect.tolist())
    # Without --out: the Markdown on stdout, nothing written.
    assert main(["findings", str(tracked)]) == 0
    assert capsys.readouterr().out.startswith("# Findings")


def test_a_failed_findings_run_writes_nothing(tracked, tmp_path, capsys):
    bare = write_sweep(tmp_path, None, name="bare")
    out = tmp_path / "F.md"
    assert main(["findings", str(tracked), str(bare), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no claims: to evaluate" in err and len(err.splitlines()) == 1
    assert not out.exists() and not out.with_name(out.stem.lower() + ".csv").exists()
    assert main(["findings", str(tracked), "--out", str(tmp_path / "F.txt")]) == 2
    assert "expected a .md file" in capsys.readouterr().err
    assert list(tmp_path.glob("F*")) == [] and list(tmp_path.glob(".F*")) == []


def test_findings_never_create_a_store(tmp_path, capsys):
    path = write_sweep(tmp_path, [GOOD], name="never")
    assert main(["findings", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no MLflow store at" in err and "nothing has been tracked there yet" in err
    assert not (tmp_path / "root").exists()


def test_sweep_provenance_without_launch_records(tmp_path):
    from collapse.findings import sweep_provenance
    from collapse.sweep import load_sweep

    sweep = load_sweep(write_sweep(tmp_path, [GOOD]))
    command, wall, notes = sweep_provenance(sweep, {}, None)
    assert command == "" and wall is None
    assert any("command not recorded" in n for n in notes) and any("wall time not recorded" in n for n in notes)
    slurm = {"launches": [{"command": "collapse sweep x --executor slurm", "executor": "slurm", "wall_s": None,
                           "launched": 6}]}
    command, wall, notes = sweep_provenance(sweep, slurm, None)
    assert command == "collapse sweep x --executor slurm" and wall is None
    assert any("without --wait" in n for n in notes)


def test_a_launch_is_recorded_in_sweep_json(tmp_path):
    from collapse.sweep import load_sweep
    from collapse.sweep.state import LaunchResult, default_command, record_attempt

    sweep = load_sweep(write_sweep(tmp_path, [GOOD]))
    record_attempt(sweep, default_command(sweep, "local", 2), "local", 100.0, "ok",
                    LaunchResult(["a", "b"], {}, {}, {}), waited=False)
    st = json.loads((sweep.dir / "sweep.json").read_text())
    (entry,) = st["launches"]
    assert entry["command"] == f"collapse sweep {sweep.path} --parallel 2"
    assert entry["launched"] == 2 and entry["outcome"] == "ok" and entry["wall_s"] > 0


# ------------------------------------------------------- summary statistics

def test_summary_of_curves_with_known_slopes():
    from collapse.summary import curve_summary

    g = [0, 1, 2, 3, 4]
    up = curve_summary(g, [1 + 0.5 * x for x in g])
    # Exactly a line: slope 0.5 with a zero-width interval; area ∫0..4 0.5 g dg = 4; 10 % of 1 is reached at g = 1.
    assert (up["slope"], up["slope_lo"], up["slope_hi"], up["area"], up["first_gen"]) == pytest.approx(
        (0.5, 0.5, 0.5, 4.0, 1))
    assert curve_summary(g, [1 + 0.5 * x for x in g], threshold=0.6)["first_gen"] == 2  # 0.5 g >= 0.6 first at g = 2
    down = curve_summary(g, [10 - x for x in g], threshold=0.25)
    assert (down["slope"], down["area"], down["first_gen"]) == pytest.approx((-1.0, -8.0, 3))  # |−g| >= 2.5 at g = 3
    flat = curve_summary(g, [2.0] * 5)
    assert flat["slope"] == 0 and flat["area"] == 0 and flat["first_gen"] is None
    assert curve_summary(g, [0.0, 1, 2, 3, 4])["first_gen"] is None  # no relative move from 0
    # Exactly the threshold counts: 1.1 is 10 % above 1.0.
    assert curve_summary([0, 1, 2], [1.0, 1.05, 1.1])["first_gen"] == 2


def test_slope_interval_is_the_least_squares_one():
    from collapse.summary import curve_summary

    g = np.arange(6)
    y = np.array([1.0, 1.3, 1.1, 1.8, 1.7, 2.4])
    s = curve_summary(g, y)
    fit = stats.linregress(g, y)
    half = stats.t.ppf(0.975, len(g) - 2) * fit.stderr
    assert (s["slope"], s["slope_lo"], s["slope_hi"]) == pytest.approx((fit.slope, fit.slope - half, fit.slope + half))
    assert s["area"] == pytest.approx(np.trapezoid(y - y[0], g) if hasattr(np, "trapezoid") else np.trapz(y - y[0], g))
    two = curve_summary([0, 1], [1.0, 2.0])
    assert two["slope"] == 1.0 and math.isnan(two["slope_lo"])  # two points: a slope but no interval


def test_summarize_runs_and_group_summary():
    import collapse
    from collapse.stats import mean_ci
    from collapse.summary import group_summary

    t = table(CLEAR, generations=4)
    s = collapse.summarize(t, metrics=["test_ce"])
    assert len(s) == 6 and {"run_id", "mix.regime", "run.seed", "slope", "area", "first_gen"} <= set(s.columns)
    row = s[s.run_id == "replace0"].iloc[0]
    # 1.0 → 2.0 over 4 generations: slope 0.25, area 4·(2−1)/2 = 2, 10 % reached at generation 1 (1.25).
    assert (row.slope, row.area, row.first_gen, row.gen0, row["last"]) == pytest.approx((0.25, 2.0, 1, 1.0, 2.0))
    acc = s[s.run_id == "accumulate0"].iloc[0]
    assert acc.slope == 0 and pd.isna(acc.first_gen)
    grp = group_summary(s, "mix.regime")
    rep = grp[grp["mix.regime"] == "replace"].iloc[0]
    ci = mean_ci(s[s["mix.regime"] == "replace"].slope)
    assert (rep.slope_mean, rep.slope_lo, rep.slope_hi) == pytest.approx((ci.mean, ci.lo, ci.hi))
    assert rep.n_runs == 3 and rep.crossed == 3
    with pytest.raises(CollapseError, match="threshold"):
        collapse.summarize(t, threshold=0)


# ---------------------------------------------------- tokens_per_generation

def test_tokens_per_generation_fixes_the_steps():
    from collapse.config import TrainConfig
    from collapse.lm.train import plan_steps

    cfg = TrainConfig(batch_size=4, tokens_per_generation=1000)
    # ceil(1000 / (4 · 16)) = 16, whatever the number of blocks.
    assert plan_steps(3, cfg, 16) == plan_steps(3000, cfg, 16) == 16
    assert plan_steps(3, TrainConfig(batch_size=4, tokens_per_generation=1000, max_steps=5), 16) == 5
    assert plan_steps(40, TrainConfig(batch_size=4), 16) == 10  # unset: epochs decide, as before
    with pytest.raises(ValueError, match="needs seq_len"):
        plan_steps(3, cfg)


def test_tokens_per_generation_trains_equal_steps_on_unequal_sets():
    import torch

    from collapse.config import ModelConfig, TrainConfig
    from collapse.lm.model import build_model
    from collapse.lm.train import train

    torch.set_num_threads(1)
    cfg = TrainConfig(batch_size=4, tokens_per_generation=1000, lr=1e-3)
    results = []
    for n_docs in (3, 12):  # 3 and 12 blocks of 16 tokens per pass: the budget needs 22 and 6 passes
        model = build_model(ModelConfig(preset="tiny", seq_len=16, hidden_size=16, num_layers=1, num_heads=2,
                                        intermediate_size=32), 64, 0, 0)
        docs = [list(range(1, 16))] * n_docs
        results.append(train(model, docs, 0, 16, cfg, torch.device("cpu"), seed=0, progress=False))
    assert [r.steps for r in results] == [16, 16] and [r.tokens for r in results] == [16 * 4 * 16] * 2


def test_tokens_per_generation_is_validated_and_hash_neutral_when_unset():
    from collapse.config import load_config
    from collapse.errors import ConfigError

    with pytest.raises(ConfigError, match="train.tokens_per_generation: expected > 0 or null, got 0"):
        load_config(TINY, ["train.tokens_per_generation=0"])
    with pytest.raises(ConfigError, match="train.tokens_per_generation: expected int or null"):
        load_config(TINY, ["train.tokens_per_generation=1.5"])
    unset, null = load_config(TINY), load_config(TINY, ["train.tokens_per_generation=null"])
    assert unset.train.tokens_per_generation is None
    sections = ("data", "tokenizer", "model", "train", "sample", "metrics")
    # The hash of a config without the field (as written before it existed) is the same.
    import hashlib

    d = unset.to_dict()
    del d["train"]["tokens_per_generation"]
    del d["train"]["compile"]  # another field added later, also left out at its default
    del d["data"]["distributions"]  # and another
    old = hashlib.sha256(json.dumps({s: d[s] for s in sections}, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert unset.section_hash(*sections) == null.section_hash(*sections) == old
    assert load_config(TINY, ["train.tokens_per_generation=100000"]).section_hash(*sections) != old


def test_report_summary_of_hand_logged_runs(tracked, tmp_path):
    """collapse report's summary.md|csv on the hand-logged runs: replace's test_ce rises linearly from 1.0
    to 2.0, 2.4, 2.2 over 2 generations (slopes 0.5, 0.7, 0.6), accumulate's to 1.0, 1.1, 0.9."""
    import collapse
    from collapse.stats import mean_ci

    collapse.report(tracked, out=tmp_path / "reports", metrics=["test_ce"])
    out = tmp_path / "reports" / "claimed"
    table = pd.read_csv(out / "summary.csv")
    rep = table[table.regime == "replace"].iloc[0]
    slopes = [(v - 1.0) / 2 for v in CLEAR["replace"]]
    ci = mean_ci(slopes)
    assert (rep.slope_mean, rep.slope_lo, rep.slope_hi) == pytest.approx((ci.mean, ci.lo, ci.hi))
    assert rep.area_mean == pytest.approx(np.mean([v - 1.0 for v in CLEAR["replace"]]))  # ∫0..2 of a line from 0
    assert rep.crossed == 3 and rep.first_gen_mean == 1  # each moved ≥ 10 % by generation 1
    acc = table[table.regime == "accumulate"].iloc[0]
    assert acc.crossed == 2 and acc.first_gen_mean == 2  # 1.0 → 1.1 and 1.0 → 0.9 move 10 %, at generation 2
    assert "[summary.md](summary.md)" in (out / "report.md").read_text()
    assert "slope per generation [95 % CI]" in (out / "summary.md").read_text()


def test_every_generation_logs_its_training_compute():
    """The seeded tiny run's pinned numbers (tests/golden): train_flops = 6 · model_params · train_tokens."""
    from tests.conftest import REPO

    for path in sorted((REPO / "tests" / "golden").glob("tiny-*.json")):
        for g in json.loads(path.read_text())["generations"]:
            assert g["model_params"] > 0 and g["train_tokens"] > 0
            assert g["train_flops"] == 6 * g["model_params"] * g["train_tokens"]
