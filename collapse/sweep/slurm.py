"""What a sweep asks of Slurm: job states from ``squeue`` and ``sacct``, and a job
array submitted through submitit.

Nothing here knows what a sweep run is: the queries take job ids, the
submission takes the callables to run (the launcher hands it
:class:`collapse.sweep.worker.SweepJob` objects). That keeps this module
below the run statuses (:mod:`collapse.sweep.state`), which ask squeue
about queued runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterable

from collapse.sweep.spec import SlurmSettings


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


def submit_array(folder: Path, name: str, s: SlurmSettings, jobs: list[Callable[[], Any]]) -> list[str]:
    """Submit ``jobs`` as one job array named ``name`` (submitit's files under
    ``folder``); returns their job ids (``<array>_<task>``), in order."""
    import submitit  # deferred: heavy, and only a Slurm launch needs it

    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm", slurm_max_num_timeout=s.max_num_timeout)
    params: dict[str, Any] = {"name": name, "timeout_min": s.timeout_min,
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
        submitted = [ex.submit(job) for job in jobs]
    return [job.job_id for job in submitted]
