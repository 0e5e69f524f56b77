"""Launching a sweep (local processes or a Slurm job array) and reading its state.

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

Launching is idempotent: runs whose ``state.json`` says done are skipped,
runs held by a live process or queued in Slurm are left alone, the others
start (and resume from their last completed generation).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from collapse.errors import CollapseError
from collapse.locks import FileLock
from collapse.sweep.spec import SlurmSettings, Sweep, SweepRun
from collapse.sweep.worker import EXIT_BUSY, RunSpec, error_path, holder, is_done, is_locked, lock_path, read_state
from collapse.tracking import read_json, write_json_atomic

log = logging.getLogger("collapse")

# Imported once by the local launcher's fork server, so each worker starts in
# milliseconds instead of paying torch / transformers / mlflow imports again.
PRELOAD = ["collapse.sweep._preload"]


# --------------------------------------------------------------- bookkeeping

def sweep_json(sweep: Sweep) -> Path:
    return sweep.dir / "sweep.json"


def read_sweep_state(sweep: Sweep) -> dict[str, Any]:
    p = sweep_json(sweep)
    return read_json(p) if p.exists() else {}


def _update_sweep_state(sweep: Sweep, **changes: Any) -> dict[str, Any]:
    sweep.dir.mkdir(parents=True, exist_ok=True)
    st = read_sweep_state(sweep)
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(st.get(k), dict) and k != "overrides":
            st[k].update(v)
        else:
            st[k] = v
    write_json_atomic(sweep_json(sweep), st)
    return st


def _forget_jobs(sweep: Sweep, names: list[str]) -> None:
    st = read_sweep_state(sweep)
    if any(n in st.get("jobs", {}) for n in names):
        st["jobs"] = {k: v for k, v in st["jobs"].items() if k not in names}
        write_json_atomic(sweep_json(sweep), st)


def default_command(sweep: Sweep, executor: str, parallel: int | None) -> str:
    """The ``collapse sweep`` command line that launches ``sweep`` this way (for launches from Python)."""
    import shlex

    args = ["collapse", "sweep", str(sweep.path)]
    if executor != "local":
        args += ["--executor", executor]
    if parallel is not None:
        args += ["--parallel", str(parallel)]
    if sweep.overrides:
        args += _override_args(sweep.overrides)
    return shlex.join(args)


def _record_attempt(sweep: Sweep, command: str, executor: str, started: float, outcome: str,
                    result: "LaunchResult | None", waited: bool) -> None:
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


def _record_launch(sweep: Sweep, executor: str, uri: str | None, parent: str | None) -> None:
    _update_sweep_state(sweep, name=sweep.name, file=str(sweep.path), root=str(sweep.root), executor=executor,
                        tracking_uri=uri, parent_run_id=parent, axes=sweep.axis_keys, overrides=sweep.overrides,
                        runs={r.name: {"axes": r.axes, "run_dir": str(r.run_dir)} for r in sweep.runs},
                        launched=time.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        shutil.copyfile(sweep.path, sweep.dir / "sweep.yaml")
    except shutil.SameFileError:
        pass


# ------------------------------------------------------------------ tracking

def tracking_uri(sweep: Sweep) -> str | None:
    if not sweep.tracking_enabled:
        return None
    from collapse.tracking import resolve_uri

    return resolve_uri(sweep.tracking_uri, sweep.root)


def _override_args(overrides: dict[str, Any]) -> list[str]:
    """``key=value`` arguments that give these overrides back (sorted by key)."""
    return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) or v is None else v}" for k, v in sorted(overrides.items())]


def _overrides_text(overrides: dict[str, Any]) -> str:
    return " ".join(_override_args(overrides)) or "none"


def check_overrides(sweep: Sweep) -> dict[str, Any] | None:
    """Refuse (one line) a launch whose command-line overrides differ from those the sweep was
    launched with, as a run refuses a changed config: keys that may change on resume
    (``run.generations``, ``run.threads``, ``tracking.*`` ...) may differ. Returns the
    recorded overrides (None: never launched)."""
    st = read_sweep_state(sweep)
    if "launched" not in st:
        return None
    recorded = st.get("overrides") or {}
    from collapse.experiment import _RESUMABLE_KEYS

    resumable = {f"{a}.{b}" for a, b in _RESUMABLE_KEYS}
    fixed_then = {k: v for k, v in recorded.items() if k not in resumable}
    fixed_now = {k: v for k, v in sweep.overrides.items() if k not in resumable}
    if fixed_then != fixed_now:
        key = sorted(k for k in set(fixed_then) | set(fixed_now) if fixed_then.get(k, "<unset>") != fixed_now.get(k, "<unset>"))[0]
        then = f"{key}={fixed_then[key]}" if key in fixed_then else f"no {key}"
        now = f"{key}={fixed_now[key]}" if key in fixed_now else f"no {key}"
        raise CollapseError(f"sweep {sweep.name} ({sweep.dir}) was launched with overrides "
                            f"{_overrides_text(recorded)} ({then} there, {now} now); relaunch with the same "
                            "overrides, or give the changed sweep its own run.root")
    return recorded


def ensure_parent_run(sweep: Sweep, uri: str | None) -> str | None:
    """The sweep's MLflow parent run: created once (experiment = sweep name),
    reused on every later launch of the same sweep and store."""
    if uri is None:
        return None
    from collapse.tracking import _retry, client, environment_tags, get_or_create_experiment

    c = client(uri)
    exp_id = get_or_create_experiment(uri, sweep.name, sweep.root / "mlartifacts")
    st = read_sweep_state(sweep)
    run_id = st.get("parent_run_id") if st.get("tracking_uri") == uri else None
    if run_id:
        try:
            c.get_run(run_id)
            _retry(lambda: c.update_run(run_id, status="RUNNING"), "reopen sweep run")
            _log_overrides(c, run_id, sweep)
            return run_id
        except Exception:
            run_id = None  # the store was reset: a new parent
    sweep_dir = str(sweep.dir.resolve())
    found = _retry(lambda: c.search_runs([exp_id], f"tags.`sweep.role` = 'parent' and tags.`sweep.dir` = '{sweep_dir}'",
                                         order_by=["attributes.start_time ASC"], max_results=1), "find sweep run")
    if found:  # created by an earlier launch whose sweep.json did not record it (killed, or another store)
        run_id = found[0].info.run_id
        _retry(lambda: c.update_run(run_id, status="RUNNING"), "reopen sweep run")
        _log_overrides(c, run_id, sweep)
        _update_sweep_state(sweep, tracking_uri=uri, parent_run_id=run_id)
        return run_id
    tags = {"mlflow.runName": sweep.name, "sweep": sweep.name, "sweep.role": "parent", "sweep.dir": sweep_dir,
            "sweep.file": str(sweep.path),
            "sweep.axes": ",".join(sweep.axis_keys), "sweep.runs": str(len(sweep.runs)), **environment_tags()}
    if sweep.description:
        tags["mlflow.note.content"] = sweep.description
    run = _retry(lambda: c.create_run(exp_id, run_name=sweep.name, tags=tags), "create sweep run")
    run_id = run.info.run_id
    from mlflow.entities import Param

    params = [Param(f"axis.{k}", json.dumps(sorted({json.dumps(r.axes[k]) for r in sweep.runs}))[:6000])
              for k in sweep.axis_keys]
    if params:
        _retry(lambda: c.log_batch(run_id, params=params), "log sweep params")
    _log_overrides(c, run_id, sweep)
    _retry(lambda: c.log_artifact(run_id, str(sweep.path)), "log sweep file")
    _update_sweep_state(sweep, tracking_uri=uri, parent_run_id=run_id)
    return run_id


def _log_overrides(c: Any, run_id: str, sweep: Sweep) -> None:
    """The command-line overrides on the parent run: tag ``sweep.overrides`` (the latest
    launch's) and a param ``override.<key>`` per key (params never change: a resumable
    key given a new value keeps its first)."""
    from mlflow.entities import Param, RunTag

    from collapse.tracking import _retry

    have = c.get_run(run_id).data.params
    params = [Param(f"override.{k}", json.dumps(v)[:6000]) for k, v in sorted(sweep.overrides.items())
              if f"override.{k}" not in have]
    tags = [RunTag("sweep.overrides", _overrides_text(sweep.overrides)[:5000])]
    _retry(lambda: c.log_batch(run_id, params=params, tags=tags), "log sweep overrides")


def finish_parent_run(sweep: Sweep, statuses: list["RunStatus"]) -> None:
    """Close the parent run when no run is pending or running: FINISHED when all are done."""
    st = read_sweep_state(sweep)
    uri, run_id = st.get("tracking_uri"), st.get("parent_run_id")
    if not uri or not run_id or any(s.state in ("pending", "running", "queued") for s in statuses):
        return
    from collapse.tracking import _retry, client

    status = "FINISHED" if all(s.state == "done" for s in statuses) else "FAILED"
    from collapse.tracking import store_exists

    if not store_exists(uri):  # the store is gone (or `--status` on a copy): nothing to close, nothing created
        return
    c = client(uri)
    try:
        if c.get_run(run_id).info.status != status:
            _retry(lambda: c.set_terminated(run_id, status=status), "end sweep run")
    except Exception as e:  # the table is what matters; the mirror follows on the next launch
        log.warning("sweep %s: could not close the MLflow parent run: %s", sweep.name, e)


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
        tr["tags"] = [f"sweep={sweep.name}"] + [f"axis.{k}={_tag_value(v)}" for k, v in r.axes.items()]
        cfg["run"]["progress"] = False
        if threads is not None:
            cfg["run"]["threads"] = threads
        specs.append(RunSpec(sweep=sweep.name, name=r.name, config=cfg, sweep_dir=str(sweep.dir), axes=r.axes))
    return specs


def _tag_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


# -------------------------------------------------------------------- status

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


def squeue_states(job_ids: Iterable[str]) -> dict[str, tuple[str, str]] | None:
    """``{job id: (state, reason)}`` of those jobs still known to slurmctld; None
    when Slurm does not answer."""
    ids = sorted({j.split("_")[0] for j in job_ids if j})
    if not ids:
        return {}
    if shutil.which("squeue") is None:
        return None
    try:
        p = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(ids)], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return {} if "invalid job id" in p.stderr.lower() else None
    out = {}
    for line in p.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


def sacct_states(job_ids: Iterable[str]) -> dict[str, str]:
    """Final states from accounting, where the cluster keeps it (empty otherwise)."""
    ids = sorted({j.split("_")[0] for j in job_ids if j})
    if not ids or shutil.which("sacct") is None:
        return {}
    try:
        p = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if p.returncode != 0:
        return {}
    out = {}
    for line in p.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 2:
            out[parts[0]] = parts[1].split()[0] if parts[1] else ""
    return out


def _first_line_of(path: Path) -> str:
    try:
        return path.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return "unknown error"


def _done_prefix(run_dir: Path, generations: int) -> int:
    """How many generations 0, 1, ... in a row have ``DONE``."""
    k = 0
    while k <= generations and (run_dir / f"gen_{k:03d}" / "DONE").exists():
        k += 1
    return k


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
        last = max(int(st.get("last_completed_generation", -1)), _done_prefix(r.run_dir, n) - 1)
        job = jobs.get(r.name)
        rs = RunStatus(r.name, "pending", last, n, job)
        err = error_path(sweep.dir, r.name)
        if is_done(st, n):
            rs.state = "done"
        elif st.get("status") == "done" and last >= n and not is_locked(lock_path(sweep.dir, r.name)):
            rs.state, rs.detail = "incomplete", "interrupted while closing its MLflow run"
        elif is_locked(lock_path(sweep.dir, r.name)):
            rs.state = "running"
            rs.detail = holder(lock_path(sweep.dir, r.name))
        elif is_locked(r.run_dir / ".lock"):  # a `collapse run` on the same run directory
            rs.state = "running"
            rs.detail = holder(r.run_dir / ".lock")
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
            rs.state, rs.detail = "failed", _first_line_of(err)
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


def format_status(sweep: Sweep, statuses: list[RunStatus]) -> str:
    rows = [(s.name, s.progress, s.job or "-", s.describe()) for s in statuses]
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    head = ("run", "gens", "job", "state")
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return _table(head, rows) + f"\n{sweep.name}: {len(statuses)} runs: {summary}"


def format_plan(sweep: Sweep) -> str:
    """The expansion: run name, axis values, run directory."""
    head = ("run", *sweep.axis_keys, "run dir")
    rows = [(r.name, *(_tag_value(r.axes[k]) for k in sweep.axis_keys), str(r.run_dir)) for r in sweep.runs]
    return _table(head, rows)


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------- launch

def default_parallel(sweep: Sweep) -> int:
    """What fits the cores: cores // CPUs per run (run.threads, 1 when unset,
    times train.nproc training processes)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    per_run = max((max(1, r.config["run"]["threads"]) * max(1, r.config["train"].get("nproc", 1)) for r in sweep.runs),
                  default=1)
    return max(1, cores // per_run)


@dataclass
class LaunchResult:
    launched: list[str]
    skipped: dict[str, str]  # run -> why
    failed: dict[str, str]  # run -> error (local) / submission problem
    jobs: dict[str, str]  # run -> Slurm job id

    @property
    def ok(self) -> bool:
        return not self.failed


def _to_launch(sweep: Sweep, statuses: list[RunStatus]) -> tuple[list[SweepRun], dict[str, str]]:
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
        echo(f"{sweep.name}: overrides {_overrides_text(sweep.overrides)} (last launch: {_overrides_text(recorded)})")
    started = time.time()
    outcome, result = "error", None
    try:
        result = _launch(sweep, executor, parallel=parallel, slurm=slurm, wait=wait, echo=echo, poll_s=poll_s)
        outcome = "ok" if result.ok else "failed"
        return result
    except KeyboardInterrupt:
        outcome = "interrupted"
        _close_parent_run(sweep, "KILLED")
        raise
    finally:
        try:
            _record_attempt(sweep, command or default_command(sweep, executor, parallel), executor, started, outcome,
                            result, waited=wait)
        finally:
            lock.release()


def _close_parent_run(sweep: Sweep, status: str) -> None:
    st = read_sweep_state(sweep)
    uri, run_id = st.get("tracking_uri"), st.get("parent_run_id")
    if not uri or not run_id:
        return
    try:
        from collapse.tracking import client

        client(uri).set_terminated(run_id, status=status)
    except Exception as e:
        log.warning("sweep %s: could not close the MLflow parent run: %s", sweep.name, " ".join(str(e).split())[:200])


def _launch(sweep: Sweep, executor: str, *, parallel: int | None, slurm: SlurmSettings | None, wait: bool,
            echo: Callable[[str], None], poll_s: float) -> LaunchResult:
    statuses = run_statuses(sweep)
    todo, skipped = _to_launch(sweep, statuses)
    uri = tracking_uri(sweep)
    st = read_sweep_state(sweep)
    parent = st.get("parent_run_id") if st.get("tracking_uri") == uri else None
    if todo:
        parent = ensure_parent_run(sweep, uri)
    _record_launch(sweep, executor, uri, parent)
    for name, why in skipped.items():
        echo(f"{name}: skipped, {why}")
    if not todo:
        echo(f"{sweep.name}: nothing to launch ({len(skipped)} runs done or in progress)")
        finish_parent_run(sweep, statuses)
        return LaunchResult([], skipped, {}, {})
    if executor == "local":
        _forget_jobs(sweep, [r.name for r in todo])  # their Slurm jobs, if any, are history
        n = parallel or default_parallel(sweep)
        threads = None
        if n > 1:  # parallel runs each get one thread unless the sweep says otherwise
            threads = max(1, max(r.config["run"]["threads"] for r in todo))
        specs = run_specs(sweep, todo, uri, parent, threads=threads)
        result = _launch_local(sweep, specs, min(n, len(specs)), echo)
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


def _group_key(cfg: dict[str, Any], sections: tuple[str, ...], **extra: Any) -> str:
    return json.dumps({**{k: cfg[k] for k in sections}, **extra}, sort_keys=True, default=str)


def _gen0_key(cfg: dict[str, Any]) -> str | None:
    """Runs with equal keys share generation 0 (the experiment's gen0 cache key, from the config alone)."""
    if not cfg["run"].get("share_gen0", True):
        return None
    return _group_key(cfg, ("data", "tokenizer", "model", "train", "sample", "metrics"), seed=cfg["run"]["seed"],
                      synthetic=cfg["mix"].get("synthetic_size"))


def _gen0_published(spec: RunSpec) -> bool:
    """The run's generation 0 is committed and copied to the shared cache."""
    d = spec.run_dir / "gen_000"
    if not (d / "DONE").exists():
        return False
    return (d / "MIRRORED").exists() or not spec.config["tracking"]["enabled"]


def _launch_local(sweep: Sweep, specs: list[RunSpec], parallel: int, echo: Callable[[str], None]) -> LaunchResult:
    """Run ``specs`` in worker processes, ``parallel`` at a time. Two steps save
    repeated work: the human data and tokenizer of each distinct data config are
    prepared once before the runs start, and of the runs that share a generation
    0 (same seed and everything but the mix) one goes first; the others start
    once its generation 0 is in the shared cache, and copy it."""
    import multiprocessing as mp
    from multiprocessing.connection import wait as mp_wait

    from collapse.sweep.worker import local_main, local_prepare

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    logs = sweep.dir / "_logs"
    logs.mkdir(parents=True, exist_ok=True)
    result = LaunchResult([], {}, {}, {})
    echo(f"{sweep.name}: {len(specs)} runs, {parallel} at a time (logs: {logs})")
    running: dict[Any, tuple[RunSpec | None, float]] = {}

    def stop_all() -> None:
        for p in running:  # interrupted: stop the workers; a later launch resumes them
            if p.is_alive():
                p.terminate()
        for p in running:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()

    try:
        # 1. human data and tokenizer, once per distinct data config
        prep: dict[str, dict[str, Any]] = {}
        for spec in specs:
            prep.setdefault(_group_key(spec.config, ("data", "tokenizer"), init_from=spec.config["model"]["init_from"]),
                            spec.config)
        if len(specs) > 1:
            todo_prep = list(prep.values())
            while todo_prep or running:
                while todo_prep and len(running) < parallel:
                    p = ctx.Process(target=local_prepare, args=(todo_prep.pop(0), str(logs / "_prepare.log")),
                                    name="collapse-sweep:prepare")
                    p.start()
                    running[p] = (None, time.time())
                mp_wait([p.sentinel for p in running], timeout=1.0)
                for p in [p for p in running if not p.is_alive()]:
                    running.pop(p)
                    p.join()
            echo(f"{sweep.name}: human data and tokenizer ready ({len(prep)} distinct)")

        # 2. the runs; followers of a generation-0 group wait for their leader's generation 0
        leaders: dict[str, RunSpec] = {}
        for spec in specs:
            key = _gen0_key(spec.config)
            if key is not None:
                leaders.setdefault(key, spec)
        leader_of = {spec.name: leaders[k] for spec in specs if (k := _gen0_key(spec.config)) is not None}
        ended: set[str] = set()
        queue = list(specs)

        def ready(spec: RunSpec) -> bool:
            lead = leader_of.get(spec.name)
            return lead is None or lead is spec or lead.name in ended or _gen0_published(lead)

        while queue or running:
            for spec in [s for s in queue if ready(s)]:
                if len(running) >= parallel:
                    break
                queue.remove(spec)
                t = time.time()
                p = ctx.Process(target=local_main, args=(spec, str(logs / f"{spec.name}.log"), t),
                                name=f"collapse-sweep:{spec.name}")
                p.start()
                running[p] = (spec, t)
                result.launched.append(spec.name)
                echo(f"{spec.name}: started (pid {p.pid})")
            mp_wait([p.sentinel for p in running], timeout=1.0)
            for p in [p for p in running if not p.is_alive()]:
                spec, t = running.pop(p)
                p.join()
                assert spec is not None
                ended.add(spec.name)
                code = p.exitcode
                if code == 0:
                    echo(f"{spec.name}: done ({time.time() - t:.0f}s)")
                elif code == EXIT_BUSY:
                    result.skipped[spec.name] = "running elsewhere"
                    echo(f"{spec.name}: skipped, already running elsewhere")
                else:
                    err = error_path(sweep.dir, spec.name)
                    why = _first_line_of(err) if err.exists() else (
                        f"killed by signal {-code}" if code and code < 0 else f"exit code {code}")
                    result.failed[spec.name] = why
                    echo(f"{spec.name}: failed: {why} (log: {logs / (spec.name + '.log')})")
    except BaseException:
        stop_all()
        raise
    return result


def _launch_slurm(sweep: Sweep, specs: list[RunSpec], s: SlurmSettings, echo: Callable[[str], None]) -> LaunchResult:
    import submitit

    from collapse.sweep.worker import SweepJob

    folder = sweep.dir / "_slurm"
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm", slurm_max_num_timeout=s.max_num_timeout)
    params: dict[str, Any] = {"name": f"collapse-{sweep.name}", "timeout_min": s.timeout_min,
                              "cpus_per_task": s.cpus_per_task, "slurm_array_parallelism": s.array_parallelism,
                              "slurm_additional_parameters": {"requeue": True},
                              "slurm_setup": [f"export OMP_NUM_THREADS={s.cpus_per_task}", *s.setup]}
    if s.partition:
        params["slurm_partition"] = s.partition
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    if s.mem_gb is not None:
        params["mem_gb"] = s.mem_gb
    for k in ("account", "qos", "constraint"):
        if getattr(s, k):
            params[f"slurm_{k}"] = getattr(s, k)
    ex.update_parameters(**params)
    with ex.batch():
        jobs = [ex.submit(SweepJob(spec)) for spec in specs]
    ids = {spec.name: job.job_id for spec, job in zip(specs, jobs)}
    _update_sweep_state(sweep, jobs=ids)
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


def status(sweep: Sweep) -> tuple[str, list[RunStatus]]:
    statuses = run_statuses(sweep)
    finish_parent_run(sweep, statuses)
    return format_status(sweep, statuses), statuses


def main_sweep(path: str, executor: str = "local", *, parallel: int | None = None, dry_run: bool = False,
               show_status: bool = False, wait: bool = False, slurm_flags: dict[str, Any] | None = None,
               echo: Callable[[str], None] = print, command: str | None = None,
               overrides: list[str] | None = None) -> int:
    """``collapse sweep FILE [key=value ...]``: returns the exit code. ``command``: the command line,
    recorded in ``sweep.json``; ``overrides``: for every run (:func:`collapse.sweep.spec.load_sweep`)."""
    from collapse.sweep.spec import load_sweep

    sweep = load_sweep(path, overrides)
    if show_status:
        text, _ = status(sweep)
        echo(text)
        return 0
    echo(format_plan(sweep))
    if sweep.claims:
        from collapse.claims import format_claims

        echo(format_claims(sweep.claims))
    if dry_run:
        check_overrides(sweep)  # what a launch would refuse, a dry run refuses too
        statuses = run_statuses(sweep)
        todo, skipped = _to_launch(sweep, statuses)
        echo(f"{sweep.name}: {len(sweep.runs)} runs ({len(skipped)} done or in progress, {len(todo)} to launch); "
             f"dry run: nothing launched")
        return 0
    settings = sweep.slurm.updated(**(slurm_flags or {}))
    res = launch(sweep, executor, parallel=parallel, slurm=settings, wait=wait, echo=echo, command=command)
    if executor == "local" or wait:
        text, statuses = status(sweep)
        echo(text)
        return 0 if all(s.state == "done" for s in statuses) else 1
    return 0 if res.ok else 1
