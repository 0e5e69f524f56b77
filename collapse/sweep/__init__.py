"""Sweeps: many experiments from one file, launched locally or on Slurm, tracked together.

Sweep files
-----------
A sweep file (``experiments/sweeps/*.yaml``) names a base experiment config
(a recipe and/or inline overrides) and axes: a ``grid`` (cartesian product),
an explicit ``list`` of points, and ``seeds``. Each run is one (config, seed)
with one regime; see :mod:`collapse.sweep.spec` for the format. ::

    collapse sweep experiments/sweeps/tiny_grid.yaml --dry-run          # the expansion, nothing launched
    collapse sweep experiments/sweeps/tiny_grid.yaml                    # local, what fits the cores
    collapse sweep experiments/sweeps/tiny_grid.yaml --parallel 4
    collapse sweep experiments/sweeps/small_grid.yaml --executor slurm  # one job array through submitit
    collapse sweep experiments/sweeps/small_grid.yaml --status          # pending / running / k of N / done / failed
    collapse sweep experiments/sweeps/tiny_grid.yaml run.root=/scratch/runs run.generations=5   # overrides, every run

Overrides after the file apply to every run (after ``base.overrides``; not to
an axis); they are recorded in ``sweep.json`` and on the MLflow parent run,
and a relaunch with other overrides is refused unless only keys a run may
change on resume differ (:func:`collapse.sweep.launching.check_overrides`).

Runs live in ``<run.root>/<sweep name>/<run name>`` (run names come from the
axis values: ``replace_s0``, ``fixed_fraction_human_fraction=0.5_temperature=0.8_s1``);
the MLflow experiment is the sweep name. Launching again is always safe: done
runs are skipped, runs in progress (a live worker or a queued job) are left
alone, the rest resume from their last completed generation. On Slurm a run
preempted or reaching its time limit is requeued by submitit (the job is a
``Checkpointable``) and continues the same way.

Local runs share the machine: ``--parallel N`` runs N at a time (default:
cores // ``run.threads``), each with ``run.threads=1`` unless the sweep sets
it. Workers are forked from a server that imported torch and friends once.

A sweep file may also state what its runs should show (``claims:``, see
:mod:`collapse.claims`); ``collapse findings SWEEP`` evaluates them from the
tracked runs (effect, Welch's 95 % interval over seeds, verdict).

Tracking
--------
One MLflow parent run per sweep (created once, before launching), one child
run per sweep run (tag ``mlflow.parentRunId``), tagged ``axis.<key>`` with the
run's axis values (``axis.mix.regime``, ``axis.run.seed``, ...), so
``mlflow.search_runs(experiment_names=[sweep])`` is already a tidy table and
``collapse.load_runs(sweep_file_or_name)`` gives one row per (run,
generation) with every metric as a column.

By default every run writes to ``sqlite:///<run.root>/mlflow.db``. Concurrent
writers are safe: the first use of the database (tables, migrations) happens
under a lock file beside it (``collapse.tracking.ensure_store``), SQLite
serialises the writes and every write is retried while the database is locked
(``collapse.tracking._retry``, one log line while waiting), which the tests
check with six processes on a new database and eight runs writing at once.
One launcher per sweep holds ``<sweep dir>/.lock``; the parent run is found by
its ``sweep.dir`` tag before one is created. That is enough on one machine or on a cluster
whose runs share a local-disk database; SQLite over NFS is not (its locks are
unreliable there).

MLflow on a cluster
~~~~~~~~~~~~~~~~~~~
For a cluster, run one MLflow server on a machine every node can reach, with
its database and artifact store on that machine's disk, and point the sweep
at it::

    # on the tracking host (a login node or a small VM), in a tmux/screen or as a service
    mlflow server --host 0.0.0.0 --port 5000 \\
        --backend-store-uri sqlite:////srv/mlflow/mlflow.db \\
        --artifacts-destination /srv/mlflow/artifacts \\
        --serve-artifacts --workers 4 \\
        --allowed-hosts "tracking-host,tracking-host:5000"

    # where you launch the sweep (jobs inherit the environment)
    export MLFLOW_TRACKING_URI=http://tracking-host:5000
    collapse sweep experiments/sweeps/small_grid.yaml --executor slurm

(or set ``tracking.uri: http://tracking-host:5000`` in the sweep's
``base.overrides``). The server is then the only process touching the
database, so hundreds of jobs can log at once; for heavy use give it a
PostgreSQL or MySQL database instead of SQLite
(``--backend-store-uri postgresql://user:pass@dbhost/mlflow``). MLflow 3
accepts requests only for the host names in ``--allowed-hosts`` (default:
localhost and private IP addresses), so list the name the nodes use. Artifacts
(samples, manifests, figures) travel through the server
(``--serve-artifacts``), so nodes need no shared file system for them (the
run directories themselves must be on a file system every node sees). The
URI a sweep was launched with is kept in ``<run.root>/<sweep>/sweep.json``;
read the results back with
``collapse.load_runs("experiments/sweeps/small_grid.yaml")`` or
``collapse report experiments/sweeps/small_grid.yaml`` (or ``collapse report
<sweep name> --root <run.root>``): both read the URI from ``sweep.json``, and
neither ever creates a store.
"""

from collapse.sweep.load import load_runs
from collapse.sweep.spec import SlurmSettings, Sweep, SweepRun, load_sweep

__all__ = ["Sweep", "SweepRun", "SlurmSettings", "load_sweep", "load_runs", "launch", "status"]


# launch and status are imported on first call: launching pulls in submitit and the
# worker, which reading results through this package does not need.

def launch(*args, **kwargs):
    """See :func:`collapse.sweep.launching.launch`."""
    from collapse.sweep.launching import launch as _launch  # deferred: submitit, the worker (above)

    return _launch(*args, **kwargs)


def status(sweep: Sweep):
    """``(table text, [RunStatus])``: see :func:`collapse.sweep.cli.status`."""
    from collapse.sweep.cli import status as _status  # deferred: submitit, the worker (above)

    return _status(sweep)
