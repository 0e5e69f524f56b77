"""One experiment: human data → tokenizer → generations 0..N of each regime.

The run directory is the source of truth and MLflow mirrors it::

    <root>/<experiment>/<regime>_s<seed>/config.yaml   resolved config
                                        state.json    last completed generation, MLflow run id
                                        gen_000/      data/ manifest.json model/ samples/
                                                      samples.jsonl metrics.json timings.json
                                                      metrics/ (per-sample values, attributions) DONE
                                        human_reference/  the same metric artifacts for held-out human code

Resuming is re-running the same command: a generation without ``DONE`` is
redone from its start; finished ones are read back. Generation 0 is the same
for every regime of a seed, so it is computed once per (data, tokenizer,
model, train, sample, metrics, seed, sizes), kept in ``<root>/_cache`` and
shared.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from collapse.config import Config
from collapse.errors import CollapseError
from collapse.mixing import HUMAN, HUMAN_FRESH, MixSizes, check_sizes, plan_counts, plan_to_dict
from collapse.orchestrator import GenerationRecord, run_generations
from collapse.pretrain import resolve_init_from
from collapse.tracking import RunMirror, read_json, resolve_uri, write_json_atomic

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

    def samples(self, generation: int):
        from datasets import load_from_disk

        return load_from_disk(str(self.run_dir / f"gen_{generation:03d}" / "samples"))


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically (hard links where possible: files are never modified in place)."""
    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp, copy_function=link_or_copy)
    try:
        os.rename(tmp, dst)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


class RunDirStore:
    """Persists generations under ``run_dir/gen_NNN`` with ``DONE`` written last."""

    def __init__(self, run_dir: Path, regime: str, gen0_cache: Path | None):
        self.run_dir = run_dir
        self.regime = regime
        self.gen0_cache = gen0_cache

    def gen_dir(self, g: int) -> Path:
        return self.run_dir / f"gen_{g:03d}"

    def is_done(self, g: int) -> bool:
        return (self.gen_dir(g) / "DONE").exists()

    def restore(self, g: int, generator, *, last: bool) -> GenerationRecord:
        from datasets import load_from_disk

        d = self.gen_dir(g)
        samples = load_from_disk(str(d / "samples"))
        manifest = read_json(d / "manifest.json")
        from collapse.mixing import Take

        plan = [Take(**t) for t in manifest["plan"]]
        return GenerationRecord(g, plan, read_json(d / "metrics.json"), samples)

    def commit(self, rec: GenerationRecord, generator) -> None:
        d = self.gen_dir(rec.generation)
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
        write_json_atomic(d / "metrics.json", rec.metrics)
        write_json_atomic(d / "timings.json", dict(generator.timings))
        (d / "DONE").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        state = self.run_dir / "state.json"
        st = read_json(state) if state.exists() else {}
        st["last_completed_generation"] = rec.generation
        write_json_atomic(state, st)
        if rec.generation == 0 and self.gen0_cache is not None and not self.gen0_cache.exists():
            self.gen0_cache.parent.mkdir(parents=True, exist_ok=True)
            _copy_tree(d, self.gen0_cache)


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


class Experiment:
    """Prepared, validated inputs shared by every regime of one config."""

    def __init__(self, cfg: Config):
        from collapse.data import prepare_human_data
        from collapse.lm.tokenizer import load_checkpoint_tokenizer, prepare_tokenizer

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
        cfg = self.cfg
        if cfg.run.dir:
            base = Path(cfg.run.dir)
            return base / regime if len(cfg.regimes) > 1 else base
        return self.root / cfg.run.experiment / f"{regime}_s{cfg.run.seed}"

    def gen0_key(self) -> str:
        return self.cfg.section_hash("data", "tokenizer", "model", "train", "sample", "metrics", extra={
            "seed": self.cfg.run.seed, "human": self.sizes.human, "synthetic": self.sizes.synthetic, "v": 1})

    def run_regime(self, regime: str) -> RunResult:
        cfg = self.cfg.for_regime(regime)
        run_dir = self.run_dir(regime)
        self._claim_run_dir(run_dir, cfg)
        gen0_cache = self.cache / f"gen0-{self.gen0_key()}" if cfg.run.share_gen0 else None
        store = RunDirStore(run_dir, regime, gen0_cache)
        if gen0_cache is not None and (gen0_cache / "DONE").exists() and not store.is_done(0):
            if store.gen_dir(0).exists():
                shutil.rmtree(store.gen_dir(0))
            _copy_tree(gen0_cache, store.gen_dir(0))
            log.info("%s: generation 0 shared from %s", regime, gen0_cache)

        mirror = self._mirror(cfg, run_dir, regime)
        from collapse.lm.generator import LMGenerator

        label = f"{regime} s{cfg.run.seed} "
        gen = LMGenerator(cfg, self.tokenizer, self.human, run_dir, progress=cfg.run.progress, label=label,
                          sizes=self.sizes)
        result = RunResult(run_dir, regime, cfg.run.seed, mlflow_run_id=mirror.run_id if mirror else None)
        n = cfg.run.generations

        def after(rec: GenerationRecord) -> None:
            result.metrics.append(rec.metrics)
            d = store.gen_dir(rec.generation)
            timings = read_json(d / "timings.json") if (d / "timings.json").exists() else {}
            if mirror is not None and not (d / "MIRRORED").exists():
                mirror.log_metrics(rec.metrics, step=rec.generation)
                mirror.log_metrics({f"time.{k}": v for k, v in timings.items()}, step=rec.generation)
                mirror.log_artifact(d / "samples.jsonl", f"gen_{rec.generation:03d}")
                mirror.log_artifact(d / "manifest.json", f"gen_{rec.generation:03d}")
                if (d / "metrics").is_dir():
                    mirror.log_artifacts(d / "metrics", f"gen_{rec.generation:03d}/metrics")
                (d / "MIRRORED").write_text("")
            m = rec.metrics
            log.info(
                "%sgen %d/%d | train %s | sample %s | test_ce %s | syntax %s | distinct_4 %s",
                label, rec.generation, n,
                _fmt(timings.get("train_s"), "s"), _fmt(timings.get("sample_s"), "s"),
                _fmt(m.get("test_ce")), _fmt(m.get("syntax_valid")), _fmt(m.get("distinct_4")),
            )
            if rec.generation < n:
                gen.release()

        try:
            run_generations(gen, self.pools(), regime, self.sizes, n, cfg.run.seed, store=store, on_generation=after)
        except BaseException:
            if mirror is not None:
                mirror.finish("KILLED")
            raise
        if cfg.run.figures:
            from collapse.reporting import plot_run

            figs = plot_run(result.metrics_frame, run_dir / "figures")
            if mirror is not None:
                for fig in figs:
                    mirror.log_artifact(fig, "figures")
        if mirror is not None:
            mirror.finish("FINISHED")
        # Last: a run marked done has its figures and a closed MLflow run.
        st = read_json(run_dir / "state.json")
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
            if _fingerprint(old) != _fingerprint(cfg):
                diff = _first_difference(_fingerprint(old), _fingerprint(cfg))
                raise CollapseError(f"{run_dir} holds a run with a different config ({diff}); choose another run.dir or delete it")
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = cfg_path.with_name(".config.yaml.tmp")
        tmp.write_text(cfg.to_yaml())
        os.replace(tmp, cfg_path)
        state = run_dir / "state.json"
        st = read_json(state) if state.exists() else {"last_completed_generation": -1}
        st.update({"experiment": cfg.run.experiment, "regime": cfg.mix.regime, "seed": cfg.run.seed,
                   "generations": cfg.run.generations, "status": "running",
                   "data": {k: v for k, v in self.data_info.items() if k not in ("cached", "path")}})
        write_json_atomic(state, st)

    def _mirror(self, cfg: Config, run_dir: Path, regime: str) -> RunMirror | None:
        if not cfg.tracking.enabled:
            return None
        uri = resolve_uri(cfg.tracking.uri, self.root)
        state = read_json(run_dir / "state.json")
        tags = {"regime": regime, "seed": str(cfg.run.seed), "run_dir": str(run_dir.resolve()),
                "data.stdlib_version": str(self.data_info.get("stdlib_version", "")),
                "data.kind": str(self.data_info.get("kind", ""))}
        for tag in cfg.tracking.tags:  # axis values of a sweep run: axis.<key>=<value>
            key, _, value = tag.partition("=")
            tags[key] = value
        if cfg.tracking.parent_run_id:  # a sweep's child run, nested under the sweep's run
            tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id
        mirror = RunMirror(uri, cfg.run.experiment, run_dir.name, run_id=state.get("mlflow_run_id"),
                           artifact_root=self.root / "mlartifacts", tags=tags)
        if state.get("mlflow_run_id") != mirror.run_id:
            mirror.log_params(cfg.to_dict())
            mirror.log_params({"data_info.kept": self.data_info.get("kept"), "sizes.human": self.sizes.human,
                               "sizes.synthetic": self.sizes.synthetic})
            mirror.log_artifact(run_dir / "config.yaml")
            state["mlflow_run_id"] = mirror.run_id
            state["tracking_uri"] = uri
            write_json_atomic(run_dir / "state.json", state)
        return mirror


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}{k}.")
    return f"{path.rstrip('.')}: {a!r} there, {b!r} now"


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
    exp = Experiment(cfg)
    log.info("%s: %d human train / %d val / %d test functions (%s); pool %d human, %d synthetic per generation",
             cfg.run.experiment, len(exp.human["train"]), len(exp.human["validation"]), len(exp.human["test"]),
             exp.data_info.get("kind", "?"), exp.sizes.human, exp.sizes.synthetic)
    return [exp.run_regime(r) for r in cfg.regimes]
