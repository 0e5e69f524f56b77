"""The sweep's modules by job, without training: sweep.json bookkeeping and run statuses
(collapse.sweep.state), squeue and sacct answers (collapse.sweep.slurm), the local pool's
grouping (collapse.sweep.local), the worker's run lock, and the sweep/results import layering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sweep import write_sweep


@pytest.fixture
def sweep(tmp_path):
    from collapse.sweep import load_sweep

    return load_sweep(write_sweep(tmp_path, "st", tmp_path / "root", grid={"mix.regime": ["replace", "accumulate"]},
                                  **{"tracking.enabled": False}))


# ------------------------------------------------------------- sweep.json

def test_sweep_json_merges_mappings_but_replaces_overrides_and_forgets_jobs(sweep):
    from collapse.sweep.state import forget_jobs, read_sweep_state, sweep_json, update_sweep_state

    assert read_sweep_state(sweep) == {} and not sweep_json(sweep).exists()
    update_sweep_state(sweep, jobs={"replace_s0": "7_0"}, overrides={"train.lr": 0.1, "run.generations": 3})
    update_sweep_state(sweep, jobs={"accumulate_s0": "7_1"}, overrides={"train.lr": 0.2})
    st = read_sweep_state(sweep)
    assert st["jobs"] == {"replace_s0": "7_0", "accumulate_s0": "7_1"}  # merged
    assert st["overrides"] == {"train.lr": 0.2}  # replaced whole: a key dropped on relaunch is gone
    forget_jobs(sweep, ["replace_s0"])
    assert read_sweep_state(sweep)["jobs"] == {"accumulate_s0": "7_1"}


def test_default_command_gives_the_overrides_back(sweep):
    from collapse.sweep.state import default_command, override_args

    assert override_args({"b": [1, 2], "a": None, "c": 0.5}) == ['a=null', 'b=[1, 2]', 'c=0.5']
    assert default_command(sweep, "slurm", 3) == f"collapse sweep {sweep.path} --executor slurm --parallel 3"


# ----------------------------------------------------------- run statuses

def _gen_done(run_dir: Path, g: int) -> None:
    (run_dir / f"gen_{g:03d}").mkdir(parents=True, exist_ok=True)
    (run_dir / f"gen_{g:03d}" / "DONE").write_text("")


def test_run_statuses_from_disk_locks_and_error_files(sweep):
    from collapse.locks import FileLock
    from collapse.sweep.state import error_path, lock_path, run_statuses

    replace, accumulate = sweep.runs
    assert [s.state for s in run_statuses(sweep)] == ["pending", "pending"]
    _gen_done(replace.run_dir, 0)  # a generation on disk before state.json says so
    err = error_path(sweep.dir, accumulate.name)
    err.parent.mkdir(parents=True)
    err.write_text("ValueError: bad\n\ntraceback")
    a, b = run_statuses(sweep)
    assert (a.state, a.last_completed, a.progress) == ("incomplete", 0, "1/2")
    assert (b.state, b.detail) == ("failed", "ValueError: bad")
    lock = FileLock(lock_path(sweep.dir, accumulate.name), {"job": "9_1"}).acquire()
    try:
        b = run_statuses(sweep)[1]
        assert b.state == "running" and f"pid {os.getpid()}" in b.detail and "job 9_1" in b.detail
    finally:
        lock.release()
    _gen_done(replace.run_dir, 1)
    (replace.run_dir / "state.json").write_text(json.dumps({"status": "done", "last_completed_generation": 1}))
    a = run_statuses(sweep)[0]
    assert a.state == "done" and a.describe() == "done (2 generations)"


def test_a_slurm_job_that_ended_before_its_run_started_is_failed(sweep, monkeypatch):
    from collapse.sweep import state

    monkeypatch.setattr(state, "squeue_states", lambda ids: {})  # the queue no longer knows the job
    monkeypatch.setattr(state, "sacct_states", lambda ids: {"5": "CANCELLED"})
    state.update_sweep_state(sweep, jobs={sweep.runs[0].name: "5"})
    a, b = state.run_statuses(sweep)
    assert a.state == "failed" and a.detail.startswith("job 5 cancelled before the run started")
    assert b.state == "pending" and b.job is None
    monkeypatch.setattr(state, "squeue_states", lambda ids: {"5": ("PENDING", "Resources")})
    a = state.run_statuses(sweep)[0]
    assert (a.state, a.detail) == ("queued", "job 5 pending, Resources")


# ------------------------------------------------------------------ Slurm

def _fake_command(folder: Path, name: str, stdout: str, code: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    p = folder / name
    p.write_text(f"#!/bin/sh\nprintf '%s' '{stdout}'\nexit {code}\n")
    p.chmod(0o755)


def test_squeue_and_sacct_answers_are_parsed(tmp_path, monkeypatch):
    from collapse.sweep.slurm import sacct_states, squeue_states

    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert squeue_states(["12_0"]) is None and sacct_states(["12"]) == {}  # no Slurm here
    assert squeue_states([]) == {}
    _fake_command(tmp_path / "bin", "squeue", "12_0|PENDING|Priority\n12_1|RUNNING|None\nnoise\n")
    _fake_command(tmp_path / "bin", "sacct", "12_0|CANCELLED by 1000\n12_1|\n")
    assert squeue_states(["12_0", "12_1"]) == {"12_0": ("PENDING", "Priority"), "12_1": ("RUNNING", "None")}
    assert sacct_states(["12_0"]) == {"12_0": "CANCELLED", "12_1": ""}
    _fake_command(tmp_path / "bin", "squeue", "", code=1)  # slurmctld down: not an empty queue
    assert squeue_states(["12_0"]) is None


# ------------------------------------------------------------ local pool

def test_runs_share_generation_0_when_only_the_mix_differs(sweep):
    from collapse.sweep.local import default_parallel, gen0_key

    replace, accumulate = (r.config for r in sweep.runs)
    assert gen0_key(replace) is not None and gen0_key(replace) == gen0_key(accumulate)
    other_seed = json.loads(json.dumps(replace))
    other_seed["run"]["seed"] += 1
    assert gen0_key(other_seed) != gen0_key(replace)
    replace["run"]["share_gen0"] = False
    assert gen0_key(replace) is None
    assert default_parallel(sweep) == max(1, len(os.sched_getaffinity(0)) // max(1, replace["run"]["threads"]))


# ---------------------------------------------------------- worker's lock

def test_a_run_held_elsewhere_is_busy_and_names_its_holder(sweep):
    from collapse.locks import FileLock
    from collapse.sweep.launching import run_specs
    from collapse.sweep.state import lock_path
    from collapse.sweep.worker import RunBusy, run_spec

    (spec,) = run_specs(sweep, sweep.runs[:1], None, None)
    held = FileLock(lock_path(sweep.dir, spec.name), {"job": "3_0"}).acquire()
    try:
        with pytest.raises(RunBusy, match=f"pid {os.getpid()} on .*, job 3_0"):
            run_spec(spec)
    finally:
        held.release()
    assert not spec.run_dir.exists()  # refused before touching the run


# --------------------------------------------------------------- layering

def test_reading_results_does_not_import_the_launcher_or_the_worker(sweep):
    """collapse.load_runs, collapse.report and collapse findings read run directories, sweep.json
    and the sweep spec only: neither the launcher, the worker nor submitit comes with them."""
    code = ("import sys; import collapse.reporting, collapse.findings; "
            "from collapse.sweep.load import resolve_source, sweep_tracking_uri; "
            "from collapse.sweep.spec import load_sweep; "
            "resolve_source(sys.argv[1]); sweep_tracking_uri(load_sweep(sys.argv[1])); "
            "print(sorted(m for m in ('collapse.sweep.launching', 'collapse.sweep.launcher', 'collapse.sweep.worker', "
            "'collapse.sweep.local', 'collapse.experiment', 'submitit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(sweep.path)], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
