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

This module wires the parts together: the run directory
(:class:`collapse.rundir.RunDir`, the only writer of the layout above), the
LM generator, the loop (:func:`collapse.loop.run_generations`) and the
callbacks after each generation (:mod:`collapse.callbacks`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from collapse.callbacks import (CollectMetrics, DrawFigures, GenerationClock, LogGeneration, MirrorToMLflow,
                                ReleaseModel)
from collapse.config import Config, from_dict
from collapse.errors import CollapseError
from collapse.locks import FileLock
from collapse.loop import Callback, run_generations
from collapse.mixing import HUMAN, HUMAN_FRESH, MixSizes, check_sizes
from collapse.pretrain import resolve_init_from
from collapse.registries import check_names
from collapse.rundir import RunDir, RunDirReader, check_writable, run_dir_of
from collapse.signals import shielded
from collapse.tracking import KEY_TAG, RunMirror, resolve_uri

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
        return RunDirReader(self.run_dir).finished_generations()

    def samples(self, generation: int):
        """A finished generation's samples (a ``datasets.Dataset``)."""
        return RunDirReader(self.run_dir).samples(generation)


def _mix_sizes(cfg: Config, n_train_split: int) -> MixSizes:
    n = cfg.data.train_size or n_train_split
    return MixSizes(human=n, synthetic=cfg.mix.synthetic_size or n, human_fraction=cfg.mix.human_fraction,
                    subsample=cfg.mix.subsample_size, fresh=cfg.mix.fresh_size, synthetic_ratio=cfg.mix.synthetic_ratio)


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
    lock = FileLock(RunDirReader(key).lock_path).acquire(what=f"run directory {run_dir}")
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
        # deferred: datasets and tokenizers, loaded when the human data are prepared
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
        gen0_cache = self.cache / f"gen0-{self.gen0_key()}" if cfg.run.share_gen0 else None
        rundir = RunDir(run_dir, regime, gen0_cache, tokenizer=self.tokenizer)
        try:
            self._claim_run_dir(rundir, cfg)
            prev_target = _mirror_target(rundir.state())
        except KeyboardInterrupt:
            rundir.mark_stopped("interrupted")  # stopped once it said running: never left saying so
            raise
        n = cfg.run.generations
        mirror: RunMirror | None = None
        label = f"{regime} s{cfg.run.seed} "
        result = RunResult(run_dir, regime, cfg.run.seed)
        mirror_open = True  # until finish("FINISHED") returns
        clock = GenerationClock(n)
        try:
            rundir.check_done(n)
            if rundir.restore_shared_gen0():
                log.info("%s: generation 0 shared from %s", regime, gen0_cache)
            mirror = self._mirror(cfg, rundir, regime)
            result.mlflow_run_id = mirror.run_id if mirror else None
            from collapse.lm.generator import LMGenerator  # deferred: torch and transformers are heavy imports

            gen = LMGenerator(cfg, self.tokenizer, self.human, rundir, progress=cfg.run.progress, label=label,
                              sizes=self.sizes)
            # What the numbers depend on besides the config: precision used, CPU kind and flags, threads.
            rundir.update_state(runtime=gen.runtime)
            if mirror is not None:
                mirror.set_tags({f"runtime.{k}": v for k, v in gen.runtime.items()})
            callbacks: list[Callback] = [CollectMetrics(result.metrics)]
            if mirror is not None:
                callbacks.append(MirrorToMLflow(mirror, rundir, prev_target))
            callbacks += [LogGeneration(label, n, clock), ReleaseModel(gen.release, n)]
            if cfg.run.figures:
                callbacks.append(DrawFigures(lambda: result.metrics_frame, rundir.figures_dir, n, mirror))
            clock.start()
            run_generations(gen, self.pools(), regime, self.sizes, n, cfg.run.seed, store=rundir, callbacks=callbacks)
            if mirror is not None:
                mirror.finish("FINISHED")  # inside: a Ctrl-C while closing leaves "interrupted", not "running"
                mirror_open = False
        except BaseException as e:
            stopped = isinstance(e, KeyboardInterrupt)
            with shielded():
                rundir.mark_stopped("interrupted" if stopped else "failed")
                if mirror is not None and mirror_open:
                    try:
                        mirror.finish("KILLED" if stopped else "FAILED", wait_s=10)
                    except Exception as close_error:  # the original error matters more
                        log.warning("could not close MLflow run %s: %s", mirror.run_id,
                                    " ".join(str(close_error).split())[:200])
            raise
        # Last: a run marked done has its figures and a closed MLflow run.
        with shielded():
            rundir.update_state(status="done")
        return result

    def _claim_run_dir(self, rundir: RunDir, cfg: Config) -> None:
        """Create the run directory, or check that an existing one holds this config."""
        cfg_path = rundir.config_path
        if cfg_path.exists():
            try:
                old = from_dict(yaml.safe_load(cfg_path.read_text()))
            except CollapseError as e:
                raise CollapseError(f"{cfg_path}: cannot resume, the stored config is invalid ({e})") from None
            except (yaml.YAMLError, ValueError, TypeError, AttributeError) as e:
                raise CollapseError(f"{cfg_path}: cannot resume, the stored config is unreadable "
                                    f"({' '.join(str(e).split())[:160]}); delete the run directory to start over") from None
            if _fingerprint(old) != _fingerprint(cfg):
                diff = _first_difference(_fingerprint(old), _fingerprint(cfg))
                raise CollapseError(f"{rundir.path} holds a run with a different config ({diff}); choose another run.dir or delete it")
        rundir.claim(cfg.to_yaml(), experiment=cfg.run.experiment, regime=cfg.mix.regime, seed=cfg.run.seed,
                     generations=cfg.run.generations,
                     data={k: v for k, v in self.data_info.items() if k not in ("cached", "path")})

    def _mirror(self, cfg: Config, rundir: RunDir, regime: str) -> RunMirror | None:
        if not cfg.tracking.enabled:
            return None
        uri = resolve_uri(cfg.tracking.uri, self.root)
        state = rundir.state()
        tags = {"regime": regime, "seed": str(cfg.run.seed), "run_dir": str(rundir.path.resolve()),
                "data.stdlib_version": str(self.data_info.get("stdlib_version", "")),
                "data.kind": str(self.data_info.get("kind", ""))}
        for tag in cfg.tracking.tags:  # axis values of a sweep run: axis.<key>=<value>
            key, _, value = tag.partition("=")
            tags[key] = value
        if cfg.tracking.parent_run_id:  # a sweep's child run, nested under the sweep's run
            tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id
        key = rundir.run_key()
        mirror = RunMirror(uri, cfg.run.experiment, rundir.name,
                           run_id=state.get("mlflow_run_id") if state.get("tracking_uri") in (None, uri) else None,
                           artifact_root=self.root / "mlartifacts", tags=tags, key=key)
        if mirror.created or state.get("mlflow_run_id") != mirror.run_id or state.get("tracking_uri") != uri:
            mirror.set_tags({KEY_TAG: key})  # runs created before the tag existed are found by it from now on
            mirror.log_params(cfg.to_dict())
            mirror.log_params({"data_info.kept": self.data_info.get("kept"), "sizes.human": self.sizes.human,
                               "sizes.synthetic": self.sizes.synthetic})
            mirror.log_artifact(rundir.config_path)
            rundir.update_state(mlflow_run_id=mirror.run_id, tracking_uri=uri)
        return mirror


def _mirror_target(state: dict[str, Any]) -> dict[str, Any]:
    return {"uri": state.get("tracking_uri"), "run_id": state.get("mlflow_run_id")}


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}{k}.")
    return f"{path.rstrip('.')}: {a!r} there, {b!r} now"


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
