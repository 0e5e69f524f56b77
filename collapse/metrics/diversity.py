"""Diversity and distribution shift of samples, over tokens of the experiment's tokenizer."""

from __future__ import annotations

import numpy as np

from collapse.metrics.registry import MetricContext, register


def distinct_n_of(seqs: list[list[int]], n: int) -> float:
    """Unique n-grams / total n-grams over all sequences (corpus level); 0 when there are none."""
    seen: set[tuple[int, ...]] = set()
    total = 0
    for s in seqs:
        grams = [tuple(s[i:i + n]) for i in range(len(s) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


@register("distinct_n")
def distinct_n(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """distinct-n for n = 1..4 (Li et al. 2016): distinct n-grams of tokens over
    all n-grams of the generation's samples, in [0, 1]; falling values mean
    repetitive, collapsed output. Depends on the number of samples, so compare
    generations of equal size."""
    ids = ctx.token_ids(samples)
    return {f"distinct_{n}": distinct_n_of(ids, n) for n in range(1, 5)}


@register("mean_length")
def mean_length(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Mean sample length in tokens (``mean_tokens``) and characters (``mean_chars``)."""
    ids = ctx.token_ids(samples)
    if not samples:
        return {"mean_tokens": 0.0, "mean_chars": 0.0}
    return {"mean_tokens": float(np.mean([len(s) for s in ids])), "mean_chars": float(np.mean([len(s) for s in samples]))}


def unigram_counts(seqs: list[list[int]], vocab_size: int) -> np.ndarray:
    flat = np.fromiter((t for s in seqs for t in s), dtype=np.int64)
    return np.bincount(flat, minlength=vocab_size).astype(np.float64)


def kl_js_bits(p_counts: np.ndarray, q_counts: np.ndarray) -> tuple[float, float]:
    """KL(P‖Q) with Q add-one smoothed, and JS(P, Q), both in bits.

    P is the empirical distribution of ``p_counts``; Q is smoothed so KL stays
    finite when the samples use a token the reference never does."""
    p = p_counts / p_counts.sum()
    q_s = (q_counts + 1.0) / (q_counts.sum() + len(q_counts))
    nz = p > 0
    kl = float(np.sum(p[nz] * np.log2(p[nz] / q_s[nz])))
    q = q_counts / q_counts.sum()
    m = 0.5 * (p + q)

    def _kl(a: np.ndarray, b: np.ndarray) -> float:
        k = a > 0
        return float(np.sum(a[k] * np.log2(a[k] / b[k])))

    js = 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
    return kl, js


@register("unigram_divergence")
def unigram_divergence(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Shift of the token unigram distribution from the human train split:
    ``kl_unigram`` = KL(P_samples ‖ P_human) in bits, P_human add-one smoothed
    (≥ 0, unbounded), and ``js_unigram`` = Jensen–Shannon divergence in bits
    (in [0, 1]). Tail loss shows as rising divergence (Shumailov et al. 2024)."""
    counts = unigram_counts(ctx.token_ids(samples), len(ctx.human_train_counts))
    if counts.sum() == 0:
        return {"kl_unigram": float("nan"), "js_unigram": float("nan")}
    kl, js = kl_js_bits(counts, ctx.human_train_counts)
    return {"kl_unigram": kl, "js_unigram": js}


@register("vocab_coverage")
def vocab_coverage(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Share of the token types of the human train split that appear at least
    once in the samples, in [0, 1]; the vanishing tails of Shumailov et al. 2024."""
    human = ctx.human_train_counts > 0
    counts = unigram_counts(ctx.token_ids(samples), len(ctx.human_train_counts))
    return {"vocab_coverage": float(np.sum((counts > 0) & human) / max(1, int(human.sum())))}
