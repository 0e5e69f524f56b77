"""Tails and drift: what the samples lose first (Shumailov et al. 2024).

The rare parts of the human distribution vanish before anything else. These
metrics look there: the perplexity of each generation's samples under the
*generation-0* model (whose histogram widens towards low perplexity and
loses its high-perplexity tail), the share and mass of the rarest human
tokens in the samples, the Zipf exponent of the samples' token frequencies
and the distance between length distributions.
"""

from __future__ import annotations

import math

import numpy as np

from collapse.metrics.diversity import unigram_counts
from collapse.metrics.registry import MetricContext, register
from collapse.seeding import generation_rng

QUANTILES = (5, 25, 50, 75, 95)


def per_sample_perplexity(model, ids: list[list[int]], ctx: MetricContext) -> tuple[np.ndarray, np.ndarray]:
    """exp(mean next-token NLL) of each sequence under ``model`` (NaN for empty
    sequences), and the number of tokens scored."""
    from collapse.lm.train import sequence_nll  # torch: imported when used

    max_len = getattr(getattr(model, "config", None), "n_positions", None) or getattr(
        getattr(model, "config", None), "max_position_embeddings", None)
    nll, cnt = sequence_nll(model, ids, ctx.tokenizer.eos_token_id, ctx.device, ctx.precision,
                            batch_size=ctx.eval_batch_size, max_len=max_len)
    with np.errstate(invalid="ignore", divide="ignore"):
        ppl = np.where(cnt > 0, np.exp(nll / np.maximum(cnt, 1)), np.nan)
    return ppl, cnt


@register("perplexity_gen0", subsampled=True)
def perplexity_gen0(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Perplexity of each sample under the generation-0 model (trained on human
    data only), as in the histograms of Shumailov et al. 2024 (Fig. 1b):
    quantiles ``ppl_gen0_q05 … ppl_gen0_q95`` (≥ 1) and the mean of log
    perplexity ``ppl_gen0_logmean`` (nats/token). Collapse shows as mass
    moving to low perplexity (the model's own likely sequences) and a thinning
    high-perplexity tail. A forward pass per sample, so it scores a seeded
    subsample of ``metrics.subsample`` samples; per-sample values (with each
    sample's index) in the artifact ``perplexity_gen0.jsonl``. Sequences are
    cut to the model's context length."""
    model = ctx.load("reference_model", per_run=True)
    if model is None:
        return {}
    index = ctx.subsample_index(len(samples), "perplexity_gen0")
    ids = ctx.token_ids(samples)
    ppl, cnt = per_sample_perplexity(model, [ids[i] for i in index], ctx)
    ctx.write_jsonl("perplexity_gen0.jsonl", ({"index": int(i), "ppl": None if math.isnan(p) else float(p), "tokens": int(c)}
                                              for i, p, c in zip(index, ppl, cnt)))
    ok = ppl[~np.isnan(ppl)]
    if not len(ok):
        return {f"ppl_gen0_q{q:02d}": float("nan") for q in QUANTILES}
    out = {f"ppl_gen0_q{q:02d}": float(v) for q, v in zip(QUANTILES, np.percentile(ok, QUANTILES))}
    out["ppl_gen0_logmean"] = float(np.mean(np.log(ok)))
    return out


def rare_types(human_counts: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Ids of the rarest ``fraction`` of the token types that occur in the human
    data (at least one), ordered by (count, id) so ties break the same way every time."""
    present = np.flatnonzero(human_counts > 0)
    k = max(1, math.ceil(fraction * len(present)))
    order = np.lexsort((present, human_counts[present]))
    return present[order[:k]]


@register("tail_coverage")
def tail_coverage(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """The human tail in the samples: the rarest 10 % of the token types of the
    human train split (by frequency, ties by id). ``tail_type_coverage``: share
    of those types that appear in the samples, in [0, 1]; ``tail_mass``: share
    of all sample tokens that are such types, in [0, 1] (compare with
    ``human.tail_mass``). Both fall as the tails vanish (Shumailov et al. 2024)."""
    key = ("rare_types", id(ctx.human_train_counts))
    if key not in ctx.shared:
        ctx.shared[key] = rare_types(ctx.human_train_counts)
    rare = ctx.shared[key]
    counts = unigram_counts(ctx.token_ids(samples), len(ctx.human_train_counts))
    total = counts.sum()
    return {"tail_type_coverage": float(np.mean(counts[rare] > 0)),
            "tail_mass": float(counts[rare].sum() / total) if total else float("nan")}


def zipf_exponent_of(counts: np.ndarray, ranks: int | None = None) -> float:
    """Maximum-likelihood exponent s of a Zipf law over ranks 1..R.

    The nonzero counts are sorted in decreasing order; the ``ranks`` largest
    (R; default all) are taken as draws of a rank r with P(r) = r^(−s) / H_R(s),
    H_R(s) = Σ_{r≤R} r^(−s), and s maximizes the log-likelihood
    −s·Σ n_r log r − N log H_R(s) (concave in s; solved by bisection on its
    derivative over s in [0, 10]). NaN below 2 types."""
    f = np.sort(np.asarray(counts, dtype=np.float64)[np.asarray(counts) > 0])[::-1]
    if ranks is not None:
        f = f[:ranks]
    if len(f) < 2:
        return float("nan")
    logr = np.log(np.arange(1, len(f) + 1, dtype=np.float64))
    mean_logr = float(np.dot(f, logr) / f.sum())

    def slope(s: float) -> float:  # d/ds of the log-likelihood per token: E_s[log r] − mean log r
        w = np.exp(-s * logr)
        return float(np.dot(w, logr) / w.sum()) - mean_logr

    lo, hi = 0.0, 10.0
    if slope(lo) <= 0:  # the counts are flat (or rise): the boundary
        return 0.0
    if slope(hi) >= 0:
        return hi
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) > 0 else (lo, mid)
    return float(0.5 * (lo + hi))


def token_subsample(seqs: list[list[int]], n_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """``n_tokens`` tokens drawn without replacement from all tokens of ``seqs``
    (all of them when there are fewer)."""
    flat = np.fromiter((t for s in seqs for t in s), dtype=np.int64)
    if len(flat) <= n_tokens:
        return flat
    return flat[rng.choice(len(flat), n_tokens, replace=False)]


@register("zipf")
def zipf(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """``zipf_exponent``: exponent s of the samples' token rank–frequency law
    f ∝ r^(−s), > 0; it grows as probability mass piles onto the head (Zipf
    1949; used for collapse in Dohmatob et al. 2024). Estimated by maximum
    likelihood over the ``metrics.zipf_ranks`` most frequent types of a seeded
    draw of ``metrics.zipf_tokens`` tokens (all tokens when fewer), so the
    estimate does not move with the number of samples: a least-squares fit over
    every rank did (1.11, 1.28, 1.22 at 12 k, 78 k, 500 k tokens of one law)."""
    ids = token_subsample(ctx.token_ids(samples), int(ctx.setting("zipf_tokens")),
                          generation_rng(ctx.seed, ctx.generation, "metric:zipf"))
    counts = np.bincount(ids, minlength=len(ctx.human_train_counts)) if len(ids) else np.zeros(1)
    return {"zipf_exponent": zipf_exponent_of(counts, int(ctx.setting("zipf_ranks")))}


@register("length_shift")
def length_shift(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """``length_w1``: Wasserstein-1 distance, in tokens, between the sample
    lengths and the lengths of the human train split's functions, ≥ 0 (scipy);
    0 when the two length distributions coincide."""
    from scipy.stats import wasserstein_distance

    key = ("human_train_lengths", id(ctx.human_train_texts))
    if key not in ctx.shared:
        from collapse.lm.train import tokenize_texts  # torch: imported when used

        ctx.shared[key] = np.array([len(s) for s in tokenize_texts(ctx.tokenizer, ctx.human_train_texts)])
    lens = np.array([len(s) for s in ctx.token_ids(samples)])
    if not len(lens):
        return {"length_w1": float("nan")}
    return {"length_w1": float(wasserstein_distance(lens, ctx.shared[key]))}
