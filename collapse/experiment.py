"""One experiment: human data → tokenizer → generations 0..N of each regime.

The run directory is the source of truth and MLflow mirrors it::

    <root>/<experiment>/<regime>_s<seed>/config.yaml   resolved config
                                        state.json    last completed generation, MLflow run id
                                        gen_000/      data/ manifest.json model/ samples/
                                                      samples.jsonl metrics.json timings.json
                                                      metrics/ (per-sample values, attributions) DONE
                                        human_reference/  the same metric artifacts for held-out human code

Resuming is re-running the same command: a generation without ``DONE`` is
redone from its start; finished ones are checked against their ``files.json``
(sizes, sha256) and read back, and a damaged one is redone with those after
it. One process writes a run directory at a time (``.lock``). Generation 0 is the same
for every regime of a seed, so it is computed once per (data, tokenizer,
model, train, sample, metrics, seed, sizes), kept in ``<root>/_cache`` and
shared.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from collapse import integrity
from collapse.config import Config
from collapse.errors import CollapseError
from collapse.locks import FileLock
from collapse.mixing import HUMAN, HUMAN_FRESH, MixSizes, check_sizes, plan_counts, plan_to_dict
from collapse.orchestrator import GenerationRecord, run_generations
from collapse.pretrain import resolve_init_from
from collapse.registries import check_names
from collapse.tracking import KEY_TAG, RunMirror, read_json, resolve_uri, write_json_atomic

log = logging.getLogger("collapse")

# Config parts that may differ when resuming a run directory (they do not change results).
_RESUMABLE_KEYS = {("run", "generations"), ("run", "progress"), ("run", "dir"), ("run", "root"), ("tracking", "uri"),
                   ("tracking", "enabled"), ("tracking", "parent_run_id"), ("tracking", "tags"), ("train", "device"),
                   ("train", "nproc"), ("run", "share_gen0"), ("run", "threads"), ("run", "figures")}


def _fingerprint(cfg: Config) -> dict[str, Any]:
    d = cfg.to_dict()
    for sec, key in _RESUMABLE_KEYS:
        d[sec].pop(key, None)
    return d


@dataclass
class RunResult:
    """What ``collapse.run`` returns: where the run lives and what it measured."""

    run_dir: Path
    regime: str
    seed: int
    metrics: list[dict[str, float]] = field(default_factory=list)
    mlflow_run_id: str | None = None

    @property
    def metrics_frame(self):
        import pandas as pd

        df = pd.DataFrame(self.metrics)
        df = df[sorted(df.columns)]  # the same order whether read back from disk or just computed
        df.insert(0, "generation", range(len(df)))
        df.insert(0, "regime", self.regime)
        df.insert(1, "seed", self.seed)
        return df

    def finished_generations(self) -> list[int]:
        """The generations on disk that finished (``gen_NNN/DONE``), in order."""
        return sorted(int(d.name[4:]) for d in Path(self.run_dir).glob("gen_[0-9][0-9][0-9]") if (d / "DONE").exists())

    def samples(self, generation: int):
        from datasets import load_from_disk

        d = self.run_dir / f"gen_{generation:03d}" / "samples"
        if not isinstance(generation, int) or generation < 0 or not (d.parent / "DONE").exists() or not d.is_dir():
            done = self.finished_generations()
            have = (f"finished generations: {_span(done)}" if done else "no generation has finished yet")
            raise CollapseError(f"generation {generation!r} of {self.run_dir} does not exist ({have})")
        return load_from_disk(str(d))


def _span(gens: list[int]) -> str:
    """``0..3`` for a run of consecutive generations, else ``0, 2, 5``."""
    if gens == list(range(gens[0], gens[-1] + 1)) and len(gens) > 2:
        return f"{gens[0]}..{gens[-1]}"
    return ", ".join(map(str, gens))


def _nonfinite(metrics: dict[str, Any]) -> list[str]:
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


def _no_space(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "no space left on device" in str(e).lower():
            return True
        e = e.__cause__ or e.__context__
    return False


class RunDirStore:
    """Persists generations under ``run_dir/gen_NNN``: ``files.json`` (sizes and
    checksums of every file), then ``DONE``, are written last; a finished
    generation is checked against its listing before it is used."""

    def __init__(self, run_dir: Path, regime: str, gen0_cache: Path | None):
        self.run_dir = run_dir
        self.regime = regime
        self.gen0_cache = gen0_cache

    def gen_dir(self, g: int) -> Path:
        return self.run_dir / f"gen_{g:03d}"

    def is_done(self, g: int) -> bool:
        return (self.gen_dir(g) / "DONE").exists()

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
                (self.gen_dir(h) / "DONE").unlink(missing_ok=True)
            self._set_last_completed(g - 1, only_up=False)
            return

    def _set_last_completed(self, g: int, *, only_up: bool = True) -> None:
        state = self.run_dir / "state.json"
        st = read_state(state)
        if only_up and int(st.get("last_completed_generation", -1)) >= g:
            return
        st["last_completed_generation"] = g
        write_json_atomic(state, st)

    def restore_shared_gen0(self) -> bool:
        """Copy generation 0 from the shared cache when it is there and intact
        (a real copy, checked before and after); a damaged cache is removed and
        generation 0 recomputed. Returns whether generation 0 was restored."""
        cache = self.gen0_cache
        if cache is None or not (cache / "DONE").exists() or self.is_done(0):
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
        (d / "MIRRORED").unlink(missing_ok=True)  # mirrored for another run, not this one
        self._set_last_completed(0)
        return True

    def restore(self, g: int, generator, *, last: bool) -> GenerationRecord:
        from datasets import load_from_disk

        from collapse.mixing import Take

        d = self.gen_dir(g)
        try:
            samples = load_from_disk(str(d / "samples"))
            manifest = read_json(d / "manifest.json")
            plan = [Take(**t) for t in manifest["plan"]]
            metrics = read_json(d / "metrics.json")
        except Exception as e:
            raise CollapseError(f"{d}: finished generation {g} is unreadable ({type(e).__name__}: "
                                f"{' '.join(str(e).split())[:200]}); delete {d} (and the generations after it) "
                                f"and re-run to redo it") from None
        self._set_last_completed(g)  # also when it came from the shared cache
        return GenerationRecord(g, plan, metrics, samples)

    def commit(self, rec: GenerationRecord, generator) -> None:
        d = self.gen_dir(rec.generation)
        try:
            self._write(d, rec, generator)
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
        state = self.run_dir / "state.json"
        st = read_state(state)
        st["last_completed_generation"] = rec.generation
        write_json_atomic(state, st)
        if rec.generation == 0 and self.gen0_cache is not None and not (self.gen0_cache / "DONE").exists():
            problem = integrity.copy_verified(d, self.gen0_cache)
            if problem is not None:  # changed under us: do not share it
                log.warning("%s; generation 0 is not shared", problem)

    def _write(self, d: Path, rec: GenerationRecord, generator) -> None:
        if d.exists():  # leftovers of an interrupted attempt
            shutil.rmtree(d)
        d.mkdir(parents=True)
        train = rec.train
        train.save_to_disk(str(d / "data"))
        from collapse.data.card import write_training_card

        write_training_card(d / "data", train, rec.generation, self.regime, self.run_dir, getattr(generator, "tok", None))
        write_json_atomic(d / "manifest.json", manifest(train, rec, self.regime))
        generator.model.save_pretrained(str(d / "model"), safe_serialization=True)
        generator.tok.save_pretrained(str(d / "model"))  # a checkpoint that loads on its own
        rec.samples.save_to_disk(str(d / "samples"))
        from collapse.lm.generator import metric_staging

        staged = metric_staging(self.run_dir, rec.generation)
        if staged.exists():
            os.replace(staged, d / "metrics")
        with open(d / "samples.jsonl", "w") as f:
            for row in rec.samples:
                f.write(json.dumps(row) + "\n")
        bad = _nonfinite(rec.metrics)
        if bad:  # flagged, never silently null: in the log, and as a metric of its own
            log.warning("%s: generation %d: %d metrics are NaN, infinite or missing: %s", d, rec.generation, len(bad),
                        ", ".join(bad[:12]) + (", ..." if len(bad) > 12 else ""))
            rec.metrics["nonfinite_metrics"] = float(len(bad))
        write_json_atomic(d / "metrics.json", rec.metrics)
        write_json_atomic(d / "timings.json", dict(generator.timings))
        integrity.record(d)
        (d / "DONE").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))


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


def manifest(train, rec: GenerationRecord, regime: str) -> dict[str, Any]:
    """Counts per origin and generation, the plan, and a content hash of the training set."""
    import hashlib
    from collections import Counter

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


def _mix_sizes(cfg: Config, n_train_split: int) -> MixSizes:
    n = cfg.data.train_size or n_train_split
    return MixSizes(human=n, synthetic=cfg.mix.synthetic_size or n, human_fraction=cfg.mix.human_fraction,
                    subsample=cfg.mix.subsample_size, fresh=cfg.mix.fresh_size, synthetic_ratio=cfg.mix.synthetic_ratio)


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


_HELD: dict[Path, FileLock] = {}


def lock_run_dir(run_dir: Path) -> FileLock | None:
    """One writer per run directory: an exclusive lock on ``<run dir>/.lock`` (held
    until released, or by the kernel until the process dies); a second writer gets
    one line naming the holder. None when this process holds it already."""
    key = Path(run_dir).resolve()
    held = _HELD.get(key)
    if held is not None and held.fd is not None:
        return None
    created = []  # folders the lock creates: removed again if the run stops before writing anything
    p = key
    while not p.exists():
        created.append(p)
        p = p.parent
    lock = FileLock(key / ".lock").acquire(what=f"run directory {run_dir}")
    lock.created = created  # type: ignore[attr-defined]
    _HELD[key] = lock
    return lock


def _release_run_dir(lock: FileLock) -> None:
    lock.release()
    created = getattr(lock, "created", [])
    if created and [p.name for p in created[0].iterdir()] == [".lock"]:
        (created[0] / ".lock").unlink(missing_ok=True)
        for p in created:
            try:
                p.rmdir()
            except OSError:
                break


class Experiment:
    """Prepared, validated inputs shared by every regime of one config."""

    def __init__(self, cfg: Config):
        from collapse.data import prepare_human_data
        from collapse.lm.tokenizer import load_checkpoint_tokenizer, prepare_tokenizer

        check_names(cfg)  # a Config built in Python has not been through the loaders' check
        resolve_init_from(cfg)  # pretrain:<recipe> → the base's checkpoint folder (built on first use)
        self.cfg = cfg
        self.root = Path(cfg.run.root)
        self.cache = self.root / "_cache"
        self.human, self.data_info = prepare_human_data(cfg.data, self.cache, progress=cfg.run.progress)
        log.info("human data %s (%s): %d functions kept; card %s", self.data_info.get("key"),
                 "cached" if self.data_info.get("cached") else "built", self.data_info.get("kept", 0),
                 self.data_info.get("card"))
        n_split = len(self.human["train"])
        self.sizes = _mix_sizes(cfg, n_split)
        if cfg.data.train_size and cfg.data.train_size > n_split:
            raise CollapseError(f"data.train_size: {cfg.data.train_size} requested but the human train split holds {n_split}")
        for regime in cfg.regimes:
            check_sizes(regime, cfg.run.generations, self.sizes, n_split)
        for split in ("validation", "test"):
            if len(self.human[split]) == 0:
                raise CollapseError(f"data: the {split} split is empty; use a larger corpus or a larger data.{'val' if split == 'validation' else 'test'}_fraction")
        if len(self.human["reference"]) < self.sizes.synthetic:
            raise CollapseError(
                f"data: the reference split holds {len(self.human['reference'])} functions but each generation samples "
                f"{self.sizes.synthetic}, and the human reference lines need as many held-out functions; raise "
                "data.reference_fraction, lower mix.synthetic_size, or use a larger corpus")
        if cfg.model.init_from:
            # A checkpoint brings its own vocabulary: use the tokenizer saved with it.
            self.tokenizer, self.tokenizer_path = load_checkpoint_tokenizer(cfg.model.init_from), cfg.model.init_from
        else:
            tok_key = cfg.section_hash("tokenizer", extra=self.data_info.get("key"))
            self.tokenizer, self.tokenizer_path = prepare_tokenizer(
                list(self.human["train"]["text"]), cfg.tokenizer, self.cache, tok_key)

    def pools(self) -> dict[str, Any]:
        train = self.human["train"]
        n = self.sizes.human
        pools = {HUMAN: train.select(range(n))}
        if n < len(train):
            pools[HUMAN_FRESH] = train.select(range(n, len(train)))
        return pools

    def run_dir(self, regime: str) -> Path:
        return run_dir_of(self.cfg, regime)

    def gen0_key(self) -> str:
        return self.cfg.section_hash("data", "tokenizer", "model", "train", "sample", "metrics", extra={
            "seed": self.cfg.run.seed, "human": self.sizes.human, "synthetic": self.sizes.synthetic, "v": 1})

    def run_regime(self, regime: str) -> RunResult:
        cfg = self.cfg.for_regime(regime)
        run_dir = self.run_dir(regime)
        lock = lock_run_dir(run_dir)
        try:
            return self._run_regime(cfg, regime, run_dir)
        finally:
            if lock is not None:
                lock.release()

    def _run_regime(self, cfg: Config, regime: str, run_dir: Path) -> RunResult:
        try:
            self._claim_run_dir(run_dir, cfg)
            gen0_cache = self.cache / f"gen0-{self.gen0_key()}" if cfg.run.share_gen0 else None
            store = RunDirStore(run_dir, regime, gen0_cache)
            prev_target = _mirror_target(read_state(run_dir / "state.json"))
        except KeyboardInterrupt:
            _mark_stopped(run_dir, "interrupted")  # stopped once it said running: never left saying so
            raise
        n = cfg.run.generations
        mirror: RunMirror | None = None
        label = f"{regime} s{cfg.run.seed} "
        result = RunResult(run_dir, regime, cfg.run.seed)
        gen = None
        mirror_open = True  # until finish("FINISHED") returns
        clock = _GenerationClock(n)

        def after(rec: GenerationRecord) -> None:
            left = clock.tick(rec.generation, rec.cached)
            result.metrics.append(rec.metrics)
            d = store.gen_dir(rec.generation)
            timings = read_json(d / "timings.json") if (d / "timings.json").exists() else {}
            if mirror is not None and not _mirrored_to(d, mirror, prev_target):
                # Idempotent: steps already in the store are not logged again, artifacts overwrite.
                mirror.log_metrics(rec.metrics, step=rec.generation)
                mirror.log_metrics({f"time.{k}": v for k, v in timings.items()}, step=rec.generation)
                mirror.log_artifact(d / "samples.jsonl", f"gen_{rec.generation:03d}")
                mirror.log_artifact(d / "manifest.json", f"gen_{rec.generation:03d}")
                if (d / "metrics").is_dir():
                    mirror.log_artifacts(d / "metrics", f"gen_{rec.generation:03d}/metrics")
                write_json_atomic(d / "MIRRORED", {"uri": mirror.uri, "run_id": mirror.run_id})
            m = rec.metrics
            log.info(
                "%sgen %d/%d%s | train %s | sample %s | test_ce %s | syntax %s | distinct_4 %s%s",
                label, rec.generation, n, " (cached)" if rec.cached else "",
                _fmt(timings.get("train_s"), "s"), _fmt(timings.get("sample_s"), "s"),
                _fmt(m.get("test_ce")), _fmt(m.get("syntax_valid")), _fmt(m.get("distinct_4")),
                f" | left ~{_duration(left)}" if left is not None else "",
            )
            if rec.generation < n:
                gen.release()

        try:
            store.check_done(n)
            if store.restore_shared_gen0():
                log.info("%s: generation 0 shared from %s", regime, gen0_cache)
            mirror = self._mirror(cfg, run_dir, regime)
            result.mlflow_run_id = mirror.run_id if mirror else None
            from collapse.lm.generator import LMGenerator

            gen = LMGenerator(cfg, self.tokenizer, self.human, run_dir, progress=cfg.run.progress, label=label,
                              sizes=self.sizes)
            # What the numbers depend on besides the config: precision used, CPU kind and flags, threads.
            st = read_state(run_dir / "state.json")
            st["runtime"] = gen.runtime
            write_json_atomic(run_dir / "state.json", st)
            if mirror is not None:
                mirror.set_tags({f"runtime.{k}": v for k, v in gen.runtime.items()})
            clock.start()
            run_generations(gen, self.pools(), regime, self.sizes, n, cfg.run.seed, store=store, on_generation=after)
            if cfg.run.figures:
                from collapse.reporting import plot_run

                figs = plot_run(result.metrics_frame, run_dir / "figures")
                if mirror is not None:
                    for fig in figs:
                        mirror.log_artifact(fig, "figures")
            if mirror is not None:
                mirror.finish("FINISHED")  # inside: a Ctrl-C while closing leaves "interrupted", not "running"
                mirror_open = False
        except BaseException as e:
            from collapse.signals import shielded

            stopped = isinstance(e, KeyboardInterrupt)
            with shielded():
                _mark_stopped(run_dir, "interrupted" if stopped else "failed")
                if mirror is not None and mirror_open:
                    try:
                        mirror.finish("KILLED" if stopped else "FAILED", wait_s=10)
                    except Exception as close_error:  # the original error matters more
                        log.warning("could not close MLflow run %s: %s", mirror.run_id,
                                    " ".join(str(close_error).split())[:200])
            raise
        # Last: a run marked done has its figures and a closed MLflow run.
        from collapse.signals import shielded

        with shielded():
            st = read_state(run_dir / "state.json")
            st["status"] = "done"
            write_json_atomic(run_dir / "state.json", st)
        return result

    def _claim_run_dir(self, run_dir: Path, cfg: Config) -> None:
        """Create the run directory, or check that an existing one holds this config."""
        cfg_path = run_dir / "config.yaml"
        if cfg_path.exists():
            from collapse.config import from_dict

            try:
                old = from_dict(yaml.safe_load(cfg_path.read_text()))
            except CollapseError as e:
                raise CollapseError(f"{cfg_path}: cannot resume, the stored config is invalid ({e})") from None
            except (yaml.YAMLError, ValueError, TypeError, AttributeError) as e:
                raise CollapseError(f"{cfg_path}: cannot resume, the stored config is unreadable "
                                    f"({' '.join(str(e).split())[:160]}); delete the run directory to start over") from None
            if _fingerprint(old) != _fingerprint(cfg):
                diff = _first_difference(_fingerprint(old), _fingerprint(cfg))
                raise CollapseError(f"{run_dir} holds a run with a different config ({diff}); choose another run.dir or delete it")
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = cfg_path.with_name(".config.yaml.tmp")
        tmp.write_text(cfg.to_yaml())
        os.replace(tmp, cfg_path)
        key = run_dir / ".run_key"  # the run directory's identity, tagged on its MLflow run
        if not key.exists() or len(key.read_text().strip()) != 32:
            key.write_text(uuid.uuid4().hex + "\n")
        state = run_dir / "state.json"
        st = read_state(state)
        done = 0
        while (run_dir / f"gen_{done:03d}" / "DONE").exists():
            done += 1
        st["last_completed_generation"] = done - 1  # what the generations on disk say
        st.update({"experiment": cfg.run.experiment, "regime": cfg.mix.regime, "seed": cfg.run.seed,
                   "generations": cfg.run.generations, "status": "running",
                   "data": {k: v for k, v in self.data_info.items() if k not in ("cached", "path")}})
        write_json_atomic(state, st)

    def _mirror(self, cfg: Config, run_dir: Path, regime: str) -> RunMirror | None:
        if not cfg.tracking.enabled:
            return None
        uri = resolve_uri(cfg.tracking.uri, self.root)
        state = read_state(run_dir / "state.json")
        tags = {"regime": regime, "seed": str(cfg.run.seed), "run_dir": str(run_dir.resolve()),
                "data.stdlib_version": str(self.data_info.get("stdlib_version", "")),
                "data.kind": str(self.data_info.get("kind", ""))}
        for tag in cfg.tracking.tags:  # axis values of a sweep run: axis.<key>=<value>
            key, _, value = tag.partition("=")
            tags[key] = value
        if cfg.tracking.parent_run_id:  # a sweep's child run, nested under the sweep's run
            tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id
        key = (run_dir / ".run_key").read_text().strip()
        mirror = RunMirror(uri, cfg.run.experiment, run_dir.name,
                           run_id=state.get("mlflow_run_id") if state.get("tracking_uri") in (None, uri) else None,
                           artifact_root=self.root / "mlartifacts", tags=tags, key=key)
        if mirror.created or state.get("mlflow_run_id") != mirror.run_id or state.get("tracking_uri") != uri:
            mirror.set_tags({KEY_TAG: key})  # runs created before the tag existed are found by it from now on
            mirror.log_params(cfg.to_dict())
            mirror.log_params({"data_info.kept": self.data_info.get("kept"), "sizes.human": self.sizes.human,
                               "sizes.synthetic": self.sizes.synthetic})
            mirror.log_artifact(run_dir / "config.yaml")
            state["mlflow_run_id"] = mirror.run_id
            state["tracking_uri"] = uri
            write_json_atomic(run_dir / "state.json", state)
        return mirror


def _mark_stopped(run_dir: Path, status: str) -> None:
    """``state.json`` says ``status`` (interrupted | failed) when the run stops; signals wait."""
    from collapse.signals import shielded

    with shielded():
        try:
            st = read_state(run_dir / "state.json")
            if st.get("status") == "running":
                st["status"] = status
                write_json_atomic(run_dir / "state.json", st)
        except (OSError, CollapseError):
            pass  # a full disk or a damaged state: it says running, which resuming handles as well


def _mirror_target(state: dict[str, Any]) -> dict[str, Any]:
    return {"uri": state.get("tracking_uri"), "run_id": state.get("mlflow_run_id")}


def _mirrored_to(d: Path, mirror: RunMirror, prev_target: dict[str, Any]) -> bool:
    """Whether generation ``d`` is already in ``mirror``'s MLflow run: its ``MIRRORED``
    marker names the store and run it was logged to (an empty marker, from before
    markers named them, means the run ``state.json`` named at the start)."""
    p = d / "MIRRORED"
    if not p.exists():
        return False
    try:
        text = p.read_text().strip()
        target = json.loads(text) if text else prev_target
    except (OSError, ValueError):
        return False
    return isinstance(target, dict) and target.get("uri") == mirror.uri and target.get("run_id") == mirror.run_id


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}{k}.")
    return f"{path.rstrip('.')}: {a!r} there, {b!r} now"


class _GenerationClock:
    """The time left for a run: the mean wall time of the generations computed in this
    process (restored ones cost next to nothing and are left out) times the generations left."""

    def __init__(self, last: int):
        self.last = last
        self.computed: list[float] = []
        self.start()

    def start(self) -> None:
        self.mark = time.monotonic()

    def tick(self, generation: int, cached: bool) -> float | None:
        """Call once per finished generation; returns the seconds left, None for a cached
        generation, before any generation was computed, or after the last one."""
        now = time.monotonic()
        took, self.mark = now - self.mark, now
        if cached:
            return None
        self.computed.append(took)
        left = self.last - generation
        return left * sum(self.computed) / len(self.computed) if left > 0 else None


def _duration(seconds: float) -> str:
    """``42s``, ``3m20s``, ``2h05m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    return f"{v:.1f}{unit}" if unit else f"{v:.3f}"


def run_experiment(cfg: Config) -> list[RunResult]:
    """Run every regime of ``cfg`` (generations 0..N each); resumes finished work."""
    import datasets
    import transformers

    if cfg.run.threads:
        import torch

        torch.set_num_threads(cfg.run.threads)
    datasets.disable_progress_bars()  # our own bars cover the long work
    transformers.utils.logging.disable_progress_bar()
    # Every run directory is claimed before any work, so a second writer is refused at once.
    check_writable(cfg)  # an unwritable run.root or run.dir: one line, before the data pipeline
    locks: list[FileLock | None] = []
    try:
        for r in cfg.regimes:
            locks.append(lock_run_dir(run_dir_of(cfg, r)))
        exp = Experiment(cfg)
        log.info("%s: %d human train / %d val / %d test functions (%s); pool %d human, %d synthetic per generation",
                 cfg.run.experiment, len(exp.human["train"]), len(exp.human["validation"]), len(exp.human["test"]),
                 exp.data_info.get("kind", "?"), exp.sizes.human, exp.sizes.synthetic)
        return [exp.run_regime(r) for r in cfg.regimes]
    finally:
        for lock in locks:
            if lock is not None:
                _release_run_dir(lock)
