"""The metric registry: plain functions from samples (+ context) to flat numbers.

A metric takes the generation's samples (texts) and a :class:`MetricContext`
(tokenizer, human reference, the fitted model, evaluation data) and returns a
flat ``{name: float}``. ``needs_model`` metrics measure the model itself (for
example held-out cross-entropy); the others measure samples and are also
computed once on human reference text, logged as ``human.<name>``. Each
metric's docstring says what it measures, its range and the paper it follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

MetricFn = Callable[[list[str], "MetricContext"], dict[str, float]]


@dataclass
class Metric:
    name: str
    fn: MetricFn
    needs_model: bool = False

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()


@dataclass
class MetricContext:
    """What metrics may use besides the samples. Fields a metric does not need may be None."""

    tokenizer: Any = None
    model: Any = None
    device: Any = None
    precision: str = "fp32"
    generation: int = 0
    human_train_counts: Any = None  # np.ndarray (V,): token counts of the human train split
    test_blocks: Any = None  # torch.LongTensor (N, T): packed human test split
    val_blocks: Any = None  # torch.LongTensor (N, T): packed human validation split
    token_bytes: Any = None  # torch.LongTensor (V,): UTF-8 bytes per token id
    eval_batch_size: int = 32
    cache: dict = field(default_factory=dict)  # per-call memo (e.g. tokenized samples)

    def token_ids(self, samples: list[str]) -> list[list[int]]:
        key = ("ids", id(samples))
        if key not in self.cache:
            from collapse.lm.train import tokenize_texts

            self.cache[key] = tokenize_texts(self.tokenizer, samples)
        return self.cache[key]


REGISTRY: dict[str, Metric] = {}


def register(name: str, needs_model: bool = False) -> Callable[[MetricFn], MetricFn]:
    def deco(fn: MetricFn) -> MetricFn:
        if name in REGISTRY:
            raise ValueError(f"metric {name!r} registered twice")
        REGISTRY[name] = Metric(name, fn, needs_model)
        return fn

    return deco


def compute(names: list[str], samples: list[str], ctx: MetricContext, *, sample_metrics_only: bool = False) -> dict[str, float]:
    """Run the named metrics; returns one flat dict."""
    out: dict[str, float] = {}
    for n in names:
        m = REGISTRY[n]
        if sample_metrics_only and m.needs_model:
            continue
        for k, v in m.fn(samples, ctx).items():
            if k in out:
                raise ValueError(f"metric key {k!r} produced twice")
            out[k] = float(v)
    return out
