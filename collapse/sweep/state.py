"""A sweep's bookkeeping and the state of its runs, read from disk.

The sweep folder ``<run.root>/<sweep name>/`` holds the run directories and
the sweep's bookkeeping::

    sweep.json            name, file, tracking URI, MLflow parent run id, Slurm job id of each run,
                          and every launch: its command, start, end and wall time (collapse findings reads them)
    sweep.yaml            the sweep file as last launched
    _logs/<run>.log       output of local workers
    _logs/<run>.attempts.jsonl   one line per attempt (start, resume point, outcome)
    _errors/<run>.txt     the error of a failed run (removed when it next starts)
    _locks/<run>.lock     held by the process running the run
    .lock                 held by the launcher (one per sweep at a time)
    _slurm/               submitit's folder: job scripts, pickles, Slurm logs

This module reads and writes ``sweep.json`` and tells each run's state
(:func:`run_statuses`) from its run directory, its lock, its error file and
Slurm. It imports neither the launcher nor the worker, so reading results
(:mod:`collapse.sweep.load`, :mod:`collapse.findings`) does not pull in the
code that runs experiments.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collapse.errors import CollapseError
from collapse.locks import holder_text, is_locked
from collapse.rundir import RunDirReader
from collapse.sweep.slurm import sacct_states, squeue_states
from collapse.sweep.spec import Sweep
from collapse.tracking import client, read_json, write_json_atomic

log = logging.getLogger("collapse")


# ----------------------------------------------------------------- sweep.json

def sweep_json(sweep: Sweep) -> Path:
    return sweep.dir / "sweep.json"


def read_sweep_state(sweep: Sweep) -> dict[str, Any]:
    """``sweep.json`` (empty when the sweep was never launched)."""
    p = sweep_json(sweep)
    return read_json(p) if p.exists() else {}


def update_sweep_state(sweep: Sweep, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into ``sweep.json`` (a dict value updates the recorded dict,
    except ``overrides``, which is replaced whole) and write it atomically."""
    sweep.dir.mkdir(parents=True, exist_ok=True)
    st = read_sweep_state(sweep)
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(st.get(k), dict) and k != "overrides":
            st[k].update(v)
        else:
            st[k] = v
    write_json_atomic(sweep_json(sweep), st)
    return st


def forget_jobs(sweep: Sweep, names: list[str]) -> None:
    """Drop the recorded Slurm jobs of these runs (they run locally now)."""
    st = read_sweep_state(sweep)
    if any(n in st.get("jobs", {}) for n in names):
        st["jobs"] = {k: v for k, v in st["jobs"].items() if k not in names}
        write_json_atomic(sweep_json(sweep), st)


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``key=value`` arguments that give these overrides back (sorted by key)."""
    return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) or v is None else v}" for k, v in sorted(overrides.items())]


def overrides_text(overrides: dict[str, Any]) -> str:
    return " ".join(override_args(overrides)) or "none"


def default_command(sweep: Sweep, executor: str, parallel: int | None) -> str:
    """The ``collapse sweep`` command line that launches ``sweep`` this way (for launches from Python)."""
    args = ["collapse", "sweep", str(sweep.path)]
    if executor != "local":
        args += ["--executor", executor]
    if parallel is not None:
        args += ["--parallel", str(parallel)]
    if sweep.overrides:
        args += override_args(sweep.overrides)
    return shlex.join(args)


@dataclass
class LaunchResult:
    """What one launch did with each run it was given."""

    launched: list[str]
    skipped: dict[str, str]  # run -> why
    failed: dict[str, str]  # run -> error (local) / submission problem
    jobs: dict[str, str]  # run -> Slurm job id

    @property
    def ok(self) -> bool:
        return not self.failed


def record_attempt(sweep: Sweep, command: str, executor: str, started: float, outcome: str,
                   result: LaunchResult | None, waited: bool) -> None:
    """Append one launch to ``sweep.json``'s ``launches``: what ran, when, for how long.
    A Slurm launch that did not wait has no end: its wall time is unknown."""
    ended = time.time()
    measured = executor == "local" or waited
    entry = {"command": command, "executor": executor, "outcome": outcome,
             "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
             "ended": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ended)) if measured else None,
             "wall_s": round(ended - started, 3) if measured else None,
             "launched": len(result.launched) if result is not None else None}
    try:
        st = read_sweep_state(sweep)
        st["launches"] = [*st.get("launches", []), entry]
        sweep.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(sweep_json(sweep), st)
    except (OSError, CollapseError) as e:  # the runs matter more than their bookkeeping
        log.warning("sweep %s: could not record the launch in sweep.json: %s", sweep.name, e)


def record_launch(sweep: Sweep, executor: str, uri: str | None, parent: str | None) -> None:
    """What this launch is: the sweep, its runs and axes, tracking store and parent run; and
    the sweep file beside it (``sweep.yaml``)."""
    update_sweep_state(sweep, name=sweep.name, file=str(sweep.path), root=str(sweep.root), executor=executor,
                       tracking_uri=uri, parent_run_id=parent, axes=sweep.axis_keys, overrides=sweep.overrides,
                       runs={r.name: {"axes": r.axes, "run_dir": str(r.run_dir)} for r in sweep.runs},
                       launched=time.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        shutil.copyfile(sweep.path, sweep.dir / "sweep.yaml")
    except shutil.SameFileError:
        pass


# ------------------------------------------------------------ one run's files

def lock_path(sweep_dir: str | Path, name: str) -> Path:
    return Path(sweep_dir) / "_locks" / f"{name}.lock"


def error_path(sweep_dir: str | Path, name: str) -> Path:
    return Path(sweep_dir) / "_errors" / f"{name}.txt"


def attempts_path(sweep_dir: str | Path, name: str) -> Path:
    return Path(sweep_dir) / "_logs" / f"{name}.attempts.jsonl"


def read_state(run_dir: Path) -> dict[str, Any]:
    """The run directory's ``state.json`` (empty when missing or unreadable), read by its owner."""
    return RunDirReader(run_dir).state()


def is_done(state: dict[str, Any], generations: int) -> bool:
    """Finished, with every generation the sweep asks for (it may have grown since)
    and, when mirrored, its MLflow run closed: a run killed after its last
    generation but while drawing figures or closing the mirror is not done yet."""
    if state.get("status") != "done" or int(state.get("last_completed_generation", -1)) < generations:
        return False
    return mirror_status(state) in (None, "FINISHED")


def mirror_status(state: dict[str, Any]) -> str | None:
    """Status of the run's MLflow run (None: not mirrored, or the store does not answer)."""
    run_id, uri = state.get("mlflow_run_id"), state.get("tracking_uri")
    if not run_id or not uri:
        return None
    try:
        return client(uri, create=False).get_run(run_id).info.status  # a status check creates no store
    except Exception:
        return None


def done_prefix(run_dir: Path, generations: int) -> int:
    """How many generations 0, 1, ... (at most ``generations`` + 1) in a row have ``DONE``."""
    return min(RunDirReader(run_dir).done_prefix() + 1, generations + 1)


def first_line_of(path: Path) -> str:
    try:
        return path.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return "unknown error"


# --------------------------------------------------------------- run statuses

@dataclass
class RunStatus:
    name: str
    state: str  # pending | queued | running | incomplete | done | failed
    last_completed: int  # last completed generation, -1 = none
    generations: int  # N: the run has generations 0..N
    job: str | None = None
    detail: str = ""

    @property
    def progress(self) -> str:
        return f"{self.last_completed + 1}/{self.generations + 1}"

    def describe(self) -> str:
        k, n = self.last_completed, self.generations
        if self.state == "done":
            return f"done ({n + 1} generations)"
        if self.state == "running":
            return f"running: generation {k + 1} of {n}" + (f" ({self.detail})" if self.detail else "")
        if self.state == "queued":
            return "pending: queued" + (f" ({self.detail})" if self.detail else "")
        if self.state == "failed":
            return f"failed: {self.detail}"
        if self.state == "incomplete":
            where = f"stopped after generation {k} of {n}" if k >= 0 else "stopped before generation 0 finished"
            return where + "; launch again to resume" + (f" ({self.detail})" if self.detail else "")
        return "pending" + (f" ({self.detail})" if self.detail else "")


def run_statuses(sweep: Sweep, *, scheduler: bool = True) -> list[RunStatus]:
    """Each run's state from its run directory, its lock, its error file and
    (for Slurm runs) squeue, then sacct where accounting exists."""
    jobs: dict[str, str] = read_sweep_state(sweep).get("jobs", {}) if scheduler else {}
    queue = squeue_states(jobs.values()) if jobs else {}
    finals = sacct_states(jobs.values()) if jobs and queue is not None else {}
    out = []
    for r in sweep.runs:
        st = read_state(r.run_dir)
        n = r.generations
        # The generations on disk count too: one restored from the shared cache is finished before state.json says so.
        last = max(int(st.get("last_completed_generation", -1)), done_prefix(r.run_dir, n) - 1)
        job = jobs.get(r.name)
        rs = RunStatus(r.name, "pending", last, n, job)
        err = error_path(sweep.dir, r.name)
        if is_done(st, n):
            rs.state = "done"
        elif st.get("status") == "done" and last >= n and not is_locked(lock_path(sweep.dir, r.name)):
            rs.state, rs.detail = "incomplete", "interrupted while closing its MLflow run"
        elif is_locked(lock_path(sweep.dir, r.name)):
            rs.state = "running"
            rs.detail = holder_text(lock_path(sweep.dir, r.name))
        elif is_locked(r.run_dir / ".lock"):  # a `collapse run` on the same run directory
            rs.state = "running"
            rs.detail = holder_text(r.run_dir / ".lock")
        elif job and queue and job in queue:
            state, reason = queue[job]
            if state in ("RUNNING", "CONFIGURING"):  # started, still loading before it takes the lock
                rs.state, rs.detail = "running", f"job {job} starting"
            elif state in ("COMPLETING", "STOPPED", "SIGNALING"):
                rs.state, rs.detail = "running", f"job {job} {state.lower()}"
            else:
                rs.state = "queued"
                rs.detail = f"job {job} {state.lower()}" + (f", {reason}" if reason and reason != "None" else "")
        elif err.exists():
            rs.state, rs.detail = "failed", first_line_of(err)
        elif last >= 0 or st:
            rs.state = "incomplete"
            if job:
                final = finals.get(job)
                rs.detail = f"job {job} " + (final.lower() if final else "ended")
        elif job and queue is None:
            rs.detail = f"job {job}; Slurm does not answer"
        elif job:
            rs.state = "failed"
            final = finals.get(job)
            rs.detail = f"job {job} {final.lower() if final else 'ended'} before the run started; see {sweep.dir / '_slurm'}"
        out.append(rs)
    return out
