"""The metric registry: plain functions from samples (+ context) to flat numbers.

A metric takes the generation's samples (texts) and a :class:`MetricContext`
(tokenizer, human reference, the fitted model, evaluation data) and returns a
flat ``{name: float}``. ``needs_model`` metrics measure the model itself (for
example held-out cross-entropy); the others measure samples and are also
computed once on human reference text, logged as ``human.<name>``. Each
metric's docstring says what it measures, its range and the paper it follows.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from collapse.config import MetricsConfig, RunConfig, SampleConfig
from collapse.seeding import generation_rng

#: What :meth:`MetricContext.setting` falls back to: the config's defaults, stated there once
#: (``MetricsConfig.settings()``, plus the two knobs the generator adds from other sections).
DEFAULT_SETTINGS: dict[str, Any] = {**MetricsConfig().settings(), "prompt_lines": SampleConfig().prompt_lines,
                                    "progress": RunConfig().progress}

MetricFn = Callable[[list[str], "MetricContext"], dict[str, float]]


@dataclass
class Metric:
    name: str
    fn: MetricFn
    needs_model: bool = False
    superlinear: bool = False  # cost grows faster than n log n
    subsampled: bool = False  # runs on a seeded subsample (every superlinear metric does)

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()


@dataclass
class MetricContext:
    """What metrics may use besides the samples. Fields a metric does not need may be None.

    ``shared`` lives as long as the generator (one run), so indexes built on
    the human data (memorization) are built once; ``cache`` lives for one
    ``compute`` call. ``loaders`` hold callables for expensive things a metric
    may or may not ask for (``reference_model``: the generation-0 model;
    ``synthetic_history``: earlier generations' samples)."""

    tokenizer: Any = None
    model: Any = None
    device: Any = None
    precision: str = "fp32"
    generation: int = 0
    seed: int = 0
    settings: dict = field(default_factory=dict)  # MetricsConfig.settings(): per-metric knobs
    artifact_dir: Path | None = None  # where large outputs (per-sample values, attributions) go
    human_train_counts: Any = None  # np.ndarray (V,): token counts of the human train split
    human_train_texts: list[str] | None = None
    human_train_sources: list[str] | None = None  # "file:start-end" per human train text
    human_trained: int | None = None  # leading human train texts a model of the run trained on so far (None: all)
    human_test_texts: list[str] | None = None
    test_blocks: Any = None  # torch.LongTensor (N, T): packed human test split
    val_blocks: Any = None  # torch.LongTensor (N, T): packed human validation split
    token_bytes: Any = None  # torch.LongTensor (V,): UTF-8 bytes per token id
    eval_batch_size: int = 32
    loaders: dict[str, Callable[[], Any]] = field(default_factory=dict)
    shared: dict = field(default_factory=dict)  # memo across generations of one run
    cache: dict = field(default_factory=dict)  # per-call memo (e.g. tokenized samples)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per metric, filled by compute

    def token_ids(self, samples: list[str]) -> list[list[int]]:
        key = ("ids", id(samples))
        hit = self.cache.get(key)
        if hit is None or hit[0] is not samples:  # the list itself is kept, so its id cannot be reused
            from collapse.lm.train import tokenize_texts  # torch: imported when used

            hit = self.cache[key] = (samples, tokenize_texts(self.tokenizer, samples))
        return hit[1]

    def setting(self, name: str) -> Any:
        """``settings[name]``; when it is missing or None, the config's default (:data:`DEFAULT_SETTINGS`)."""
        v = self.settings.get(name)
        return DEFAULT_SETTINGS[name] if v is None else v

    def load(self, name: str, *, per_run: bool = False) -> Any:
        """The value of loader ``name``, memoized for this call (for the whole run
        when ``per_run``: e.g. the generation-0 model); None when there is no such loader."""
        memo = self.shared if per_run else self.cache
        key = ("loaded", name)
        if key not in memo:
            fn = self.loaders.get(name)
            memo[key] = fn() if fn is not None else None
        return memo[key]

    def subsample_index(self, total: int, purpose: str, n: int | None = None) -> np.ndarray:
        """Sorted indices of a seeded subsample of at most ``n`` (default
        ``settings['subsample']``) of ``total`` items, the same for the same
        (seed, generation, purpose)."""
        n = int(n or self.setting("subsample"))
        if total <= n:
            return np.arange(total)
        return np.sort(generation_rng(self.seed, self.generation, f"metric:{purpose}").choice(total, n, replace=False))

    def subsample(self, samples: list[str], purpose: str, n: int | None = None) -> list[str]:
        """The samples at :meth:`subsample_index`."""
        return [samples[i] for i in self.subsample_index(len(samples), purpose, n)]

    def artifact(self, name: str) -> Path | None:
        """Path for a large output of this generation, or None when artifacts are not kept."""
        if self.artifact_dir is None:
            return None
        d = Path(self.artifact_dir)
        d.mkdir(parents=True, exist_ok=True)
        return d / name

    def write_jsonl(self, name: str, rows: Iterable[dict]) -> Path | None:
        """Write rows as JSON lines atomically (temp file + rename); None when artifacts are not kept."""
        path = self.artifact(name)
        if path is None:
            return None
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return path


REGISTRY: dict[str, Metric] = {}


def register(name: str, needs_model: bool = False, superlinear: bool = False,
             subsampled: bool | None = None) -> Callable[[MetricFn], MetricFn]:
    """Register a metric under ``name``. ``superlinear`` marks metrics whose cost
    grows faster than n log n; they, and others marked ``subsampled`` (a model
    forward pass per sample), work on ``MetricContext.subsample``."""

    def deco(fn: MetricFn) -> MetricFn:
        if name in REGISTRY:
            raise ValueError(f"metric {name!r} registered twice")
        REGISTRY[name] = Metric(name, fn, needs_model, superlinear, superlinear if subsampled is None else subsampled)
        return fn

    return deco


def compute(names: list[str], samples: list[str], ctx: MetricContext, *, sample_metrics_only: bool = False,
            progress: bool = False, desc: str = "metrics") -> dict[str, float]:
    """Run the named metrics; returns one flat dict (seconds per metric land in ``ctx.timings``).
    ``progress``: a bar over the metrics, naming the one running."""
    from tqdm.auto import tqdm

    out: dict[str, float] = {}
    todo = [n for n in names if not (sample_metrics_only and REGISTRY[n].needs_model)]
    bar = tqdm(todo, desc=desc, unit="metric", disable=not progress, leave=False, dynamic_ncols=True)
    for n in bar:
        m = REGISTRY[n]
        bar.set_postfix_str(n, refresh=False)
        t0 = time.perf_counter()
        for k, v in m.fn(samples, ctx).items():
            if k in out:
                raise ValueError(f"metric key {k!r} produced twice")
            out[k] = float(v)
        ctx.timings[n] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------- logged keys: how to show them
@dataclass(frozen=True)
class KeyInfo:
    """How a logged key is shown: ``display`` (a short name for a panel title or
    a table), ``unit`` ("" when dimensionless), ``log_scale`` (its values span
    decades: plot on a log axis), ``better`` ("higher", "lower", or None where
    neither is: a shift or a size) and the registered ``metric`` that logs it
    (None for the run's own bookkeeping)."""

    display: str
    unit: str = ""
    log_scale: bool = False
    better: str | None = None
    metric: str | None = None

    @property
    def label(self) -> str:
        """``display (unit)``: an axis label."""
        return f"{self.display} ({self.unit})" if self.unit else self.display


def _copy_keys() -> dict[str, KeyInfo]:
    out = {}
    for prefix, metric, what in (("copy_", "verbatim_copy", "human code"), ("corpus_copy_", "corpus_copy", "the corpus"),
                                 ("synthetic_copy_", "synthetic_copy", "earlier generations")):
        out[f"{prefix}rate"] = KeyInfo(f"samples copying {what}", "share", better="lower", metric=metric)
        out[f"{prefix}token_share"] = KeyInfo(f"tokens copied from {what}", "share", better="lower", metric=metric)
        out[f"{prefix}longest_max"] = KeyInfo(f"longest copy of {what}", "tokens", better="lower", metric=metric)
        out[f"{prefix}longest_median"] = KeyInfo(f"median copy of {what}", "tokens", better="lower", metric=metric)
    return out


_ORDINAL = {1: "uni", 2: "bi", 3: "tri"}

# Every key the registered metrics log (and the run's bookkeeping), read by every
# figure, table and notebook. ``human.<key>`` is shown as ``<key>``; keys missing
# here fall back to the key itself (see :func:`key_info`).
KEYS: dict[str, KeyInfo] = {
    # quality
    "test_ce": KeyInfo("held-out cross-entropy", "nats/token", better="lower", metric="test_ce"),
    "test_bpb": KeyInfo("held-out bits per byte", "bits/byte", better="lower", metric="test_ce"),
    "val_loss": KeyInfo("validation cross-entropy", "nats/token", better="lower", metric="val_loss"),
    "prompt_ce": KeyInfo("completion cross-entropy", "nats/token", better="lower", metric="prompt_ce"),
    "prompt_bpb": KeyInfo("completion bits per byte", "bits/byte", better="lower", metric="prompt_ce"),
    "syntax_valid": KeyInfo("samples that parse", "share", better="higher", metric="syntax_valid"),
    "compile_ok": KeyInfo("samples that compile", "share", better="higher", metric="static_checks"),
    "undefined_free": KeyInfo("samples w/o undefined names", "share", better="higher", metric="static_checks"),
    # diversity
    **{f"distinct_{n}": KeyInfo(f"distinct {_ORDINAL.get(n, f'{n}-')}grams" if n < 4 else f"distinct {n}-grams",
                                "share", better="higher", metric="distinct_n") for n in range(1, 5)},
    **{f"ngram_entropy_{n}": KeyInfo(f"{n}-gram entropy", "bits", better="higher", metric="ngram_entropy")
       for n in (1, 2, 4)},
    "dup_rate": KeyInfo("duplicate samples", "share", better="lower", metric="exact_duplicates"),
    "gzip_ratio": KeyInfo("gzip compression ratio", "compressed/raw", better="higher", metric="gzip_ratio"),
    "self_bleu": KeyInfo("self-BLEU", "0–100", better="lower", metric="self_bleu"),
    "ast_node_entropy": KeyInfo("AST node-type entropy", "bits", better="higher", metric="ast_diversity"),
    "ast_node_types": KeyInfo("AST node types used", "count", better="higher", metric="ast_diversity"),
    "ast_shape_distinct": KeyInfo("distinct AST shapes", "share", better="higher", metric="ast_diversity"),
    "identifiers_per_1k": KeyInfo("distinct identifiers", "per 1k tokens", better="higher", metric="identifier_vocab"),
    "vendi": KeyInfo("Vendi score", "effective samples", better="higher", metric="semantic_diversity"),
    "cosine_distance": KeyInfo("mean cosine distance", "", better="higher", metric="semantic_diversity"),
    "mean_tokens": KeyInfo("sample length", "tokens", metric="mean_length"),
    "mean_chars": KeyInfo("sample length", "characters", metric="mean_length"),
    # tails and drift
    "kl_unigram": KeyInfo("unigram KL(samples‖human)", "bits", better="lower", metric="unigram_divergence"),
    "kl_unigram_reverse": KeyInfo("unigram KL(human‖samples)", "bits", better="lower", metric="unigram_divergence"),
    "js_unigram": KeyInfo("unigram JS divergence", "bits", better="lower", metric="unigram_divergence"),
    "vocab_coverage": KeyInfo("human token types used", "share", better="higher", metric="vocab_coverage"),
    "ppl_gen0": KeyInfo("perplexity under the gen-0 model", "", log_scale=True, metric="perplexity_gen0"),
    **{f"ppl_gen0_q{q:02d}": KeyInfo(f"gen-0 perplexity, {'median' if q == 50 else f'{q}th pct.'}", "",
                                     log_scale=True, metric="perplexity_gen0") for q in (5, 25, 50, 75, 95)},
    "ppl_gen0_logmean": KeyInfo("gen-0 log perplexity", "nats/token", metric="perplexity_gen0"),
    "tail_type_coverage": KeyInfo("rare token types used", "share", better="higher", metric="tail_coverage"),
    "tail_mass": KeyInfo("rare-token mass", "share of tokens", better="higher", metric="tail_coverage"),
    "zipf_exponent": KeyInfo("Zipf exponent", "", metric="zipf"),
    "length_w1": KeyInfo("length shift (W1)", "tokens", better="lower", metric="length_shift"),
    # memorization
    **_copy_keys(),
    # the run's bookkeeping
    "train_loss": KeyInfo("training loss", "nats/token", better="lower"),
    "train_steps": KeyInfo("training steps", "steps"),
    "train_tokens": KeyInfo("training tokens", "tokens", log_scale=True),
    "train_examples": KeyInfo("training examples", "examples"),
    "train_flops": KeyInfo("training compute", "FLOPs", log_scale=True),
    "model_params": KeyInfo("parameters", "count", log_scale=True),
    "sample_eos_rate": KeyInfo("samples ending in EOS", "share"),
    "nonfinite_metrics": KeyInfo("non-finite metrics", "count", better="lower"),
}

# Keys with a parameter in their name: (pattern, info from the match).
_KEY_PATTERNS: list[tuple[str, Callable[[Any], KeyInfo]]] = [
    (r"(copy_|corpus_copy_|synthetic_copy_)(rate|token_share)_k(\d+)",
     lambda m: (lambda base: KeyInfo(f"{base.display}, ≥ {m.group(3)} tokens", base.unit, base.log_scale, base.better,
                                     base.metric))(KEYS[m.group(1) + m.group(2)])),
    (r"humaneval_pass_at_(\d+)",
     lambda m: KeyInfo(f"HumanEval pass@{m.group(1)}", "share", better="higher", metric="humaneval")),
]


def key_info(key: str) -> KeyInfo:
    """How to show a logged key (``human.<key>`` as ``<key>``); a key without an
    entry in :data:`KEYS` is shown as itself, without unit, on a linear axis."""
    import re

    base = key[len("human."):] if key.startswith("human.") else key
    if base in KEYS:
        return KEYS[base]
    for pattern, make in _KEY_PATTERNS:
        m = re.fullmatch(pattern, base)
        if m:
            return make(m)
    return KeyInfo(base)


def key_label(key: str) -> str:
    """``display (unit)`` of a logged key: e.g. ``test_ce`` → "held-out cross-entropy (nats/token)"."""
    return key_info(key).label
