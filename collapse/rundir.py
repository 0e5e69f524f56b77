"""The run directory: every path in it, and its only writer.

::

    <run dir>/config.yaml          resolved config
              state.json           last completed generation, status, MLflow run id, data record
              .run_key .lock       the run's identity (tagged on its MLflow run); one writer at a time
              gen_000/             data/ (with its card README.md) manifest.json model/ samples/
                                   samples.jsonl metrics/ metrics.json timings.json files.json
                                   DONE (written last)  MIRRORED (once in MLflow)
              .metrics_gen_000/    a generation's metric artifacts until it is committed
              human_reference/     the same metric artifacts for held-out human code
              figures/

:class:`RunDirReader` answers questions about a run directory and never
writes (reports, ``collapse show``, resuming); :class:`RunDir` is the store
the loop commits generations to. Nothing else builds a path inside a run
directory: a generator is handed the checkpoints and earlier samples it
needs (:meth:`RunDirReader.checkpoint`, :meth:`RunDirReader.samples_before`,
:meth:`RunDirReader.staging`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from collapse import integrity
from collapse.config import Config
from collapse.errors import CollapseError
from collapse.generator import Checkpointable, GenerationRecord
from collapse.mixing import Take, plan_counts, plan_to_dict
from collapse.signals import shielded
from collapse.tracking import read_json, write_json_atomic

log = logging.getLogger("collapse")

DONE = "DONE"
MIRRORED = "MIRRORED"
STATE = "state.json"
CONFIG = "config.yaml"
METRICS = "metrics.json"
TIMINGS = "timings.json"
MANIFEST = "manifest.json"
SAMPLES_JSONL = "samples.jsonl"
GEN_GLOB = "gen_[0-9][0-9][0-9]"


def gen_name(generation: int) -> str:
    """``gen_003``: the folder name of a generation."""
    return f"gen_{generation:03d}"


def read_state(path: Path) -> dict[str, Any]:
    """``state.json`` (empty when missing). An unreadable one is rebuilt: everything
    in it is found again from the generations and the MLflow store."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        st = json.loads(path.read_text())
        if not isinstance(st, dict):
            raise ValueError("not an object")
        return st
    except (ValueError, UnicodeDecodeError) as e:
        log.warning("%s: unreadable (%s); rebuilt from the run directory", path, e)
        return {}


def _read_json_or_none(path: Path) -> Any:
    """A JSON file's content, None when it is missing or unreadable (readers show what there is)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class RunDirReader:
    """Paths and contents of one run directory, read-only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # ------------------------------------------------------------------ paths
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def state_path(self) -> Path:
        return self.path / STATE

    @property
    def key_path(self) -> Path:
        return self.path / ".run_key"

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    @property
    def reference_dir(self) -> Path:
        """Metric artifacts of the held-out human reference."""
        return self.path / "human_reference"

    def gen_dir(self, generation: int) -> Path:
        return self.path / gen_name(generation)

    def data_path(self, generation: int) -> Path:
        return self.gen_dir(generation) / "data"

    def card_path(self, generation: int) -> Path:
        return self.data_path(generation) / "README.md"  # collapse.data.card.CARD_NAME

    def model_path(self, generation: int) -> Path:
        return self.gen_dir(generation) / "model"

    def samples_path(self, generation: int) -> Path:
        return self.gen_dir(generation) / "samples"

    def samples_jsonl(self, generation: int) -> Path:
        return self.gen_dir(generation) / SAMPLES_JSONL

    def manifest_path(self, generation: int) -> Path:
        return self.gen_dir(generation) / MANIFEST

    def metrics_dir(self, generation: int) -> Path:
        """Per-sample metric values and attributions of a committed generation."""
        return self.gen_dir(generation) / "metrics"

    def staging(self, generation: int) -> Path:
        """Where a generation's metric artifacts wait until it is committed (then ``gen_NNN/metrics``)."""
        return self.path / f".metrics_{gen_name(generation)}"

    def model_ref(self, generation: int) -> str:
        """How a sample names the model that wrote it: ``<run>/gen_NNN/model``."""
        return f"{self.name}/{gen_name(generation)}/model"

    # --------------------------------------------------------------- contents
    def is_run_dir(self) -> bool:
        return self.path.is_dir() and (self.state_path.is_file() or self.config_path.is_file()
                                       or self.gen_dir(0).is_dir())

    def is_done(self, generation: int) -> bool:
        return (self.gen_dir(generation) / DONE).exists()

    def finished_generations(self) -> list[int]:
        """The generations with ``DONE``, in order."""
        return sorted(int(d.name[4:]) for d in self.path.glob(GEN_GLOB) if (d / DONE).exists())

    def done_prefix(self) -> int:
        """The last generation of the unbroken run 0, 1, ... with ``DONE`` (-1: none)."""
        g = 0
        while self.is_done(g):
            g += 1
        return g - 1

    def is_mirrored(self, generation: int) -> bool:
        return (self.gen_dir(generation) / MIRRORED).exists()

    def state(self) -> dict[str, Any]:
        return read_state(self.state_path)

    def config(self) -> dict[str, Any]:
        """The stored ``config.yaml`` as a plain dict (empty when missing)."""
        if not self.config_path.exists():
            return {}
        return yaml.safe_load(self.config_path.read_text()) or {}

    def run_key(self) -> str:
        return self.key_path.read_text().strip()

    def metrics(self, generation: int) -> dict[str, Any] | None:
        """A generation's ``metrics.json``; None when missing or unreadable."""
        return _read_json_or_none(self.gen_dir(generation) / METRICS)

    def timings(self, generation: int) -> dict[str, Any] | None:
        return _read_json_or_none(self.gen_dir(generation) / TIMINGS)

    def manifest(self, generation: int) -> dict[str, Any] | None:
        return _read_json_or_none(self.manifest_path(generation))

    def checkpoint(self, generation: int) -> Path | None:
        """The model of a finished generation (None while it has no ``DONE``: never a half-written one)."""
        return self.model_path(generation) if generation >= 0 and self.is_done(generation) else None

    def samples(self, generation: int):
        """A finished generation's samples (a ``datasets.Dataset``); one line naming the
        finished generations when it has none."""
        from datasets import load_from_disk  # deferred: datasets is a heavy import

        d = self.samples_path(generation) if isinstance(generation, int) else None
        if d is None or generation < 0 or not self.is_done(generation) or not d.is_dir():
            done = self.finished_generations()
            have = (f"finished generations: {_span(done)}" if done else "no generation has finished yet")
            raise CollapseError(f"generation {generation!r} of {self.path} does not exist ({have})")
        return load_from_disk(str(d))

    def samples_before(self, generation: int) -> dict[int, list[str]]:
        """Sample texts of every generation before ``generation`` that saved them."""
        from datasets import load_from_disk  # deferred: datasets is a heavy import

        out: dict[int, list[str]] = {}
        for g in range(max(generation, 0)):
            d = self.samples_path(g)
            if d.exists():
                out[g] = list(load_from_disk(str(d))["text"])
        return out

    def artifact_files(self, name: str) -> list[tuple[int, Path]]:
        """``(generation, path)`` of the metric artifact ``name`` (e.g. ``copies.jsonl``) of every
        generation folder that has one, in order; -1 is the human reference's."""
        out = [(-1, self.reference_dir / name)] if (self.reference_dir / name).exists() else []
        for d in sorted(self.path.glob(GEN_GLOB)):
            if (d / "metrics" / name).exists():
                out.append((int(d.name[4:]), d / "metrics" / name))
        return out

    def mirrored_to(self, generation: int, uri: str, run_id: str, prev_target: dict[str, Any]) -> bool:
        """Whether a generation is already in the MLflow run ``run_id`` at ``uri``: its ``MIRRORED``
        marker names the store and run it was logged to (an empty marker, from before markers
        named them, means ``prev_target``: the run ``state.json`` named at the start)."""
        p = self.gen_dir(generation) / MIRRORED
        if not p.exists():
            return False
        try:
            text = p.read_text().strip()
            target = json.loads(text) if text else prev_target
        except (OSError, ValueError):
            return False
        return isinstance(target, dict) and target.get("uri") == uri and target.get("run_id") == run_id


def _span(gens: list[int]) -> str:
    """``0..3`` for a run of consecutive generations, else ``0, 2, 5``."""
    if gens == list(range(gens[0], gens[-1] + 1)) and len(gens) > 2:
        return f"{gens[0]}..{gens[-1]}"
    return ", ".join(map(str, gens))


def nonfinite(metrics: dict[str, Any]) -> list[str]:
    """Names of metrics that are missing (None) or not finite (NaN, inf)."""
    out = []
    for k, v in metrics.items():
        if v is None:
            out.append(k)
        else:
            try:
                if not math.isfinite(float(v)):
                    out.append(k)
            except (TypeError, ValueError):
                pass
    return sorted(out)


def _no_space(e: BaseException | None) -> bool:
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "no space left on device" in str(e).lower():
            return True
        e = e.__cause__ or e.__context__
    return False


def manifest(train: Any, rec: GenerationRecord, regime: str) -> dict[str, Any]:
    """Counts per origin and generation, the plan, and a content hash of the training set."""
    counts = Counter(zip(train["origin"], train["generation"]))
    by_origin: dict[str, dict[str, int]] = {}
    for (origin, gen), c in sorted(counts.items()):
        by_origin.setdefault(origin, {})[str(gen)] = c
    h = hashlib.sha256()
    for s in train["sha256"]:
        h.update(bytes.fromhex(s))
    return {
        "generation": rec.generation,
        "regime": regime,
        "plan": plan_to_dict(rec.plan),
        "pools": plan_counts(rec.plan),
        "counts": by_origin,
        "total": len(train),
        "content_sha256": h.hexdigest(),
    }


class RunDir(RunDirReader):
    """The store of a run directory: claims it, commits generations (``files.json``,
    then ``DONE``, last), restores finished ones, and keeps ``state.json``.

    A finished generation is checked against its listing before it is used;
    generation 0 may come from a shared cache (``gen0_cache``), copied and
    checked. ``tokenizer`` counts the tokens of each training set's card."""

    def __init__(self, path: str | Path, regime: str | None = None, gen0_cache: Path | None = None,
                 tokenizer: Any = None):
        super().__init__(path)
        self.regime = regime
        self.gen0_cache = gen0_cache
        self.tokenizer = tokenizer

    # ------------------------------------------------------------------ state
    def update_state(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into ``state.json`` (written atomically); returns the new state."""
        st = self.state()
        st.update(changes)
        write_json_atomic(self.state_path, st)
        return st

    def set_last_completed(self, generation: int, *, only_up: bool = True) -> None:
        st = self.state()
        if only_up and int(st.get("last_completed_generation", -1)) >= generation:
            return
        st["last_completed_generation"] = generation
        write_json_atomic(self.state_path, st)

    def claim(self, config_yaml: str, **info: Any) -> None:
        """Create the run directory (or take over an existing one holding this config, which
        the caller has checked): write ``config.yaml``, the run key, and a ``state.json`` that
        says running, with ``info`` and the last generation the folders on disk finished."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_name(f".{CONFIG}.tmp")
        tmp.write_text(config_yaml)
        os.replace(tmp, self.config_path)
        if not self.key_path.exists() or len(self.key_path.read_text().strip()) != 32:
            self.key_path.write_text(uuid.uuid4().hex + "\n")
        self.update_state(last_completed_generation=self.done_prefix(), **info, status="running")

    def mark_stopped(self, status: str) -> None:
        """``state.json`` says ``status`` (interrupted | failed) when the run stops; signals wait."""
        with shielded():
            try:
                if self.state().get("status") == "running":
                    self.update_state(status=status)
            except (OSError, CollapseError):
                pass  # a full disk or a damaged state: it says running, which resuming handles as well

    def mark_mirrored(self, generation: int, uri: str, run_id: str) -> None:
        write_json_atomic(self.gen_dir(generation) / MIRRORED, {"uri": uri, "run_id": run_id})

    # ----------------------------------------------------------- generations
    def check_done(self, generations: int) -> None:
        """Check every finished generation against its listing. The first that does
        not match is redone, with the ones after it (they were computed from it):
        one log line names the file."""
        for g in range(generations + 1):
            if not self.is_done(g):
                return
            problem = integrity.verify(self.gen_dir(g))
            if problem is None:
                continue
            later = [h for h in range(g, generations + 1) if self.is_done(h)]
            what = f"generation {g} is redone" if len(later) == 1 else f"generations {g}..{later[-1]} are redone"
            log.warning("%s; %s", problem, what)
            for h in reversed(later):
                (self.gen_dir(h) / DONE).unlink(missing_ok=True)
            self.set_last_completed(g - 1, only_up=False)
            return

    def restore_shared_gen0(self) -> bool:
        """Copy generation 0 from the shared cache when it is there and intact
        (a real copy, checked before and after); a damaged cache is removed and
        generation 0 recomputed. Returns whether generation 0 was restored."""
        cache = self.gen0_cache
        if cache is None or not (cache / DONE).exists() or self.is_done(0):
            return False
        d = self.gen_dir(0)
        if d.exists():
            shutil.rmtree(d)
        problem = integrity.copy_verified(cache, d)
        if problem is not None:
            log.warning("%s; the shared generation 0 in %s is not reused: it is removed and generation 0 recomputed",
                        problem, cache)
            shutil.rmtree(cache, ignore_errors=True)
            if d.exists():
                shutil.rmtree(d)
            return False
        (d / MIRRORED).unlink(missing_ok=True)  # mirrored for another run, not this one
        self.set_last_completed(0)
        return True

    def restore(self, generation: int, *, last: bool = False) -> GenerationRecord:
        """A finished generation read back: its plan, samples, metrics and timings."""
        from datasets import load_from_disk  # deferred: datasets is a heavy import

        d = self.gen_dir(generation)
        try:
            samples = load_from_disk(str(self.samples_path(generation)))
            plan = [Take(**t) for t in read_json(self.manifest_path(generation))["plan"]]
            metrics = read_json(d / METRICS)
        except Exception as e:
            raise CollapseError(f"{d}: finished generation {generation} is unreadable ({type(e).__name__}: "
                                f"{' '.join(str(e).split())[:200]}); delete {d} (and the generations after it) "
                                f"and re-run to redo it") from None
        timings = self.timings(generation)
        self.set_last_completed(generation)  # also when it came from the shared cache
        return GenerationRecord(generation, plan, metrics, samples, timings=timings if isinstance(timings, dict) else {},
                                cached=True)

    def commit(self, rec: GenerationRecord, checkpoint: Checkpointable | None = None) -> None:
        """Write generation ``rec.generation`` (``checkpoint`` saves the model), ``DONE`` last;
        then ``state.json``, and generation 0 into the shared cache. What an interrupted or
        failed attempt left is removed on the next one."""
        d = self.gen_dir(rec.generation)
        try:
            self._write(d, rec, checkpoint)
        except BaseException as e:
            if isinstance(e, CollapseError) or not isinstance(e, Exception):
                raise
            if _no_space(e):
                shutil.rmtree(d, ignore_errors=True)  # what was written of it: space back, nothing marked done
                raise CollapseError(f"{d}: no space left on device while writing generation {rec.generation}; "
                                    f"free space and re-run to resume") from None
            if isinstance(e, OSError):
                raise CollapseError(f"{e.filename or d}: cannot write generation {rec.generation} "
                                    f"({e.strerror or e}); re-run to resume once fixed") from None
            raise
        self.update_state(last_completed_generation=rec.generation)
        if rec.generation == 0 and self.gen0_cache is not None and not (self.gen0_cache / DONE).exists():
            problem = integrity.copy_verified(d, self.gen0_cache)
            if problem is not None:  # changed under us: do not share it
                log.warning("%s; generation 0 is not shared", problem)

    def _write(self, d: Path, rec: GenerationRecord, checkpoint: Checkpointable | None) -> None:
        g = rec.generation
        if d.exists():  # leftovers of an interrupted attempt
            shutil.rmtree(d)
        d.mkdir(parents=True)
        train = rec.train
        train.save_to_disk(str(self.data_path(g)))
        self._write_card(g, train)
        write_json_atomic(self.manifest_path(g), manifest(train, rec, self.regime))
        if checkpoint is not None:
            checkpoint.save(self.model_path(g))
        rec.samples.save_to_disk(str(self.samples_path(g)))
        staged = self.staging(g)
        if staged.exists():
            os.replace(staged, self.metrics_dir(g))
        with open(self.samples_jsonl(g), "w") as f:
            for row in rec.samples:
                f.write(json.dumps(row) + "\n")
        bad = nonfinite(rec.metrics)
        if bad:  # flagged, never silently null: in the log, and as a metric of its own
            log.warning("%s: generation %d: %d metrics are NaN, infinite or missing: %s", d, g, len(bad),
                        ", ".join(bad[:12]) + (", ..." if len(bad) > 12 else ""))
            rec.metrics["nonfinite_metrics"] = float(len(bad))
        write_json_atomic(d / METRICS, rec.metrics)
        write_json_atomic(d / TIMINGS, dict(rec.timings))
        integrity.record(d)
        (d / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))

    def _write_card(self, generation: int, train: Any) -> None:
        """The training set's card: the human corpus record from ``state.json`` (``data``), the
        configured gates, and the acceptance rates of the generations whose samples it holds."""
        # deferred: collapse.data imports datasets, which readers of a run directory need not load
        from collapse.data.card import training_card, write_card

        gates = list((self.config().get("sample") or {}).get("gates") or [])
        acceptance: dict[int, dict[str, float]] = {}
        for h in sorted({g for o, g in zip(train["origin"], train["generation"]) if o != "human"}):
            m = self.metrics(h)
            if isinstance(m, dict):
                acceptance[h] = {k: v for k, v in m.items() if k.startswith("gate.") and k.endswith("accept_rate")}
        text = training_card(train, generation, self.regime, self.state().get("data"), self.tokenizer,
                             gates=gates, acceptance=acceptance)
        write_card(self.data_path(generation), text)


# Where a config's runs go, and whether this process can write there (checked before any work).

def run_dir_of(cfg: Config, regime: str) -> Path:
    if cfg.run.dir:
        base = Path(cfg.run.dir)
        return base / regime if len(cfg.regimes) > 1 else base
    return Path(cfg.run.root) / cfg.run.experiment / f"{regime}_s{cfg.run.seed}"


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be a folder this process writes in (None when it can be):
    it or an ancestor is a file, or its nearest existing ancestor is not writable."""
    path = Path(path).expanduser().absolute()
    p = path
    while not p.exists():
        if p.is_symlink():  # a dangling link
            return f"{p} is a broken link"
        p = p.parent
    if not p.is_dir():
        return f"{p} is a file, not a folder" if p != path else "it is a file, not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable" if p != path else "it is not writable"
    return None


def check_writable(cfg: Config, *, run_dirs: bool = True) -> None:
    """Raise one :class:`CollapseError` line naming the key (``run.root`` or ``run.dir``)
    when a folder a run writes cannot be created or written, before any work
    (``run_dirs=False``: only ``run.root``, for ``collapse pretrain``)."""
    checks = [("run.root", Path(cfg.run.root))]
    if not run_dirs:
        pass
    elif cfg.run.dir:
        checks.append(("run.dir", Path(cfg.run.dir)))
    else:
        checks.append(("run.root", run_dir_of(cfg, cfg.regimes[0])))  # <root>/<experiment>/...
    for key, path in checks:
        why = _unwritable(path)
        if why is not None:
            hint = ("set run.root to a folder you can write, e.g. run.root=runs" if key == "run.root" else
                    "set run.dir to a folder you can write, or leave it unset (runs go under run.root)")
            raise CollapseError(f"{key}: cannot write {path} ({why}); {hint}")
