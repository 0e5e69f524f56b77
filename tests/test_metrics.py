"""Metrics: each checked against an answer worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from collapse.metrics import REGISTRY, MetricContext, compute
from collapse.metrics.diversity import distinct_n_of, kl_js_bits, unigram_counts


class CharTokenizer:
    """Token id = a character's position in a fixed alphabet; enough for sample metrics."""

    alphabet = "abcdefgh \n():"

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[self.alphabet.index(c) for c in t] for t in texts]}

    def __len__(self):
        return len(self.alphabet)


def ctx(human_texts=("abc",)) -> MetricContext:
    tok = CharTokenizer()
    counts = unigram_counts(tok(list(human_texts))["input_ids"], len(tok))
    return MetricContext(tokenizer=tok, human_train_counts=counts)


def test_distinct_n_by_hand():
    # "abab": unigrams a,b,a,b → 2/4; bigrams ab,ba,ab → 2/3; trigrams aba,bab → 2/2.
    seqs = [[0, 1, 0, 1]]
    assert distinct_n_of(seqs, 1) == 0.5
    assert distinct_n_of(seqs, 2) == pytest.approx(2 / 3)
    assert distinct_n_of(seqs, 3) == 1.0
    assert distinct_n_of(seqs, 5) == 0.0  # no 5-grams at all
    # n-grams do not cross sample boundaries: [a b] [b a] → bigrams ab, ba: 2/2.
    assert distinct_n_of([[0, 1], [1, 0]], 2) == 1.0
    out = REGISTRY["distinct_n"].fn(["abab", "abab"], ctx())
    assert out["distinct_1"] == 2 / 8 and out["distinct_2"] == pytest.approx(2 / 6)


def test_kl_and_js_by_hand():
    # P = (1/2, 1/2, 0), Q counts (2, 1, 1): smoothed Q = (3/7, 2/7, 2/7).
    p, q = np.array([1.0, 1.0, 0.0]), np.array([2.0, 1.0, 1.0])
    kl, js = kl_js_bits(p, q)
    want_kl = 0.5 * math.log2(0.5 / (3 / 7)) + 0.5 * math.log2(0.5 / (2 / 7))
    assert kl == pytest.approx(want_kl)
    # Unsmoothed Q = (1/2, 1/4, 1/4); M = (1/2, 3/8, 1/8).
    m = np.array([0.5, 3 / 8, 1 / 8])
    kl_pm = 0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
    kl_qm = 0.5 * math.log2(0.5 / m[0]) + 0.25 * math.log2(0.25 / m[1]) + 0.25 * math.log2(0.25 / m[2])
    assert js == pytest.approx(0.5 * kl_pm + 0.5 * kl_qm)
    same_kl, same_js = kl_js_bits(q, q)
    assert same_js == pytest.approx(0.0) and same_kl > 0  # only the smoothing separates Q from itself
    _, disjoint = kl_js_bits(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert disjoint == pytest.approx(1.0)  # JS in bits is at most 1


def test_unigram_divergence_and_coverage_through_the_registry():
    c = ctx(human_texts=["aabc"])  # human types: a, b, c
    out = compute(["unigram_divergence", "vocab_coverage"], ["ab", "ab"], c)
    assert out["vocab_coverage"] == pytest.approx(2 / 3)
    p = np.zeros(13); p[0] = p[1] = 2
    q = np.zeros(13); q[0] = 2; q[1] = q[2] = 1
    kl, js = kl_js_bits(p, q)
    assert out["kl_unigram"] == pytest.approx(kl) and out["js_unigram"] == pytest.approx(js)
    # KL(human ‖ samples), samples add-one smoothed over the 13 types: by hand.
    # Samples "abab": a 2, b 2 → smoothed (3, 3, 1, 1, ...)/17; human "aabc": a 1/2, b 1/4, c 1/4.
    by_hand = 0.5 * math.log2(0.5 / (3 / 17)) + 0.25 * math.log2(0.25 / (3 / 17)) + 0.25 * math.log2(0.25 / (1 / 17))
    assert out["kl_unigram_reverse"] == pytest.approx(by_hand)


def test_reverse_kl_sees_lost_tails_that_forward_kl_barely_sees():
    """Delete the rarest half of the types from a Zipf-like sample: KL(human ‖ samples) jumps,
    KL(samples ‖ human) hardly moves."""
    V = 400
    human = np.round(1e5 * np.arange(1, V + 1.0) ** -1.1)
    cut = human.copy()
    cut[V // 2:] = 0
    fwd_full, _ = kl_js_bits(human, human)
    fwd_cut, _ = kl_js_bits(cut, human)
    rev_full, _ = kl_js_bits(human, human)
    rev_cut, _ = kl_js_bits(human, cut)
    tail_share = human[V // 2:].sum() / human.sum()
    assert 0.03 < tail_share < 0.1
    assert fwd_cut - fwd_full < 0.2
    assert rev_cut - rev_full > 3 * (fwd_cut - fwd_full) and rev_cut - rev_full > 0.4


def test_syntax_valid_and_mean_length():
    samples = ["def f():\n    return 1\n", "def (:", "x = 1\n", "if x\n"]
    assert REGISTRY["syntax_valid"].fn(samples, ctx())["syntax_valid"] == 0.5
    out = REGISTRY["mean_length"].fn(["ab", "abcd"], ctx())
    assert out == {"mean_tokens": 3.0, "mean_chars": 3.0}
    assert REGISTRY["syntax_valid"].fn([], ctx())["syntax_valid"] == 0.0


def test_cross_entropy_of_a_uniform_model_is_log_vocab():
    """A Llama whose output layer is zero predicts the uniform distribution:
    cross-entropy ln V per token, and bits per byte = (tokens · log2 V) / bytes."""
    from collapse.config import ModelConfig
    from collapse.lm.model import build_model

    V = 50
    model = build_model(ModelConfig(preset="tiny"), V, 0, seed=0)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()  # tied: the input embedding becomes zero too
    blocks = torch.randint(1, V, (3, 16))
    token_bytes = torch.full((V,), 2)
    c = MetricContext(model=model, device=torch.device("cpu"), test_blocks=blocks, val_blocks=blocks[:1],
                      token_bytes=token_bytes)
    out = compute(["test_ce", "val_loss"], [], c)
    assert out["test_ce"] == pytest.approx(math.log(V), rel=1e-5)
    assert out["val_loss"] == pytest.approx(math.log(V), rel=1e-5)
    n_targets = 3 * 15
    assert out["test_bpb"] == pytest.approx(n_targets * math.log2(V) / (2 * n_targets), rel=1e-5)


def test_every_registered_metric_is_documented():
    for m in REGISTRY.values():
        assert len(m.doc) > 40, m.name
