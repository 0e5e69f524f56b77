"""Tests of the synthetic-data gates (collapse.gates) and of the gated sampler
(LMGenerator.sample): exact acceptance counts on hand-built samples,
resampling until the size is met, the shortfall warning, and one tiny real
run with gates on."""

from __future__ import annotations

import ast
import json
import logging

import datasets
import numpy as np
import pytest

from collapse.config import load_config
from collapse.errors import CollapseError
from collapse.gates import (DedupGate, DedupReference, ExecutionGate, GateChain, PerplexityGate, SyntaxGate,
                            perplexities, perplexity_band)
from collapse.lm.generator import LMGenerator
from collapse.mixing import torch_seed
from tests.conftest import TINY, tiny_overrides
from tests.test_pipeline import make_corpus, random_functions


def _near_copy(text: str) -> str:
    """The same function with `` + 0`` at the end: two tokens more, two new shingles (Jaccard ~0.97 for 70 shingles)."""
    return text + " + 0"


def test_gate_chain_exact_counts():
    """10 samples: 3 do not parse, 2 exact duplicates, 1 near duplicate, 1 raises when defined."""
    v1, v2, v3 = random_functions(3, seed=1, prefix="v")
    long_v3 = v3 + "\n" + "\n".join(f"    {w} = {w} + 1" for w in ("p", "q", "r", "s", "t", "u"))
    near = _near_copy(long_v3)
    raises = "def broken_default(x=1 / 0):\n    return x"
    samples = [v1, "def nope(:\n    pass", v2, v1, long_v3, "def f(\n", near, v2 + "   \n\n", raises, "return = 1"]
    from collapse.data.neardup import jaccard, shingle_sets

    a, b = shingle_sets([long_v3, near])
    assert 0.85 <= jaccard(a, b) < 1.0

    chain = GateChain([SyntaxGate(), DedupGate(), ExecutionGate()])
    verdict = chain(samples)
    assert verdict == [None, "syntax:syntax_error", None, "dedup:exact_duplicate", None, "syntax:syntax_error",
                       "dedup:near_duplicate", "dedup:exact_duplicate", "execution:exec_failed", "syntax:syntax_error"]
    m = chain.metrics()
    assert (m["gate.syntax.seen"], m["gate.syntax.accepted"]) == (10, 7)
    assert (m["gate.dedup.seen"], m["gate.dedup.accepted"]) == (7, 4)
    assert (m["gate.execution.seen"], m["gate.execution.accepted"]) == (4, 3)
    assert m["gate.syntax.accept_rate"] == 0.7 and m["gate.dedup.accept_rate"] == pytest.approx(4 / 7)
    assert m["gate.execution.accept_rate"] == 0.75 and m["gate.accept_rate"] == 0.3
    assert m["gate.dedup.rejected.exact_duplicate"] == 2 and m["gate.dedup.rejected.near_duplicate"] == 1
    assert m["gate.execution.rejected.exec_failed"] == 1 and m["gate.syntax.rejected.syntax_error"] == 3
    assert (m["gate.drawn"], m["gate.accepted"]) == (10, 3)

    # Counts accumulate over calls (the rounds of one generation); the dedup gate remembers the accepted ones.
    chain([v1, random_functions(1, seed=2, prefix="w")[0]])
    m = chain.metrics()
    assert (m["gate.drawn"], m["gate.accepted"], m["gate.dedup.rejected.exact_duplicate"]) == (12, 4, 3)


def test_dedup_gate_against_the_pools():
    human = random_functions(5, seed=4, prefix="h")
    earlier = random_functions(2, seed=5, prefix="g0")
    ref = DedupReference()
    ref.add_pool("human", human)
    ref.add_pool(0, earlier)
    ref.add_pool(0, ["ignored: a pool is added once"])
    assert ref.pools == {"human", 0} and len(ref.index) == 7
    fresh = random_functions(1, seed=6, prefix="new")[0]
    long_h = human[1] + "\n" + "\n".join(f"    {w} = {w} * 3" for w in "abcdefgh")
    ref.add_pool("more", [long_h])
    gate = DedupGate(ref)
    assert gate.check([human[0], earlier[1], _near_copy(long_h), fresh, fresh]) == [
        "exact_duplicate", "exact_duplicate", "near_duplicate", None, "exact_duplicate"]


def test_execution_gate_runs_tests_in_the_sandbox():
    texts = ["def add(a, b):\n    return a + b", "def sub(a, b):\n    return a + b", "import os\nos.system('true')"]
    tests = ["assert add(2, 3) == 5", "assert sub(5, 3) == 2", None]
    verdict = ExecutionGate().check(texts, {"tests": tests})
    assert verdict[0] is None and verdict[1] == "exec_failed" and verdict[2] in ("exec_blocked", "exec_failed")
    # A tests callable does the same when the rows carry no tests column.
    assert ExecutionGate(tests=lambda ts: ["assert add(1, 1) == 2"] + [None] * (len(ts) - 1)).check(texts[:1]) == [None]


def test_perplexity_gate_band():
    ref = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, np.inf])
    lo, hi = perplexity_band(ref, [0.1, 0.9])
    assert (lo, hi) == pytest.approx((1.9, 9.1))  # quantiles of the finite values
    scores = {"a": 1.0, "b": 5.0, "c": 9.5, "d": 9.1, "e": np.inf}
    gate = PerplexityGate(lambda ts: np.array([scores[t] for t in ts]), (lo, hi))
    assert gate.check(list("abcde")) == ["perplexity_low", None, "perplexity_high", None, "perplexity_high"]


def test_perplexities_under_a_tiny_model():
    import torch

    from collapse.config import ModelConfig, TokenizerConfig
    from collapse.lm.model import build_model
    from collapse.lm.tokenizer import train_tokenizer
    from collapse.lm.train import sequence_nll

    texts = random_functions(30, seed=8)
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=300))
    model = build_model(ModelConfig(preset="tiny"), len(tok), tok.eos_token_id, seed=0)
    ppl = perplexities(model, tok, texts[:4] + [""], tok.eos_token_id, torch.device("cpu"), max_len=128)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[:4]]
    nll, cnt = sequence_nll(model, ids, tok.eos_token_id, torch.device("cpu"), max_len=128)
    assert ppl[:4] == pytest.approx(np.exp(nll / cnt)) and np.isinf(ppl[4])
    assert np.all(ppl[:4] > 1.0)


# ------------------------------------------------------------ resampling

class _FakeDraws:
    """Stands in for LMGenerator._draw: sample j (counted over all rounds) parses unless ``bad(j)``."""

    def __init__(self, bad):
        self.bad = bad
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, m: int, generation: int, seed: int, offset: int):
        self.calls.append((m, seed, offset))
        texts = [("def nope(:" if self.bad(offset + i) else f"def f_{offset + i}(a, b):\n    return a * {offset + i} + b")
                 for i in range(m)]
        ds = datasets.Dataset.from_dict({"text": texts, "origin": ["synthetic"] * m, "generation": [generation] * m})
        return ds, 0.01, 10 * m


def _fake_generator(bad, gates=("syntax",), max_attempts=5, seed=3) -> tuple[LMGenerator, _FakeDraws]:
    cfg = load_config(TINY, [f"sample.gates=[{','.join(gates)}]", f"sample.max_attempts={max_attempts}",
                             f"run.seed={seed}"])
    gen = LMGenerator.__new__(LMGenerator)  # no model: only what the gated sampler touches
    gen.cfg, gen.label, gen.timings = cfg, "", {}
    gen._draw = draws = _FakeDraws(bad)
    return gen, draws


def test_resampling_until_the_size_is_met():
    gen, draws = _fake_generator(lambda j: j % 3 == 0)  # a third fails
    drawn = gen.sample(10, generation=2)
    out = drawn.samples
    assert len(out) == 10
    good = [j for j in range(100) if j % 3]
    assert out["text"] == [f"def f_{j}(a, b):\n    return a * {j} + b" for j in good[:10]]  # draw order, truncated
    sizes, seeds, offsets = zip(*draws.calls)
    assert sizes[0] == 10 and seeds[0] == torch_seed(3, 2, "sample")  # the first round is the ungated draw
    assert len(draws.calls) == 2 and offsets == (0, 10)  # prompts continue where the last round stopped
    assert len(set(seeds)) == len(seeds)
    m = drawn.gate_stats
    assert m["gate.attempts"] == 2 and m["gate.shortfall"] == 0
    assert m["gate.drawn"] == sum(sizes) and m["gate.syntax.accept_rate"] == m["gate.accepted"] / m["gate.drawn"]

    again, draws2 = _fake_generator(lambda j: j % 3 == 0)
    assert again.sample(10, generation=2).samples["text"] == out["text"] and draws2.calls == draws.calls  # deterministic
    other, draws3 = _fake_generator(lambda j: j % 3 == 0)
    other.sample(10, generation=3)
    assert draws3.calls[1][1] != draws.calls[1][1]  # round seeds depend on the generation


def test_shortfall_warns_and_goes_on(caplog):
    gen, draws = _fake_generator(lambda j: j % 5 != 0, max_attempts=3)  # 1 in 5 passes
    with caplog.at_level(logging.WARNING, logger="collapse"):
        result = gen.sample(20, generation=1)
    out = result.samples
    assert len(draws.calls) == 3
    drawn = sum(c[0] for c in draws.calls)
    passed = len([j for j in range(drawn) if j % 5 == 0])
    assert len(out) == passed < 20
    assert result.gate_stats["gate.shortfall"] == 20 - passed and result.gate_stats["gate.attempts"] == 3
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and f"shortfall {20 - passed} of the 20 requested" in warning[0].getMessage()

    nothing, _ = _fake_generator(lambda j: True, max_attempts=2)
    with pytest.raises(CollapseError, match="none of the .* samples of generation 1 drawn in 2 rounds passed"):
        nothing.sample(5, generation=1)


@pytest.mark.slow
def test_gated_run_end_to_end(tmp_path, monkeypatch, caplog):
    """A tiny real run with the syntax and dedup gates: samples enter the pools only after passing, never repeating
    the human data or each other; the dedup reference grows by the saved samples; the perplexity gate's
    band and scores come from the frozen generation-0 model. (The tiny model's samples are far less
    likely than human code under it, so the perplexity gate itself would reject them all here.)"""
    import torch

    from collapse.cli import main
    from collapse.data.pipeline import content_hash
    from collapse.lm.model import load_model

    made: list[LMGenerator] = []
    init = LMGenerator.__init__

    def record(self, *a, **k):
        init(self, *a, **k)
        made.append(self)

    monkeypatch.setattr(LMGenerator, "__init__", record)
    corpus = make_corpus(tmp_path / "corpus", planted=False)
    root, run_dir = tmp_path / "runs", tmp_path / "runs" / "gated"
    # accumulate: generation 1 trains on the human pool too, however few samples pass
    ov = {"data.source": corpus, "data.max_examples": "null", "run.generations": 1, "tracking.enabled": "false",
          "data.train_size": "null", "mix.synthetic_size": 40,  # a small corpus: ~50 reference functions
          "sample.max_attempts": 15,
          "sample.gates": "[syntax,dedup]", "sample.max_new_tokens": 96, "mix.regime": "accumulate"}
    with caplog.at_level(logging.INFO, logger="collapse"):
        assert main(["run", str(TINY), *tiny_overrides(root, run_dir, **ov)]) == 0
    gen = made[-1]
    assert sum("gates: " in r.getMessage() for r in caplog.records if r.name == "collapse") == 2  # one per generation
    m = json.loads((run_dir / "gen_001" / "metrics.json").read_text())  # the last generation's gate counts
    assert m["gate.dedup.seen"] == m["gate.syntax.accepted"] and 0 < m["gate.accept_rate"] <= 1
    assert gen._gate_dedup_ref.pools == {"human", 0}  # generation 1 compared against generation 0's samples

    human = datasets.load_from_disk(str(next(root.glob("_cache/human-*")) / "train"))
    seen = {content_hash(t) for t in human["text"]}
    for g in (0, 1):
        samples = datasets.load_from_disk(str(run_dir / f"gen_{g:03d}" / "samples"))
        for t in samples["text"]:
            ast.parse(t)
        hashes = [content_hash(t) for t in samples["text"]]
        assert len(set(hashes)) == len(hashes) and not seen & set(hashes)
        assert set(samples["license"]) == {"NOASSERTION"}
        seen |= set(hashes)
    manifest = json.loads((run_dir / "gen_001" / "manifest.json").read_text())
    n0 = len(datasets.load_from_disk(str(run_dir / "gen_000" / "samples")))
    assert manifest["counts"]["synthetic"] == {"0": n0} and 0 < n0 <= 144
    card = (run_dir / "gen_001" / "data" / "README.md").read_text()
    assert "Gates (`sample.gates`): syntax, dedup." in card and f"| synthetic, generation 0 | {n0:,} |" in card

    # The perplexity gate: band over held-out human functions under the generation-0 model.
    score, band = gen._perplexity_scorer()
    ref = load_model(run_dir / "gen_000" / "model")
    validation = datasets.load_from_disk(str(next(root.glob("_cache/human-*")) / "validation"))["text"]
    human_ppl = perplexities(ref, gen.tok, validation, gen.eos, torch.device("cpu"), max_len=gen.seq_len)
    assert band == pytest.approx(perplexity_band(human_ppl, gen.cfg.sample.gate_perplexity_band))
    sample_texts = datasets.load_from_disk(str(run_dir / "gen_001" / "samples"))["text"][:8]
    assert np.all(np.isfinite(score(sample_texts)))
