"""The sweep launcher's names from before it was split by job, for code that imports them from here.

The code lives in modules named after their jobs: :mod:`collapse.sweep.state`
(``sweep.json``, run statuses), :mod:`collapse.sweep.parent_run` (the MLflow
parent run), :mod:`collapse.sweep.launching` (which runs to start, and how),
:mod:`collapse.sweep.local` (the local process pool), :mod:`collapse.sweep.slurm`
(submitit, squeue, sacct) and :mod:`collapse.sweep.cli` (``collapse sweep``).
"""

from collapse.sweep.cli import format_plan, format_status, main_sweep, status
from collapse.sweep.launching import check_overrides, launch, run_specs, to_launch, wait_slurm
from collapse.sweep.local import PRELOAD, default_parallel, gen0_key
from collapse.sweep.parent_run import ensure_parent_run, finish_parent_run, tracking_uri
from collapse.sweep.slurm import sacct_states, squeue_states
from collapse.sweep.state import (LaunchResult, RunStatus, default_command, read_sweep_state, record_attempt,
                                  run_statuses, sweep_json)

__all__ = ["LaunchResult", "PRELOAD", "RunStatus", "check_overrides", "default_command", "default_parallel",
           "ensure_parent_run", "finish_parent_run", "format_plan", "format_status", "gen0_key", "launch", "main_sweep",
           "read_sweep_state", "record_attempt", "run_specs", "run_statuses", "sacct_states", "squeue_states", "status",
           "sweep_json", "to_launch", "tracking_uri", "wait_slurm"]
