"""File locks (``fcntl.flock``): one writer per run directory and per sweep, and
serialized first use of a sqlite store.

A lock is held through an open file descriptor, so the kernel releases it when
the process dies, even on SIGKILL: a crashed writer never leaves a stale lock.
The file holds the holder's pid and host, for the message a second writer gets.
Descriptors are not inherited by ``exec``'d subprocesses (Python opens them
non-inheritable), so a metric sandbox or ``torchrun`` never keeps a lock alive.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from collapse.errors import CollapseError


class Busy(CollapseError):
    """Another process holds the lock (the message names it)."""


def holder_text(path: Path) -> str:
    """``pid N on HOST`` from a lock file (``another process`` when unreadable)."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return "another process"
    try:
        h = json.loads(text or "{}")
    except ValueError:
        return "another process"
    if not isinstance(h, dict) or "pid" not in h:
        return "another process"
    where = f"pid {h.get('pid')} on {h.get('host')}"
    return where + (f", job {h['job']}" if h.get("job") else "")


class FileLock:
    """An exclusive ``flock`` on ``path``; ``acquire()`` raises :class:`Busy` when held
    elsewhere (``blocking=False``) or waits for it (``blocking=True``)."""

    def __init__(self, path: str | Path, info: dict[str, Any] | None = None):
        self.path = Path(path)
        self.info = info or {}
        self.fd: int | None = None

    def acquire(self, *, blocking: bool = False, what: str | None = None) -> "FileLock":
        if self.fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError:
            os.close(fd)
            raise Busy(f"{what or self.path} is in use by {holder_text(self.path)} (lock {self.path}); "
                       f"wait for it to end or stop it") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), **self.info}).encode())
        except OSError:  # a full disk: the lock holds all the same, only the holder's name is missing
            pass
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire(blocking=True)

    def __exit__(self, *exc: Any) -> None:
        self.release()


def is_locked(path: str | Path) -> bool:
    """Whether some process holds ``path``'s lock now."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the probe's shared lock
    return False


def wait_lock(path: str | Path, timeout_s: float) -> FileLock:
    """Block on ``path``'s lock for at most ``timeout_s`` seconds (polling), then raise :class:`Busy`."""
    lock = FileLock(path)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return lock.acquire()
        except Busy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
