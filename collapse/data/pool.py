"""Process pools of the data pipeline: forked workers with the default signal handlers.

Workers are forked, so they inherit the parent's signal handlers. Inside a
Slurm job submitit's handler ignores SIGTERM, and a pool shutting down
(``Pool.terminate``, also what ``with Pool()`` does on exit) stops its workers
with SIGTERM and waits for them: a worker that ignores it blocks the job for
ever. Each worker therefore restores the default SIGTERM handler, and ignores
SIGINT (Ctrl-C goes to the parent, which stops the pool).
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.pool import Pool


def _default_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def fork_pool(workers: int) -> Pool:
    """A fork-context pool of ``workers`` processes whose workers die on SIGTERM."""
    return multiprocessing.get_context("fork").Pool(workers, initializer=_default_signals)
