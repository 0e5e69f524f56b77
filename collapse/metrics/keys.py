"""Which metric logs which key: ``distinct_4`` is logged by ``distinct_n``.

``metrics.names`` takes metric names (``collapse metrics`` lists them) while
figures, tables and MLflow show the keys the metrics log. A key given where a
name is expected gets the name that provides it; a typo gets the nearest
names. ``tests/test_cli.py`` checks every key of the golden tiny run against
this table.
"""

from __future__ import annotations

import difflib
import re

from collapse.metrics.registry import REGISTRY

# metric name -> patterns (full match) of the keys it logs
KEY_PATTERNS: dict[str, tuple[str, ...]] = {
    "test_ce": ("test_ce", "test_bpb"),
    "val_loss": ("val_loss",),
    "prompt_ce": ("prompt_ce", "prompt_bpb"),
    "syntax_valid": ("syntax_valid",),
    "static_checks": ("compile_ok", "undefined_free"),
    "humaneval": (r"humaneval_pass_at_\d+",),
    "distinct_n": (r"distinct_\d+",),
    "mean_length": ("mean_tokens", "mean_chars"),
    "unigram_divergence": ("kl_unigram", "kl_unigram_reverse", "js_unigram"),
    "vocab_coverage": ("vocab_coverage",),
    "ngram_entropy": (r"ngram_entropy_\d+",),
    "exact_duplicates": ("dup_rate",),
    "gzip_ratio": ("gzip_ratio",),
    "self_bleu": ("self_bleu",),
    "ast_diversity": ("ast_node_entropy", "ast_node_types", "ast_shape_distinct"),
    "identifier_vocab": ("identifiers_per_1k",),
    "semantic_diversity": ("vendi", "cosine_distance"),
    "perplexity_gen0": (r"ppl_gen0_q\d+", "ppl_gen0_logmean"),
    "tail_coverage": ("tail_type_coverage", "tail_mass"),
    "zipf": ("zipf_exponent",),
    "length_shift": ("length_w1",),
    "verbatim_copy": (r"copy_rate(_k\d+)?", r"copy_token_share(_k\d+)?", r"copy_longest_(max|median)"),
    "corpus_copy": (r"corpus_copy_rate(_k\d+)?", r"corpus_copy_token_share(_k\d+)?", r"corpus_copy_longest_(max|median)"),
    "synthetic_copy": (r"synthetic_copy_rate(_k\d+)?", r"synthetic_copy_token_share(_k\d+)?",
                       r"synthetic_copy_longest_(max|median)"),
}
# Logged every generation whatever metrics.names says (training and sampling statistics).
ALWAYS_LOGGED = (r"train_(loss|steps|tokens|examples|flops)", "model_params", "sample_eos_rate", r"time\..+", r"gate\..+")


def metric_of_key(key: str) -> str | None:
    """The metric whose keys include ``key`` (``human.`` prefixes ignored); None when none does."""
    key = key.removeprefix("human.")
    for name, patterns in KEY_PATTERNS.items():
        if any(re.fullmatch(p, key) for p in patterns):
            return name
    return None


def is_always_logged(key: str) -> bool:
    return any(re.fullmatch(p, key.removeprefix("human.")) for p in ALWAYS_LOGGED)


def suggest_metric(name: str, known: list[str] | None = None) -> str:
    """A hint for an unknown metric name: the metric that logs that key, or the nearest names ('' when none)."""
    known = sorted(REGISTRY) if known is None else known
    provider = metric_of_key(name)
    if provider is not None and provider != name:
        return f"{name} is a key that the metric {provider} logs: list {provider}"
    if is_always_logged(name):
        return f"{name} is logged every generation without being listed"
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(close) + "?"
    return ""
