"""Splitting the human corpus into train / validation / test / reference, and caching it.

The split is a pure function of each example's content: a hash of the
normalized text picks the split, a second hash orders examples within it.
So an example lands in the same split in every run and generation, whatever
else is in the corpus and in whatever order, and an exact duplicate (up to
whitespace normalization) can never sit on both sides of the train/test
line. Within a split the order is a stable pseudo-random shuffle: the first
``n`` examples of ``train`` are a fair, reproducible sample, which the loop
uses as the generation-0 human pool (later chunks serve as fresh data).

:func:`prepare_human_data` loads and splits once per data config and
caches the result (Arrow, via ``save_to_disk``) so every run and regime
sharing the config reads the same bytes. The cache entry also holds
``info.json`` (every count of the corpus build), the dataset card
``README.md`` (:mod:`collapse.data.card`) and, with ``data.write_dropped``,
``dropped.jsonl``: one line per dropped file or function with its step and
reason (function texts after redaction).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets

from collapse.config import DataConfig, hashed_values
from collapse.data.card import human_card, write_card
from collapse.data.corpus import _datasets_progress, load_human_corpus, normalize_text
from collapse.data.redact import Redactor
from collapse.data.sources import OptOut, installed_distributions, parse_sources
from collapse.errors import CollapseError

__all__ = ["split_corpus", "prepare_human_data", "data_key", "held_out_fraction", "SPLITS"]

SPLITS = ("train", "validation", "test", "reference")

#: Bump when extraction, filtering or splitting changes, so old caches are not reused.
CACHE_VERSION = 4
#: The file of dropped files and functions in a cache entry (with ``data.write_dropped``).
DROPPED_FILE = "dropped.jsonl"


def _hash(prefix: bytes, text: str) -> bytes:
    return hashlib.sha256(prefix + normalize_text(text).encode("utf-8")).digest()


def split_bucket(text: str) -> float:
    """Where an example falls in [0, 1): the content-defined split coordinate."""
    return int.from_bytes(_hash(b"split:", text)[:8], "big") / 2**64


def split_corpus(ds: datasets.Dataset, val_fraction: float, test_fraction: float,
                 reference_fraction: float = 0.0) -> datasets.DatasetDict:
    """Split by content hash into ``train``, ``validation``, ``test`` and ``reference``.

    An example goes to ``test`` when its bucket (the first 64 bits of
    ``sha256(b"split:" + normalized text)`` as a fraction) is below
    ``test_fraction``, to ``validation`` when below ``test_fraction +
    val_fraction``, to ``reference`` when below that plus
    ``reference_fraction``, else to ``train``. Each split is ordered by
    ``sha256(b"order:" + normalized text)``. All columns are kept.
    """
    shares = (val_fraction, test_fraction, reference_fraction)
    if not (all(0.0 <= f for f in shares) and sum(shares) < 1.0):
        raise CollapseError(
            "data.val_fraction + data.test_fraction + data.reference_fraction: expected non-negative shares summing "
            f"to < 1, got {val_fraction}, {test_fraction} and {reference_fraction}")
    members: dict[str, list[tuple[bytes, int]]] = {s: [] for s in SPLITS}
    for i, text in enumerate(ds["text"][:]):  # [:]: the whole column at once, not row by row
        b = split_bucket(text)
        name = ("test" if b < test_fraction else "validation" if b < test_fraction + val_fraction
                else "reference" if b < test_fraction + val_fraction + reference_fraction else "train")
        # Ties in the order hash (only for identical normalized texts) fall
        # back to corpus position, so the order is total and deterministic.
        members[name].append((_hash(b"order:", text), i))
    return datasets.DatasetDict({s: ds.select([i for _, i in sorted(members[s])]) for s in SPLITS})


def held_out_fraction(cfg: DataConfig) -> float:
    """The share of content-hash buckets that no model trains on: validation, test and reference."""
    return cfg.val_fraction + cfg.test_fraction + cfg.reference_fraction


def data_key(cfg: DataConfig) -> str:
    """Stable cache key of the data a config yields.

    Covers every DataConfig field except ``train_size`` (which only picks a
    prefix of ``train``), the absolute path of each local source (so
    relative paths from different working directories do not collide), the
    Python version when the stdlib is a source, the name and version of
    every installed distribution read when ``installed`` is (all of them,
    or the ones ``data.distributions`` names), what each
    ``data.opt_out`` entry resolves to (its kind and, for a path, the
    absolute path it names from the working directory), and
    :data:`CACHE_VERSION`. It does not cover the contents of local files:
    delete the cache entry after editing a corpus in place.
    """
    fields = hashed_values(cfg)
    fields.pop("train_size", None)
    specs = parse_sources(cfg.source, cfg.distributions)
    roots = [str(s.root) if s.root is not None else None for s in specs]
    payload = {
        "version": CACHE_VERSION,
        "data": fields,
        "root": roots[0] if len(roots) == 1 else roots,
        "python": platform.python_version() if any(s.kind == "stdlib" for s in specs) else None,
        "opt_out": OptOut(cfg.opt_out).resolved(),
    }
    installed = [s for s in specs if s.kind == "installed"]
    if installed:
        payload["installed"] = [[f"{d.metadata['Name']}=={d.metadata['Version']}" for d in installed_distributions(s.root, s.only)]
                                for s in installed]
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _write_dropped(path: Path, dropped: list[dict[str, Any]], redact: bool) -> None:
    """One JSON line per dropped file or function. Texts dropped before the
    ``redact`` step ran are redacted here, so the file never holds what the
    corpus itself may not."""
    redactor = Redactor() if redact else None
    with open(path, "w") as f:
        for d in dropped:
            if redactor is not None and "text" in d:
                d = {**d, "text": redactor.redact(d["text"])}
            f.write(json.dumps(d) + "\n")


def _load_cached(path: Path, progress: bool) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    info_file = path / "info.json"
    if not info_file.is_file():
        raise CollapseError(f"data cache {path} is incomplete (no info.json): delete it to rebuild")
    info = json.loads(info_file.read_text())
    with _datasets_progress(progress):
        return datasets.load_from_disk(str(path)), info


def prepare_human_data(cfg: DataConfig, cache_dir: Path, progress: bool = True,
                       timings: dict[str, float] | None = None) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    """The split human corpus, from ``cache_dir / f"human-{key}"`` when present.

    On a miss: load (:func:`~collapse.data.corpus.load_human_corpus`), split
    (:func:`split_corpus`), then publish atomically: ``save_to_disk`` into a
    temporary directory next to the final one, write ``info.json`` into it,
    and ``os.rename`` it into place, so a concurrent run either sees the
    whole entry or none of it (if another process published first, its
    entry wins and ours is discarded). Either way the returned splits are
    read back from the cache, so a first and a second call give identical,
    memory-mapped datasets.

    ``timings``, when given, gets the seconds of each phase of a build (see
    :func:`~collapse.data.corpus.load_human_corpus`; plus ``split`` and
    ``save``: the Arrow files, ``info.json``, the card and ``dropped.jsonl``).

    ``info`` is the corpus info plus ``split_sizes``, ``key``, ``path`` (the
    cache entry), ``card`` (its ``README.md``) and ``cached`` (whether this
    call found it ready). Raises
    :class:`CollapseError` when a split comes out empty.
    """
    key = data_key(cfg)
    cache_dir = Path(cache_dir)
    final = cache_dir / f"human-{key}"
    if final.exists():
        dsd, info = _load_cached(final, progress)
        return dsd, {**info, "path": str(final), "card": str(final / "README.md"), "cached": True}

    dropped: list[dict[str, Any]] | None = [] if cfg.write_dropped else None
    ds, info = load_human_corpus(cfg, progress=progress, dropped=dropped, timings=timings)
    t0 = time.perf_counter()
    dsd = split_corpus(ds, cfg.val_fraction, cfg.test_fraction, cfg.reference_fraction)
    t1 = time.perf_counter()
    sizes = {s: len(dsd[s]) for s in SPLITS}
    empty = [s for s in SPLITS if sizes[s] == 0]
    if empty:
        raise CollapseError(
            f"data.source: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty "
            f"({info['kept']} examples; data.val_fraction={cfg.val_fraction}, data.test_fraction={cfg.test_fraction}, "
            f"data.reference_fraction={cfg.reference_fraction}): "
            "use a larger corpus or larger fractions"
        )
    info = {**info, "split_sizes": sizes, "key": key}

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".human-{key}.tmp-", dir=cache_dir))
    try:
        with _datasets_progress(progress):
            dsd.save_to_disk(str(tmp))
        (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        write_card(tmp, human_card(info, dsd, cfg))
        if dropped is not None:
            _write_dropped(tmp / DROPPED_FILE, dropped, redact="redact" in cfg.pipeline)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process published the same key first; its data is
            # identical by construction, so keep it and drop ours.
            if not final.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    dsd, info = _load_cached(final, progress)
    if timings is not None:
        timings["split"] = timings.get("split", 0.0) + t1 - t0
        timings["save"] = timings.get("save", 0.0) + time.perf_counter() - t1
    return dsd, {**info, "path": str(final), "card": str(final / "README.md"), "cached": False}
