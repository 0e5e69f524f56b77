"""Sweeps through a real Slurm (``scripts/slurm-local.sh start`` runs a single-node one).

The tiny sweep as a job array: every run completes and is in MLflow under the
sweep's parent run. Then preemption for real: a running job is requeued with
``scontrol requeue`` after its generation 0, then signalled like at its time
limit (submitit's USR2 → ``checkpoint()`` → requeue); it resumes each time
from its last completed generation and redoes none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TINY
from tests.test_sweep import SMALL, metrics_of


def _slurm_unavailable() -> str | None:
    """Why these tests cannot run here, or None when a Slurm cluster answers with a node up."""
    for tool in ("sinfo", "sbatch", "srun", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            return f"Slurm is not available: {tool} not found (scripts/slurm-local.sh start runs a local one)"
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "Slurm is not available: sinfo does not respond"
    if p.returncode != 0:
        return f"Slurm is not available: sinfo failed ({(p.stderr.strip().splitlines() or ['?'])[0]})"
    states = {s.strip().rstrip("*~#") for s in p.stdout.split()}
    if not states & {"idle", "mixed", "allocated", "completing"}:
        return f"Slurm is not available: no node up (sinfo: {', '.join(sorted(states)) or 'no nodes'})"
    return None


REASON = _slurm_unavailable()
# CI starts a local Slurm and sets COLLAPSE_REQUIRE_SLURM=1: there a missing Slurm fails instead of skipping.
REQUIRED = os.environ.get("COLLAPSE_REQUIRE_SLURM") == "1"
pytestmark = [pytest.mark.slurm, pytest.mark.slow] + (
    [] if REQUIRED else [pytest.mark.skipif(REASON is not None, reason=REASON or "")])


@pytest.fixture(autouse=True)
def _slurm_is_up():
    if REASON is not None:
        pytest.fail(f"COLLAPSE_REQUIRE_SLURM=1 but {REASON}")


def slurm_sweep(folder: Path, name: str, root: Path, axes: dict, **overrides) -> Path:
    """A sweep file like experiments/sweeps/tiny_grid.yaml, smaller, under ``root``,
    for whatever partition the cluster has by default."""
    shipped = yaml.safe_load((REPO / "experiments" / "sweeps" / "tiny_grid.yaml").read_text())
    slurm = {**shipped["slurm"], "partition": None, "timeout_min": 30}
    base = {"recipe": str(TINY), "overrides": {**SMALL, "run.root": str(root),
                                               "tracking.uri": f"sqlite:///{root}/mlflow.db", **overrides}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": base, "axes": axes, "slurm": slurm}, sort_keys=False))
    return path


def test_tiny_sweep_as_a_slurm_job_array(shared_root, tmp_path, capsys):
    import mlflow

    from collapse.cli import main
    from collapse.sweep import launch, load_sweep, status

    shipped = yaml.safe_load((REPO / "experiments" / "sweeps" / "tiny_grid.yaml").read_text())
    path = slurm_sweep(tmp_path, "slurm_grid", shared_root, shipped["axes"])
    sweep = load_sweep(path)
    assert len(sweep.runs) == 4
    res = launch(sweep, "slurm", wait=True, poll_s=2, echo=lambda s: None)
    assert sorted(res.jobs) == sorted(r.name for r in sweep.runs)
    array = {j.split("_")[0] for j in res.jobs.values()}
    assert len(array) == 1  # one job array
    text, statuses = status(sweep)
    assert all(s.state == "done" for s in statuses), text
    assert main(["sweep", str(path), "--status"]) == 0
    out = capsys.readouterr().out
    for run in sweep.runs:
        assert f"{res.jobs[run.name]}" in out
    assert "slurm_grid: 4 runs: 4 done" in out

    mlflow.set_tracking_uri(f"sqlite:///{shared_root}/mlflow.db")
    df = mlflow.search_runs(experiment_names=["slurm_grid"])
    parent = df[df["tags.sweep.role"] == "parent"]
    assert len(parent) == 1 and parent["status"].iloc[0] == "FINISHED"
    children = df[df["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert len(children) == 4 and set(children["status"]) == {"FINISHED"}
    assert {(r["tags.axis.mix.regime"], r["tags.axis.run.seed"]) for _, r in children.iterrows()} == {
        (r.regime, str(r.seed)) for r in sweep.runs}
    client = mlflow.tracking.MlflowClient()
    for run in sweep.runs:
        st = json.loads((run.run_dir / "state.json").read_text())
        for g in range(2):
            for key, value in metrics_of(run.run_dir, g).items():
                assert [m.value for m in client.get_metric_history(st["mlflow_run_id"], key) if m.step == g] == [
                    pytest.approx(value)], (run.name, key, g)
    # launching again submits nothing
    again = launch(sweep, "slurm", wait=False, echo=lambda s: None)
    assert again.launched == [] and set(again.skipped.values()) == {"done"}


def _squeue(job: str) -> tuple[str, str] | None:
    p = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True, text=True, timeout=30)
    line = p.stdout.strip()
    return tuple(line.split("|", 1)) if p.returncode == 0 and line else None  # type: ignore[return-value]


def _wait(cond, what: str, timeout: float = 240.0, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def _release_when_requeued(job: str) -> None:
    """A requeued job waits about two minutes (BeginTime) before it may start
    again; start it now instead."""
    def pending():
        q = _squeue(job)
        return q if q and q[0] == "PENDING" else None

    _wait(pending, f"job {job} back in the queue", timeout=120)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, capture_output=True, timeout=30)


def _attempts(sweep, name: str) -> list[dict]:
    from collapse.sweep.state import attempts_path

    p = attempts_path(sweep.dir, name)
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def _done_mtimes(run_dir: Path) -> dict[str, int]:
    return {d.name: (d / "DONE").stat().st_mtime_ns for d in sorted(run_dir.glob("gen_*")) if (d / "DONE").exists()}


def test_preempted_and_timed_out_job_resumes_without_redoing_generations(shared_root, tmp_path):
    from mlflow.tracking import MlflowClient

    from collapse.sweep import launch, load_sweep, status

    path = slurm_sweep(tmp_path, "slurm_preempt", shared_root, {"grid": {"mix.regime": ["accumulate"]}, "seeds": [0]},
                       **{"run.generations": 3, "run.share_gen0": False, "train.epochs": 4})
    sweep = load_sweep(path)
    run = sweep.runs[0]
    res = launch(sweep, "slurm", wait=False, echo=lambda s: None)
    job = res.jobs[run.name]

    # 1. preemption: requeued by the scheduler once generation 0 is done
    _wait(lambda: (run.run_dir / "gen_000" / "DONE").exists(), "generation 0")
    assert _squeue(job)[0] == "RUNNING"
    seen = _done_mtimes(run.run_dir)
    subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True, timeout=30)
    _release_when_requeued(job)

    # 2. time limit: submitit's signal (USR2) → SweepJob.checkpoint() → requeued by submitit
    def second_attempt_progressed():
        starts = [a for a in _attempts(sweep, run.name) if a["outcome"] == "started"]
        if len(starts) < 2:
            return None
        done = _done_mtimes(run.run_dir)
        return done if len(done) > starts[-1]["resumed_from"] else None

    progressed = _wait(second_attempt_progressed, "a generation of the second attempt")
    signalled = False
    if len(progressed) < run.generations + 1 and _squeue(job) and _squeue(job)[0] == "RUNNING":
        seen = {**seen, **progressed}
        subprocess.run(["scancel", "--signal=USR2", job], check=True, capture_output=True, timeout=30)
        signalled = True
        _release_when_requeued(job)

    _wait(lambda: _squeue(job) is None, f"job {job} to leave the queue", timeout=300, poll=1.0)
    text, statuses = status(sweep)
    assert statuses[0].state == "done", text

    starts = [a for a in _attempts(sweep, run.name) if a["outcome"] == "started"]
    assert len(starts) == 2 + signalled, starts
    assert starts[0]["resumed_from"] == 0 and starts[0]["restart"] == 0
    for before, after in zip(starts, starts[1:]):
        assert after["restart"] > before["restart"] and after["resumed_from"] >= max(1, before["resumed_from"])
    final = _done_mtimes(run.run_dir)
    for gen, mtime in seen.items():  # nothing finished was redone
        assert final[gen] == mtime, gen
    assert sorted(final) == [f"gen_{g:03d}" for g in range(run.generations + 1)]
    if signalled:
        logs = "".join(p.read_text() for p in (sweep.dir / "_slurm").rglob(f"{job}_*_log.*"))
        assert "Calling checkpoint method" in logs and "Requeued job" in logs
    state = json.loads((run.run_dir / "state.json").read_text())
    client = MlflowClient(f"sqlite:///{shared_root}/mlflow.db")
    assert client.get_run(state["mlflow_run_id"]).info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(state["mlflow_run_id"], "test_ce"))
    assert steps == list(range(run.generations + 1))  # one MLflow run, each generation logged once
    for g in range(run.generations + 1):
        assert metrics_of(run.run_dir, g)["test_ce"] > 0
