"""Sweeps: expansion and bad input, 8 local runs on one sqlite store, kill -9 and relaunch, status, load_runs."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from collapse.cli import main
from tests.conftest import REPO, TINY

SWEEPS = REPO / "experiments" / "sweeps"
# The tiny recipe made smaller still: generations 0..1 on a 160-function human pool.
SMALL = {"run.generations": 1, "data.train_size": 160, "sample.max_new_tokens": 32,
         "metrics.names": ["test_ce", "syntax_valid", "distinct_n"]}
REGIMES4 = ["replace", "accumulate", "accumulate_subsample", "fixed_fraction"]


def write_sweep(folder: Path, name: str, root: Path, *, grid: dict | None = None, seeds=None, points=None,
                **overrides) -> Path:
    """A sweep file over the tiny recipe, its runs under ``root``."""
    base = {"recipe": str(TINY), "overrides": {**SMALL, "run.root": str(root),
                                               "tracking.uri": f"sqlite:///{root}/mlflow.db", **overrides}}
    axes: dict = {}
    if grid:
        axes["grid"] = grid
    if points:
        axes["list"] = points
    if seeds is not None:
        axes["seeds"] = seeds
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": base, "axes": axes}, sort_keys=False))
    return path


def metrics_of(run_dir: Path, g: int) -> dict:
    return json.loads((run_dir / f"gen_{g:03d}" / "metrics.json").read_text())


# ------------------------------------------------------------------ fast

def test_shipped_sweep_files_expand():
    from collapse.sweep import load_sweep

    tiny = load_sweep(SWEEPS / "tiny_grid.yaml")
    assert tiny.name == "tiny_grid" and tiny.axis_keys == ["mix.regime", "run.seed"]
    assert [r.name for r in tiny.runs] == ["replace_s0", "replace_s1", "accumulate_s0", "accumulate_s1"]
    assert all(r.generations == 2 and r.config["model"]["preset"] == "tiny" for r in tiny.runs)
    assert tiny.runs[0].run_dir == Path("runs").resolve() / "tiny_grid" / "replace_s0"
    assert tiny.runs[0].config["run"]["experiment"] == "tiny_grid"
    assert tiny.slurm.partition == "debug" and tiny.slurm.cpus_per_task == 1
    small = load_sweep(SWEEPS / "small_grid.yaml")
    assert len(small.runs) == 24 and {r.config["model"]["preset"] for r in small.runs} == {"small"}
    assert small.axis_keys == ["mix.regime", "mix.human_fraction", "sample.temperature", "run.seed"]
    ff = small.run("fixed_fraction_human_fraction=0.5_temperature=0.8_s2")
    assert ff.axes == {"mix.regime": "fixed_fraction", "mix.human_fraction": 0.5, "sample.temperature": 0.8,
                       "run.seed": 2}
    assert small.slurm.gpus_per_node == 1 and small.slurm.timeout_min == 240
    assert [(c.axis, c.first, c.second, c.direction) for c in tiny.claims] == [
        ("mix.regime", "replace", "accumulate", "greater")]
    assert [c.where for c in small.claims] == [{"sample.temperature": 1.0},
                                               {"mix.human_fraction": 0.1, "sample.temperature": 1.0}]


def test_dry_run_prints_the_expansion_and_launches_nothing(tmp_path, capsys):
    root = tmp_path / "root"
    path = write_sweep(tmp_path, "dry", root, grid={"mix.regime": ["replace", "accumulate"],
                                                    "sample.temperature": [0.7, 1.0]}, seeds=2)
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split() == ["run", "mix.regime", "sample.temperature", "run.seed", "run", "dir"]
    assert len(lines) == 1 + 8 + 1 and "dry run: nothing launched" in lines[-1]
    assert "replace_temperature=0.7_s1" in out and str(root / "dry" / "accumulate_temperature=1.0_s0") in out
    assert not root.exists()  # no run directory, no database, no sweep folder


@pytest.mark.parametrize("axes, message", [
    ({"grid": {"mix.regim": ["replace"]}}, "axes: mix.regim: unknown key (known in mix:"),
    ({"grid": {"train.lr": ["fast"]}}, "run lr=fast: train.lr: expected float, got 'fast'"),
    ({"grid": {"run.dir": ["/x"]}}, "run.dir is set by the sweep"),
    ({"grid": {"mix.regime": []}}, "expected a non-empty list of values"),
    ({"seeds": [0], "grid": {"run.seed": [1]}}, "run.seed given both as seeds and as an axis"),
    ({"sweep": 1}, "axes: unknown key 'sweep'"),
])
def test_bad_sweep_file_is_one_line_exit_2_and_launches_nothing(axes, message, tmp_path, capsys):
    root = tmp_path / "root"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base": {"recipe": str(TINY), "overrides": {"run.root": str(root)}}, "axes": axes}))
    rc = main(["sweep", str(path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not root.exists()


def test_bad_sweep_file_through_the_entry_point(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bad.yaml"
    path.write_text(f"base: {TINY}\naxes: {{grid: {{model.presett: [tiny]}}}}\n")
    r = subprocess.run([sys.executable, "-m", "collapse.cli", "sweep", str(path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().startswith(f"collapse: error: {path}: axes: model.presett: unknown key")
    assert len(r.stderr.strip().splitlines()) == 1


def test_status_of_a_sweep_never_launched(tmp_path, capsys):
    path = write_sweep(tmp_path, "fresh", tmp_path / "root", grid={"mix.regime": ["replace", "accumulate"]})
    assert main(["sweep", str(path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "replace  " in out and "0/2" in out and "fresh: 2 runs: 2 pending" in out


# ------------------------------------------------------------------ slow

@pytest.fixture(scope="module")
def eight(shared_root, tmp_path_factory):
    """8 local runs at once (4 regimes x 2 seeds), all writing to one sqlite store.
    Without the shared generation 0 every run starts working (and logging) at once."""
    folder = tmp_path_factory.mktemp("sweeps")
    path = write_sweep(folder, "eight", shared_root, grid={"mix.regime": REGIMES4}, seeds=[0, 1],
                       **{"run.share_gen0": False})
    t = time.time()
    rc = main(["sweep", str(path), "--parallel", "8"])
    return {"path": path, "rc": rc, "seconds": time.time() - t}


@pytest.mark.slow
def test_eight_concurrent_runs_lose_nothing_in_sqlite(eight, shared_root):
    from mlflow.tracking import MlflowClient

    from collapse.sweep import load_sweep

    assert eight["rc"] == 0
    sweep = load_sweep(eight["path"])
    client = MlflowClient(f"sqlite:///{shared_root}/mlflow.db")
    expected = logged = 0
    for run in sweep.runs:
        state = json.loads((run.run_dir / "state.json").read_text())
        assert state["status"] == "done" and state["last_completed_generation"] == 1
        history: dict[str, list] = {}
        for g in range(2):
            for key, value in metrics_of(run.run_dir, g).items():
                expected += 1
                if key not in history:
                    history[key] = client.get_metric_history(state["mlflow_run_id"], key)
                at_g = [m.value for m in history[key] if m.step == g]
                assert at_g == [pytest.approx(value)], (run.name, key, g)
                logged += 1
    assert logged == expected and expected > 8 * 2 * 3


@pytest.mark.slow
def test_parent_and_child_runs_with_axis_tags(eight, shared_root):
    import mlflow

    from collapse.sweep import load_sweep

    sweep = load_sweep(eight["path"])
    mlflow.set_tracking_uri(f"sqlite:///{shared_root}/mlflow.db")
    df = mlflow.search_runs(experiment_names=["eight"])
    parents = df[df["tags.sweep.role"] == "parent"]
    assert len(parents) == 1 and parents["status"].iloc[0] == "FINISHED"
    parent_id = parents["run_id"].iloc[0]
    children = df[df["tags.mlflow.parentRunId"] == parent_id]
    assert len(children) == 8 and set(children["status"]) == {"FINISHED"}
    by_name = {r.name: r for r in sweep.runs}
    for _, row in children.iterrows():
        run = by_name[row["tags.mlflow.runName"]]
        assert row["tags.axis.mix.regime"] == run.regime == row["tags.regime"]
        assert row["tags.axis.run.seed"] == str(run.seed) == row["tags.seed"]
        assert row["tags.sweep"] == "eight"
    state = json.loads((sweep.dir / "sweep.json").read_text())
    assert state["parent_run_id"] == parent_id


@pytest.mark.slow
def test_load_runs_is_one_tidy_row_per_run_and_generation(eight, shared_root):
    import collapse
    from collapse.sweep import load_sweep

    df = collapse.load_runs(eight["path"])
    assert len(df) == 8 * 2
    for col in ("run_id", "run_name", "regime", "seed", "mix.regime", "run.seed", "generation", "test_ce", "syntax_valid"):
        assert col in df.columns, col
    assert df["run.seed"].dtype.kind == "i" and set(df["generation"]) == {0, 1}
    assert sorted(df["mix.regime"].unique()) == sorted(REGIMES4)
    for run in load_sweep(eight["path"]).runs:
        for g in range(2):
            row = df[(df["run_name"] == run.name) & (df["generation"] == g)]
            assert len(row) == 1 and row["test_ce"].iloc[0] == pytest.approx(metrics_of(run.run_dir, g)["test_ce"])
    by_name = collapse.load_runs("eight", tracking_uri=f"sqlite:///{shared_root}/mlflow.db")
    assert len(by_name) == len(df) and {"mix.regime", "run.seed"} <= set(by_name.columns)


@pytest.mark.slow
def test_relaunching_a_finished_sweep_launches_nothing(eight, capsys):
    t = time.time()
    assert main(["sweep", str(eight["path"]), "--parallel", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped, done") == 8 and "started" not in out
    assert time.time() - t < 30


def _held(sweep) -> dict[str, int]:
    """The sweep's runs whose lock a worker holds, with that worker's pid."""
    from collapse.locks import is_locked
    from collapse.sweep.state import lock_path

    held = {}
    for run in sweep.runs:
        lock = lock_path(sweep.dir, run.name)
        if is_locked(lock):
            try:
                held[run.name] = int(json.loads(lock.read_text())["pid"])
            except (ValueError, KeyError, OSError):
                pass
    return held


def _kill_at_a_random_point(sweep, launcher: threading.Thread, rng: random.Random) -> int:
    """SIGKILL the working workers at a seeded random point of the work: just
    after a worker takes its run's lock (generation 0 under way), or once a
    held run has finished generation 0 (generation 1 under way), then a random
    delay under 0.3 s. Points in the work rather than wall-clock moments, so a
    machine fast enough to finish the sweep within a fixed delay still gets
    its workers killed. Returns how many were killed."""
    after_gen0, delay = rng.random() < 0.5, rng.uniform(0.0, 0.3)
    deadline = time.time() + 120
    while launcher.is_alive() and time.time() < deadline:
        held = _held(sweep)
        if held and (not after_gen0 or any((sweep.run(n).run_dir / "gen_000" / "DONE").exists() for n in held)):
            break
        time.sleep(0.02)
    time.sleep(delay)
    pids = list(_held(sweep).values())
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return len(pids)


def test_kill_workers_at_random_moments_then_relaunch_equals_uninterrupted(eight, shared_root, tmp_path, capsys):
    """SIGKILL the running workers at seeded random points of the work, three
    launches in a row; a last launch finishes the sweep; every generation's metrics equal those
    of the uninterrupted sweep (same run names, same configs)."""
    from collapse.sweep import launch, load_sweep, status
    from collapse.sweep.state import attempts_path

    path = write_sweep(tmp_path, "killed", shared_root, grid={"mix.regime": ["replace", "accumulate"]}, seeds=[0, 1])
    sweep = load_sweep(path)
    reference = load_sweep(eight["path"])
    rng = random.Random(20240611)
    kills = 0
    for cycle in range(3):
        out: list = []
        th = threading.Thread(target=lambda: out.append(launch(sweep, "local", parallel=2, echo=lambda s: None)))
        th.start()
        kills += _kill_at_a_random_point(sweep, th, rng)
        th.join(timeout=300)
        assert not th.is_alive()
        if cycle == 0:  # --status of a partially complete sweep agrees with the run directories
            text, statuses = status(sweep)
            for s in statuses:
                state_file = sweep.run(s.name).run_dir / "state.json"
                st = json.loads(state_file.read_text()) if state_file.exists() else {}
                line = next(ln for ln in text.splitlines() if ln.startswith(s.name + " "))
                if s.state == "done":
                    assert st["status"] == "done" and "done (2 generations)" in line
                elif st:
                    k = st["last_completed_generation"]
                    assert s.state == "incomplete" and f"{k + 1}/2" in line, line
                    assert (f"stopped after generation {k} of 1" if k >= 0 else "stopped before generation 0") in line
                else:
                    assert s.state == "pending"
    assert kills >= 2
    final = launch(sweep, "local", parallel=2, echo=lambda s: None)
    assert final.ok, final.failed
    for run in sweep.runs:
        for g in range(2):
            assert metrics_of(run.run_dir, g) == metrics_of(reference.run(run.name).run_dir, g), (run.name, g)
    attempts = [json.loads(line) for run in sweep.runs
                for line in attempts_path(sweep.dir, run.name).read_text().splitlines()]
    assert sum(a["outcome"] == "started" for a in attempts) >= len(sweep.runs) + 1  # something was resumed
    text, statuses = status(sweep)
    assert all(s.state == "done" for s in statuses), text
    # MLflow: one finished child run per sweep run, each generation logged once
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{shared_root}/mlflow.db")
    for run in sweep.runs:
        state = json.loads((run.run_dir / "state.json").read_text())
        assert client.get_run(state["mlflow_run_id"]).info.status == "FINISHED", run.name
        steps = sorted(m.step for m in client.get_metric_history(state["mlflow_run_id"], "test_ce"))
        assert steps == [0, 1], (run.name, steps)
        assert state["status"] == "done"


@pytest.mark.slow
def test_a_failing_run_is_reported_with_its_error(shared_root, tmp_path, capsys):
    path = write_sweep(tmp_path, "failing", shared_root, points=[{"mix.regime": "replace"},
                                                                 {"mix.regime": "accumulate", "data.train_size": 100000}])
    rc = main(["sweep", str(path), "--parallel", "2"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "accumulate_train_size=100000: failed: CollapseError: data.train_size: 100000 requested" in out
    assert main(["sweep", str(path), "--status"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("accumulate_train_size=100000"))
    assert "failed: CollapseError: data.train_size: 100000 requested" in line
    assert "failing: 2 runs: 1 done, 1 failed" in out
