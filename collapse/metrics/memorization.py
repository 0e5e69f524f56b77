"""Memorization and attribution: verbatim copies of reference data in samples.

A sample *copies* at span length ``k`` when it contains ``k`` consecutive
tokens that also occur, contiguously and inside one document, in the
reference data (the human train split, or the samples of earlier
generations). This is the verbatim notion of memorization of Carlini et al.
2021 ("Extracting Training Data from Large Language Models") and 2023
("Quantifying Memorization Across Neural Language Models", 50-token
extractable spans), and the exact-substring matching used to filter and
attribute code in open code-model data sets (Lee et al. 2022, "Deduplicating
Training Data Makes Language Models Better"; The Stack, Kocetkov et al. 2022,
and StarCoder's attribution tooling, Li et al. 2023).

The matching is :class:`collapse.metrics.ngram_index.CopyIndex`, a hashed
n-gram index over the reference, near-linear in reference plus query size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from collapse.metrics.ngram_index import CopyIndex, CopyScan, Matches, TokenBatch, gram_hashes
from collapse.metrics.registry import MetricContext, register

# The index's names stay importable from here (gram_hashes is not used here).
__all__ = ["CopyIndex", "TokenBatch", "gram_hashes", "parse_source", "line_span", "verbatim_copy", "corpus_copy",
           "synthetic_copy"]


@dataclass
class _Reference:
    """An index plus how to name its documents in attribution rows."""

    index: CopyIndex
    texts: list[str]
    describe: Callable[[int], dict[str, Any]]  # doc -> fields naming it
    first_line: Callable[[int], int]  # doc -> file line number of the text's first line


def _span_lengths(ctx: MetricContext) -> tuple[int, list[int]]:
    k = int(ctx.setting("copy_k"))
    also = [int(x) for x in ctx.setting("copy_k_also")]
    return k, [x for x in dict.fromkeys(also) if x != k]


def parse_source(source: str | None) -> tuple[str | None, int]:
    """("file", first line) of a ``"file:start-end"`` source; the line is 1 when it does not parse."""
    if not source:
        return None, 1
    path, sep, span = source.rpartition(":")
    if sep and path:
        start = span.split("-", 1)[0]
        if start.isdigit():
            return path, int(start)
    return source, 1


def line_span(text: str, start: int, end: int) -> tuple[int, int]:
    """0-based first and last line of ``text[start:end]``, ignoring whitespace
    at either end (a token that carries the previous line's newline does not
    pull the span up a line)."""
    seg = text[start:end]
    if seg.strip():
        end = start + len(seg.rstrip())
        start = start + (len(seg) - len(seg.lstrip()))
    first = text.count("\n", 0, start)
    last = text.count("\n", 0, max(start, end - 1))
    return first, last


def _offsets(tokenizer: Any, texts: list[str]) -> list[list[tuple[int, int]]]:
    if not texts:
        return []
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [[tuple(o) for o in om] for om in enc["offset_mapping"]]


def _attributions(ctx: MetricContext, ids: TokenBatch, scan: CopyScan, best: Matches, owner: np.ndarray,
                  refs: list[_Reference]) -> list[dict[str, Any]]:
    """One row per sample with a match, longest first: the match and its source lines."""
    flagged = np.flatnonzero(best.length > 0)
    if not len(flagged):
        return []
    covered = scan.per_seq(scan.covered)
    need: dict[int, list[int]] = {}
    for i in flagged:
        need.setdefault(int(owner[i]), []).append(int(best.doc[i]))
    maps: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r, docs in need.items():
        uniq = sorted(set(docs))
        for d, om in zip(uniq, _offsets(ctx.tokenizer, [refs[r].texts[d] for d in uniq])):
            maps[(r, d)] = om
    rows = []
    for i in flagged:
        r, d, off, n = int(owner[i]), int(best.doc[i]), int(best.doc_offset[i]), int(best.length[i])
        ref, om = refs[r], maps[(r, d)]
        text = ref.texts[d]
        if off + n <= len(om):
            c0, c1 = om[off][0], om[off + n - 1][1]
        else:  # the tokenizer disagrees with the index: name the document only
            c0, c1 = 0, 0
        a, b = line_span(text, c0, c1)
        base = ref.first_line(d)
        rows.append({"sample": int(i), "length": n, "sample_token_offset": int(best.query_offset[i]),
                     "sample_tokens": int(ids.lengths[i]), "covered_tokens": int(covered[i]),
                     **ref.describe(d), "line_start": base + a, "line_end": base + b, "token_offset": off,
                     "text": text[c0:c1]})
    rows.sort(key=lambda row: (-row["length"], row["sample"]))
    for rank, row in enumerate(rows):
        row["rank"] = rank
    return rows


def _copy_metrics(samples: list[str], ctx: MetricContext, refs: list[_Reference], prefix: str,
                  artifact: str) -> dict[str, float]:
    k, also = _span_lengths(ctx)
    ids = TokenBatch(ctx.token_ids(samples)) if samples else TokenBatch([])
    out: dict[str, float] = {}
    scans: dict[int, CopyScan] = {}
    per_ref_hits: list[np.ndarray] = []
    for kk in [k, *also]:
        hit = np.zeros(len(ids.tokens), dtype=bool)
        for ref in refs:
            h = ref.index.hits(ids, kk)
            if kk == k:
                per_ref_hits.append(h)
            hit |= h
        scans[kk] = CopyScan(ids, kk, hit)
        suffix = "" if kk == k else f"_k{kk}"
        out[f"{prefix}rate{suffix}"] = scans[kk].rate
        out[f"{prefix}token_share{suffix}"] = scans[kk].token_share
    best = Matches.empty(len(ids), k)
    owner = np.full(len(ids), -1, dtype=np.int64)
    for r, (ref, h) in enumerate(zip(refs, per_ref_hits)):
        m = ref.index.longest(ids, k, h)
        up = best.better(m)
        for name in ("length", "query_offset", "doc", "doc_offset"):
            getattr(best, name)[up] = getattr(m, name)[up]
        owner[up] = r
    lengths = best.length[best.length > 0]
    out[f"{prefix}longest_max"] = float(lengths.max()) if len(lengths) else 0.0
    out[f"{prefix}longest_median"] = float(np.median(lengths)) if len(lengths) else 0.0
    if ctx.artifact_dir is not None:
        ctx.write_jsonl(artifact, _attributions(ctx, ids, scans[k], best, owner, refs))
    return out


def _human_reference(ctx: MetricContext, trained_only: bool = True) -> _Reference:
    """The index of the human train texts: those a model of the run trained on so far
    (``ctx.human_trained`` leading texts), or the whole split; each built once per run and size."""
    everything = list(ctx.human_train_texts or [])
    n = len(everything) if not trained_only or ctx.human_trained is None else min(ctx.human_trained, len(everything))
    key = f"memorization.human.{n}"
    got = ctx.shared.get(key)
    if got is None or got[0] is not ctx.human_train_texts:
        from collapse.lm.train import tokenize_texts  # torch: imported when used

        texts = everything[:n]
        sources = list(ctx.human_train_sources or [None] * len(everything))[:n]
        index = CopyIndex(tokenize_texts(ctx.tokenizer, texts) if texts else [])
        got = (ctx.human_train_texts, index, texts, sources, [parse_source(s) for s in sources])
        ctx.shared[key] = got
    _, index, texts, sources, parsed = got

    def describe(d: int) -> dict[str, Any]:
        return {"human_index": d, "file": parsed[d][0], "source": sources[d]}

    return _Reference(index, texts, describe, lambda d: parsed[d][1])


def _synthetic_references(ctx: MetricContext) -> list[_Reference]:
    """One index per earlier generation, each built once per run."""
    history = ctx.load("synthetic_history") or {}
    refs = []
    for g in sorted(history):
        texts = list(history[g])
        key = f"memorization.synthetic.{g}"
        got = ctx.shared.get(key)
        if got is None or got[0] != texts:
            from collapse.lm.train import tokenize_texts  # torch: imported when used

            got = (texts, CopyIndex(tokenize_texts(ctx.tokenizer, texts) if texts else []))
            ctx.shared[key] = got
        refs.append(_Reference(got[1], texts, lambda d, g=g: {"generation": int(g), "source_sample": d},
                               lambda d: 1))
    return refs


@register("verbatim_copy")
def verbatim_copy(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Verbatim copying of the human code the models of the run trained on
    (memorization, Carlini et al. 2021, 2023; verbatim-copy attribution as in
    The Stack / StarCoder): the generation-0 human pool, plus the fresh chunks
    taken so far under ``fresh``. ``copy_rate``: share of samples with a span
    of at least ``copy_k`` tokens that occurs inside one such human function
    (``corpus_copy`` checks the whole train split); ``copy_token_share``: share
    of all sample tokens covered by such spans; both in [0, 1], also at each
    length of ``copy_k_also`` (``copy_rate_k16``, ``copy_token_share_k16``, …).
    ``copy_longest_max`` / ``copy_longest_median``: the longest match in
    tokens, the maximum and the median over flagged samples (0 when none).
    Each flagged sample's longest match (length, text, human file and line
    span, sample index) goes to ``copies.jsonl``, longest first. Hashed n-gram
    index over the human data, built once per run; near-linear cost."""
    return _copy_metrics(samples, ctx, [_human_reference(ctx)], "copy_", "copies.jsonl")


@register("corpus_copy")
def corpus_copy(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Verbatim copying of the whole human train split, whether or not a model
    of the run trained on it: the same definitions as ``verbatim_copy``
    (Carlini et al. 2021, 2023), keys ``corpus_copy_rate``,
    ``corpus_copy_token_share`` (also at each length of ``copy_k_also``) and
    ``corpus_copy_longest_max`` / ``_median``, in [0, 1] and tokens;
    attributions in ``corpus_copies.jsonl``. Beside ``copy_rate`` it separates
    memorization of the training data from code the corpus repeats anyway."""
    return _copy_metrics(samples, ctx, [_human_reference(ctx, trained_only=False)], "corpus_copy_",
                         "corpus_copies.jsonl")


@register("synthetic_copy")
def synthetic_copy(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Verbatim copying of earlier generations' samples: the self-consumption
    counterpart of ``verbatim_copy`` (same definitions, Carlini et al. 2021,
    2023). ``synthetic_copy_rate`` and ``synthetic_copy_token_share`` in
    [0, 1] (0 at generation 0: nothing earlier), also at each length of
    ``copy_k_also``; ``synthetic_copy_longest_max`` / ``_median`` in tokens.
    Attributions (generation and sample index of the source) go to
    ``synthetic_copies.jsonl``. One hashed n-gram index per earlier
    generation, built once per run; near-linear cost."""
    return _copy_metrics(samples, ctx, _synthetic_references(ctx), "synthetic_copy_", "synthetic_copies.jsonl")
