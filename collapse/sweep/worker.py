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

import fcntl
import json
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collapse.locks import Busy

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


def lock_path(sweep_dir: str | Path, name: str) -> Path:
    return Path(sweep_dir) / "_locks" / f"{name}.lock"


def error_path(sweep_dir: str | Path, name: str) -> Path:
    return Path(sweep_dir) / "_errors" / f"{name}.txt"


def attempts_path(sweep_dir: str | Path, name: str) -> Path:
    return Path(sweep_dir) / "_logs" / f"{name}.attempts.jsonl"


class RunBusy(Exception):
    """Another process holds this run's lock."""


class RunLock:
    """Exclusive, non-blocking ``flock`` of a run; the file holds the holder's pid, host and job."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunBusy(holder(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "job": slurm_job_id()}).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def slurm_job_id() -> str | None:
    """This process's Slurm job as squeue shows it (``<array job>_<task>`` for array tasks)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def holder(path: Path) -> str:
    try:
        h = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    where = f"pid {h.get('pid')} on {h.get('host')}"
    return where + (f", job {h['job']}" if h.get("job") else "")


def is_locked(path: Path) -> bool:
    """Whether some process holds the run's lock now (i.e. the run is running)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the probe's shared lock
    return False


def read_state(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / "state.json").read_text())
    except (OSError, ValueError):
        return {}


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
        from collapse.tracking import client

        return client(uri, create=False).get_run(run_id).info.status  # a status check creates no store
    except Exception:
        return None


def _sync_stored_tracking(run_dir: Path, tracking: dict[str, Any]) -> None:
    """The stored config's sweep bookkeeping (parent run id, axis tags) follows the
    sweep's current ones, so a resumed run is never refused over them."""
    import yaml

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
        try:
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
    lock = RunLock(lock_path(spec.sweep_dir, spec.name)).acquire()
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
        from collapse.experiment import run_experiment
        from collapse.registries import from_dict

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
        import logging

        logging.getLogger("collapse").warning("%s: checkpoint: requeued, resumes from its last completed generation",
                                              self.spec.name)
        return _DelayedSubmission(SweepJob(self.spec), *args, **kwargs)


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("urllib3", "filelock", "datasets", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for noisy in ("mlflow", "alembic", "sqlalchemy"):  # their retries log a multi-line warning per attempt
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _redirect_output(log_file: str) -> None:
    """This process's stdout and stderr (file descriptors too) go to ``log_file``."""
    import sys

    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def local_main(spec: RunSpec, log_file: str, t_launch: float) -> None:
    """Entry of a local worker process (forked by the launcher's fork server):
    output to the run's log; the exit code tells the launcher what happened."""
    import sys

    from collapse.signals import terminate_as_interrupt

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
    import sys

    _redirect_output(log_file)
    _setup_logging()
    try:
        from collapse.experiment import Experiment
        from collapse.registries import from_dict

        Experiment(from_dict(config))
    except BaseException:  # the runs report it themselves
        traceback.print_exc()
        sys.exit(EXIT_FAILED)
