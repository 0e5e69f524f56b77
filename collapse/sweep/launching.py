"""Launching a sweep: which of its runs to start, with what config, through which executor
(:func:`launch`, also ``collapse.sweep.launch``).

A launch holds the sweep's ``.lock`` (one launcher per sweep at a time),
refuses command-line overrides other than those the sweep was launched with,
skips runs that are done or in progress (:func:`collapse.sweep.state.run_statuses`),
opens the MLflow parent run (:mod:`collapse.sweep.parent_run`) and hands the
rest to local worker processes (:mod:`collapse.sweep.local`) or to a Slurm
job array (:mod:`collapse.sweep.slurm`). Every launch is recorded in
``sweep.json`` (:mod:`collapse.sweep.state`).

Launching is idempotent: runs whose ``state.json`` says done are skipped,
runs held by a live process or queued in Slurm are left alone, the others
start (and resume from their last completed generation).
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any, Callable, Iterable

from collapse.errors import CollapseError
from collapse.experiment import _RESUMABLE_KEYS
from collapse.locks import FileLock
from collapse.sweep.local import default_parallel, launch_local
from collapse.sweep.parent_run import close_parent_run, ensure_parent_run, finish_parent_run, tracking_uri
from collapse.sweep.slurm import squeue_states, submit_array
from collapse.sweep.spec import SlurmSettings, Sweep, SweepRun
from collapse.sweep.state import (LaunchResult, RunStatus, default_command, forget_jobs, overrides_text,
                                  read_sweep_state, record_attempt, record_launch, run_statuses, update_sweep_state)
from collapse.sweep.worker import RunSpec, SweepJob


def check_overrides(sweep: Sweep) -> dict[str, Any] | None:
    """Refuse (one line) a launch whose command-line overrides differ from those the sweep was
    launched with, as a run refuses a changed config: keys that may change on resume
    (``run.generations``, ``run.threads``, ``tracking.*`` ...) may differ. Returns the
    recorded overrides (None: never launched)."""
    st = read_sweep_state(sweep)
    if "launched" not in st:
        return None
    recorded = st.get("overrides") or {}
    resumable = {f"{a}.{b}" for a, b in _RESUMABLE_KEYS}
    fixed_then = {k: v for k, v in recorded.items() if k not in resumable}
    fixed_now = {k: v for k, v in sweep.overrides.items() if k not in resumable}
    if fixed_then != fixed_now:
        key = sorted(k for k in set(fixed_then) | set(fixed_now) if fixed_then.get(k, "<unset>") != fixed_now.get(k, "<unset>"))[0]
        then = f"{key}={fixed_then[key]}" if key in fixed_then else f"no {key}"
        now = f"{key}={fixed_now[key]}" if key in fixed_now else f"no {key}"
        raise CollapseError(f"sweep {sweep.name} ({sweep.dir}) was launched with overrides "
                            f"{overrides_text(recorded)} ({then} there, {now} now); relaunch with the same "
                            "overrides, or give the changed sweep its own run.root")
    return recorded


def tag_value(v: Any) -> str:
    """An axis value as a tag or a table cell (JSON for lists and mappings)."""
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def run_specs(sweep: Sweep, runs: Iterable[SweepRun], uri: str | None, parent: str | None,
              threads: int | None = None) -> list[RunSpec]:
    """The config each worker runs: the sweep's tracking store, parent run and axis tags."""
    specs = []
    for r in runs:
        cfg = json.loads(json.dumps(r.config))  # a deep copy of plain data
        tr = cfg["tracking"]
        tr["uri"] = uri
        tr["enabled"] = uri is not None
        tr["parent_run_id"] = parent
        tr["tags"] = [f"sweep={sweep.name}"] + [f"axis.{k}={tag_value(v)}" for k, v in r.axes.items()]
        cfg["run"]["progress"] = False
        if threads is not None:
            cfg["run"]["threads"] = threads
        specs.append(RunSpec(sweep=sweep.name, name=r.name, config=cfg, sweep_dir=str(sweep.dir), axes=r.axes))
    return specs


def to_launch(sweep: Sweep, statuses: list[RunStatus]) -> tuple[list[SweepRun], dict[str, str]]:
    """``(runs to start, {run: why skipped})``: done, running and queued runs are left alone."""
    todo, skipped = [], {}
    by_name = {s.name: s for s in statuses}
    for r in sweep.runs:
        s = by_name[r.name]
        if s.state == "done":
            skipped[r.name] = "done"
        elif s.state == "running":
            skipped[r.name] = f"running ({s.detail})"
        elif s.state == "queued":
            skipped[r.name] = f"queued ({s.detail})"
        else:
            todo.append(r)
    return todo, skipped


def launch(sweep: Sweep, executor: str = "local", *, parallel: int | None = None, slurm: SlurmSettings | None = None,
           wait: bool = True, echo: Callable[[str], None] = print, poll_s: float = 5.0,
           command: str | None = None) -> LaunchResult:
    """Launch the runs of ``sweep`` not done yet. ``local``: ``parallel`` worker
    processes on this machine, returns when they have ended. ``slurm``: one job
    array through submitit; with ``wait`` returns when the jobs have left the queue.
    Each launch is recorded in ``sweep.json`` (``command``, default: the
    equivalent ``collapse sweep`` line; start, end, wall time, outcome)."""
    if executor not in ("local", "slurm"):
        raise CollapseError(f"collapse sweep: --executor: expected local or slurm, got {executor!r}")
    if parallel is not None and parallel < 1:
        raise CollapseError(f"collapse sweep: --parallel: expected >= 1, got {parallel}")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise CollapseError("collapse sweep --executor slurm: sbatch not found (not on a Slurm cluster; "
                            "scripts/slurm-local.sh start runs one on this machine)")
    # One launcher per sweep at a time: a second one is refused with the holder's pid and host.
    lock = FileLock(sweep.dir / ".lock").acquire(what=f"sweep {sweep.name} ({sweep.dir})")
    try:  # other overrides than the sweep was launched with: refused before anything, recorded nowhere
        recorded = check_overrides(sweep)
    except BaseException:
        lock.release()
        raise
    if recorded is not None and recorded != sweep.overrides:
        echo(f"{sweep.name}: overrides {overrides_text(sweep.overrides)} (last launch: {overrides_text(recorded)})")
    started = time.time()
    outcome, result = "error", None
    try:
        result = _launch(sweep, executor, parallel=parallel, slurm=slurm, wait=wait, echo=echo, poll_s=poll_s)
        outcome = "ok" if result.ok else "failed"
        return result
    except KeyboardInterrupt:
        outcome = "interrupted"
        close_parent_run(sweep, "KILLED")
        raise
    finally:
        try:
            record_attempt(sweep, command or default_command(sweep, executor, parallel), executor, started, outcome,
                           result, waited=wait)
        finally:
            lock.release()


def _launch(sweep: Sweep, executor: str, *, parallel: int | None, slurm: SlurmSettings | None, wait: bool,
            echo: Callable[[str], None], poll_s: float) -> LaunchResult:
    statuses = run_statuses(sweep)
    todo, skipped = to_launch(sweep, statuses)
    uri = tracking_uri(sweep)
    st = read_sweep_state(sweep)
    parent = st.get("parent_run_id") if st.get("tracking_uri") == uri else None
    if todo:
        parent = ensure_parent_run(sweep, uri)
    record_launch(sweep, executor, uri, parent)
    for name, why in skipped.items():
        echo(f"{name}: skipped, {why}")
    if not todo:
        echo(f"{sweep.name}: nothing to launch ({len(skipped)} runs done or in progress)")
        finish_parent_run(sweep, statuses)
        return LaunchResult([], skipped, {}, {})
    if executor == "local":
        forget_jobs(sweep, [r.name for r in todo])  # their Slurm jobs, if any, are history
        n = parallel or default_parallel(sweep)
        threads = None
        if n > 1:  # parallel runs each get one thread unless the sweep says otherwise
            threads = max(1, max(r.config["run"]["threads"] for r in todo))
        specs = run_specs(sweep, todo, uri, parent, threads=threads)
        result = launch_local(sweep, specs, min(n, len(specs)), echo)
        result.skipped.update(skipped)
    else:
        settings = slurm or sweep.slurm
        specs = run_specs(sweep, todo, uri, parent, threads=settings.cpus_per_task)
        result = _launch_slurm(sweep, specs, settings, echo)
        result.skipped.update(skipped)
        if wait and result.jobs:
            wait_slurm(sweep, result.jobs, echo=echo, poll_s=poll_s)
    if executor == "local" or wait:
        finish_parent_run(sweep, run_statuses(sweep))
    return result


def _launch_slurm(sweep: Sweep, specs: list[RunSpec], s: SlurmSettings, echo: Callable[[str], None]) -> LaunchResult:
    """Submit ``specs`` as one job array and record their job ids in ``sweep.json``."""
    job_ids = submit_array(sweep.dir / "_slurm", f"collapse-{sweep.name}", s, [SweepJob(spec) for spec in specs])
    ids = {spec.name: job_id for spec, job_id in zip(specs, job_ids)}
    update_sweep_state(sweep, jobs=ids)
    for spec in specs:
        echo(f"{spec.name}: submitted as job {ids[spec.name]}")
    echo(f"{sweep.name}: {len(specs)} runs submitted as one job array "
         f"({ids[specs[0].name].split('_')[0]}); `collapse sweep {sweep.path} --status` follows them")
    return LaunchResult([s.name for s in specs], {}, {}, ids)


def wait_slurm(sweep: Sweep, jobs: dict[str, str], *, echo: Callable[[str], None] = print, poll_s: float = 5.0,
               timeout_s: float | None = None) -> list[RunStatus]:
    """Poll until none of ``jobs`` is queued or running; echo state changes."""
    t0 = time.time()
    seen: dict[str, str] = {}
    misses = 0
    while True:
        statuses = run_statuses(sweep)
        for s in statuses:
            if s.name in jobs and seen.get(s.name) != s.describe():
                seen[s.name] = s.describe()
                echo(f"{s.name}: {s.describe()}")
        q = squeue_states(jobs.values())
        if q is None:
            misses += 1
            if misses >= 12:
                raise CollapseError("Slurm stopped answering (squeue) while waiting for the sweep's jobs")
        else:
            misses = 0
            if not any(j in q for j in jobs.values()):
                return run_statuses(sweep)
        if timeout_s is not None and time.time() - t0 > timeout_s:
            raise CollapseError(f"sweep {sweep.name}: jobs still queued or running after {timeout_s:.0f}s")
        time.sleep(poll_s)

