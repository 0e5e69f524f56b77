"""SIGTERM handled like SIGINT.

A cluster sends SIGTERM before preemption and at a time limit (and ``kill``
sends it by default). Python's default is to die on the spot, leaving
``state.json`` saying "running" and the MLflow run RUNNING. Inside
:func:`terminate_as_interrupt`, SIGTERM raises :class:`Terminated`, a
``KeyboardInterrupt``, so the same clean-up as Ctrl-C runs: the run is marked
interrupted, its MLflow run KILLED, workers are stopped, and re-running the
same command resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM received."""


_owner: list[int] = []  # the pid that installed the handler


def _raise(signum, frame) -> None:
    if _owner and os.getpid() != _owner[-1]:
        # A forked worker (a data-preparation pool) inherited the handler: die as SIGTERM means,
        # silently, as the pool that terminates it expects.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread of this process while inside (a no-op
    elsewhere); forked children that inherit the handler die of SIGTERM as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _owner.append(os.getpid())
    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        _owner.pop()


def exit_code(e: KeyboardInterrupt) -> int:
    """128 + the signal: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """SIGINT and SIGTERM are ignored while inside (main thread only): the clean-up
    after a first signal (marking the run interrupted, closing its MLflow run) is
    not cut short by a second one, e.g. a launcher's SIGTERM after a terminal's Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
