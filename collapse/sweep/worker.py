"""What runs one sweep run, in a local worker process or a Slurm job.

:func:`run_spec` runs one (config, seed) through :func:`collapse.experiment.run_experiment`,
which resumes from the run directory's last completed generation. A run is
held by one process at a time (an exclusive ``flock`` on
``<sweep dir>/_locks/<run>.lock``, released by the kernel even on SIGKILL), is
skipped when its ``state.json`` says done, and leaves its error in
``<sweep dir>/_errors/<run>.txt`` when it fails. Every attempt appends one
line to ``<sweep dir>/_logs/<run>.attempts.jsonl`` (start time, Slurm job id
and restart count, the generation it resumed from, seconds to the first
optimizer step, outcome): the record of requeues and resumes.

:class:`SweepJob` is the Slurm job: a ``submitit.helpers.Checkpointable``
whose ``checkpoint()`` (called by submitit on the time-limit / preemption
signal) resubmits itself. Nothing in memory needs saving: the run directory
is the checkpoint, so the requeued job continues from the last completed
generation.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from collapse.experiment import Experiment, run_experiment
from collapse.locks import Busy, FileLock, holder_text
from collapse.logs import quiet_libraries
from collapse.registries import from_dict
from collapse.signals import terminate_as_interrupt
from collapse.sweep.state import attempts_path, error_path, is_done, lock_path, read_state

try:  # the Slurm job class; submitit is a dependency, local runs do not need it
    from submitit.helpers import Checkpointable as _Checkpointable
    from submitit.helpers import DelayedSubmission as _DelayedSubmission
except ImportError:  # pragma: no cover
    _Checkpointable = object  # type: ignore[assignment,misc]
    _DelayedSubmission = None

EXIT_FAILED = 1
EXIT_BUSY = 75  # another process holds the run


@dataclass
class RunSpec:
    """Everything a worker needs: no re-expansion of the sweep file on the node."""

    sweep: str
    name: str
    config: dict[str, Any]
    sweep_dir: str
    axes: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return Path(self.config["run"]["dir"])


class RunBusy(Exception):
    """Another process holds this run's lock."""


def slurm_job_id() -> str | None:
    """This process's Slurm job as squeue shows it (``<array job>_<task>`` for array tasks)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _sync_stored_tracking(run_dir: Path, tracking: dict[str, Any]) -> None:
    """The stored config's sweep bookkeeping (parent run id, axis tags) follows the
    sweep's current ones, so a resumed run is never refused over them."""
    p = run_dir / "config.yaml"
    if not p.exists():
        return
    try:
        stored = yaml.safe_load(p.read_text())
    except yaml.YAMLError:
        return  # the experiment reports the broken file
    if not isinstance(stored, dict) or not isinstance(stored.get("tracking"), dict):
        return
    changed = False
    for k in ("parent_run_id", "tags"):
        if stored["tracking"].get(k) != tracking.get(k):
            stored["tracking"][k] = tracking.get(k)
            changed = True
    if changed:
        tmp = p.with_name(".config.yaml.sweep")
        tmp.write_text(yaml.safe_dump(stored, sort_keys=False))
        os.replace(tmp, p)


class _FirstStep:
    """Seconds from the attempt's start to its first optimizer step (a global torch hook)."""

    def __init__(self, t0: float):
        self.t0 = t0
        self.seconds: float | None = None
        self.handle = None
        try:  # deferred: torch is heavy, and only a run that trains needs the hook
            from torch.optim.optimizer import register_optimizer_step_pre_hook
        except ImportError:  # pragma: no cover
            return
        self.handle = register_optimizer_step_pre_hook(self)

    def __call__(self, optimizer, args, kwargs):
        if self.seconds is None:
            self.seconds = time.time() - self.t0
            self.remove()
        return None

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def _append_attempt(spec: RunSpec, record: dict[str, Any]) -> None:
    p = attempts_path(spec.sweep_dir, spec.name)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:
        f.write(json.dumps(record) + "\n")


def run_spec(spec: RunSpec, *, t_launch: float | None = None) -> dict[str, Any]:
    """Run (or resume, or skip when done) one sweep run. Returns a summary;
    raises :class:`RunBusy` when another process holds the run."""
    t0 = time.time()
    path = lock_path(spec.sweep_dir, spec.name)
    try:  # the file names the holder, Slurm job included, for `--status` and the second process
        lock = FileLock(path, {"job": slurm_job_id()}).acquire()
    except Busy:
        raise RunBusy(holder_text(path)) from None
    record: dict[str, Any] = {"start": time.strftime("%Y-%m-%dT%H:%M:%S"), "t_start": round(t0, 3), "pid": os.getpid(),
                              "host": socket.gethostname(), "job": slurm_job_id(),
                              "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)}
    if t_launch is not None:
        record["launch_to_start_s"] = round(t0 - t_launch, 3)
    try:
        state = read_state(spec.run_dir)
        record["resumed_from"] = state.get("last_completed_generation", -1) + 1
        if is_done(state, spec.config["run"]["generations"]):
            record["outcome"] = "skipped (done)"
            _append_attempt(spec, record)
            return {"name": spec.name, "status": "done", "skipped": True}
        cfg = from_dict(spec.config)
        _sync_stored_tracking(spec.run_dir, spec.config["tracking"])
        error_path(spec.sweep_dir, spec.name).unlink(missing_ok=True)
        first = _FirstStep(t0)
        record["start_to_run_s"] = round(time.time() - t0, 3)
        _append_attempt(spec, {**record, "outcome": "started"})
        try:
            results = run_experiment(cfg)
        except Busy as e:  # another process (a plain collapse run) holds the run directory
            record["outcome"] = f"busy: {e}"[:500]
            raise RunBusy(str(e)) from None
        except Exception as e:
            p = error_path(spec.sweep_dir, spec.name)
            p.parent.mkdir(parents=True, exist_ok=True)
            line = " ".join(str(e).split()) or type(e).__name__
            p.write_text(f"{type(e).__name__}: {line}\n\n{traceback.format_exc()}")
            record["outcome"] = f"failed: {type(e).__name__}: {line}"[:500]
            raise
        except BaseException as e:  # killed, interrupted, preempted: resumable
            record["outcome"] = f"stopped: {type(e).__name__}"
            raise
        finally:
            if first.seconds is not None:  # seconds from this attempt's start to its first training step
                record["first_step_s"] = round(first.seconds, 3)
                record["t_first_step"] = round(t0 + first.seconds, 3)
            first.remove()
            record["seconds"] = round(time.time() - t0, 1)
            if "outcome" in record:
                _append_attempt(spec, record)
        record["outcome"] = "done"
        _append_attempt(spec, record)
        r = results[0]
        return {"name": spec.name, "status": "done", "skipped": False, "run_dir": str(r.run_dir),
                "mlflow_run_id": r.mlflow_run_id, "metrics": r.metrics[-1] if r.metrics else {}}
    finally:
        lock.release()


class SweepJob(_Checkpointable):
    """One sweep run as a Slurm job (submitit). Requeued on preemption / time limit
    by ``checkpoint()``; resumes from the run directory."""

    def __init__(self, spec: RunSpec):
        self.spec = spec

    def __call__(self) -> dict[str, Any]:
        _setup_logging()
        threads = self.spec.config["run"].get("threads") or 0
        if threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        return run_spec(self.spec)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on USR2 (time limit or preemption): the run directory
        already holds every finished generation, so the job resubmits itself as is."""
        logging.getLogger("collapse").warning("%s: checkpoint: requeued, resumes from its last completed generation",
                                              self.spec.name)
        return _DelayedSubmission(SweepJob(self.spec), *args, **kwargs)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    quiet_libraries()


def _redirect_output(log_file: str) -> None:
    """This process's stdout and stderr (file descriptors too) go to ``log_file``."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def local_main(spec: RunSpec, log_file: str, t_launch: float) -> None:
    """Entry of a local worker process (forked by the launcher's fork server):
    output to the run's log; the exit code tells the launcher what happened."""
    _redirect_output(log_file)
    _setup_logging()
    code = 0
    try:
        with terminate_as_interrupt():  # the launcher stops workers with SIGTERM: clean up as on Ctrl-C
            run_spec(spec, t_launch=t_launch)
    except RunBusy as e:
        print(f"{spec.name}: already running ({e})", file=sys.stderr)
        code = EXIT_BUSY
    except KeyboardInterrupt:
        print(f"{spec.name}: stopped; launching the sweep again resumes it", file=sys.stderr)
        code = 130
    except BaseException:
        traceback.print_exc()
        code = EXIT_FAILED
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)  # multiprocessing turns it into the exit code, after its own cleanup


def local_prepare(config: dict[str, Any], log_file: str) -> None:
    """Entry of a local process that builds (or finds cached) the human data and
    tokenizer of ``config`` before the runs that need them start."""
    _redirect_output(log_file)
    _setup_logging()
    try:
        Experiment(from_dict(config))
    except BaseException:  # the runs report it themselves
        traceback.print_exc()
        sys.exit(EXIT_FAILED)
