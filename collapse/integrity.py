"""Integrity of committed generations: ``files.json`` lists every file of a
generation with its size and sha256, written when the generation is committed
(before ``DONE``), and checked whenever a finished generation is read back or
shared.

A generation whose files no longer match (truncated, edited, bit-flipped,
deleted) is never used silently: :func:`verify` names the first bad file, and
the run directory store redoes that generation (and the ones after it, which
were computed from it). Generations written before ``files.json`` existed are
accepted as they are.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

FILES = "files.json"
# Markers written after the listing: not part of a generation's content.
UNLISTED = {"DONE", "MIRRORED", FILES}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _files(d: Path) -> list[Path]:
    out = []
    for root, dirs, names in os.walk(d):
        dirs.sort()
        for n in sorted(names):
            p = Path(root) / n
            rel = p.relative_to(d)
            if str(rel) in UNLISTED or n.startswith("."):
                continue
            out.append(p)
    return out


def listing(d: Path) -> dict[str, Any]:
    """``{"files": {relative path: {"size": bytes, "sha256": hex}}}`` of every file in ``d``."""
    return {"files": {str(p.relative_to(d)): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in _files(d)}}


def record(d: Path) -> dict[str, Any]:
    """Write ``d/files.json`` (atomically) and return it."""
    lst = listing(d)
    tmp = d / f".{FILES}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(lst, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, d / FILES)
    return lst


def verify(d: Path) -> str | None:
    """None when every file listed in ``d/files.json`` is there with its size and
    checksum (or ``d`` predates listings); else what is wrong, naming the file."""
    f = d / FILES
    if not f.exists():
        return None  # written before listings existed: accepted as it is
    try:
        files = json.loads(f.read_text())["files"]
        assert isinstance(files, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return f"{f}: unreadable"
    for rel, want in sorted(files.items()):
        p = d / rel
        try:
            size = p.stat().st_size
        except OSError:
            return f"{p}: missing"
        if size != want["size"]:
            return f"{p}: {size} bytes, {want['size']} when committed (truncated or changed)"
        try:
            digest = sha256_file(p)
        except OSError as e:
            return f"{p}: unreadable ({e.strerror})"
        if digest != want["sha256"]:
            return f"{p}: checksum differs from the one recorded when committed (changed or corrupted)"
    return None


def copy_verified(src: Path, dst: Path) -> str | None:
    """Copy the generation ``src`` to ``dst`` (real copies, never hard links: damage
    to one copy cannot reach the other), checking ``src`` before and the copy after.
    Returns what is wrong (nothing copied) or None. ``dst`` appears atomically."""
    problem = verify(src)
    if problem is not None:
        return problem
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    shutil.rmtree(tmp)
    try:
        shutil.copytree(src, tmp, copy_function=shutil.copy2)
        problem = verify(tmp)
        if problem is not None:
            return problem.replace(str(tmp), str(src))
        if dst.exists():
            shutil.rmtree(dst)
        try:
            os.rename(tmp, dst)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # another process published it first
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return None
