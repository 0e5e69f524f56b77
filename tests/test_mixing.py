"""Mixing regimes: each yields exactly its configured composition, generation after generation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from datasets import Dataset

from collapse.errors import CollapseError
from collapse.mixing import (HUMAN, HUMAN_FRESH, MixSizes, Take, apply_plan, check_sizes, generation_rng, plan_mix,
                             synthetic_pool)
from collapse.loop import run_generations

N, M = 40, 30  # human pool size, synthetic samples per generation


def rows(origin: str, gen: int, n: int, start: int = 0) -> Dataset:
    return Dataset.from_dict({"text": [f"{origin}{gen}:{i}" for i in range(start, start + n)],
                              "origin": [origin] * n, "generation": [gen] * n})


class CountingGenerator:
    """Records every training set; samples are labelled rows, so the
    composition of later training sets can be read off their texts."""

    def __init__(self):
        self.trained: list[Dataset] = []

    def fit(self, train, generation):
        self.trained.append(train)
        return {"n": len(train)}

    def sample(self, n, generation):
        return rows("synthetic", generation, n)

    def evaluate(self, samples, generation):
        return {}


def composition(ds: Dataset) -> Counter:
    return Counter(zip(ds["origin"], ds["generation"]))


def run(regime: str, gens: int = 4, fresh_total: int = 0, synthetic: int = M, **kw) -> CountingGenerator:
    g = CountingGenerator()
    pools = {HUMAN: rows("human", -1, N)}
    if fresh_total:
        pools[HUMAN_FRESH] = rows("human", -1, fresh_total, start=N)
    sizes = MixSizes(human=N, synthetic=synthetic, **kw)
    res = run_generations(g, pools, regime, sizes, gens, seed=7)
    assert [r.generation for r in res.records] == list(range(gens + 1))
    return g


def test_generation_zero_is_human_only_for_every_regime():
    for regime in ("replace", "accumulate", "accumulate_subsample", "fixed_fraction"):
        g = run(regime, gens=0)
        assert composition(g.trained[0]) == Counter({("human", -1): N})
    g = run("fresh", gens=0, fresh_total=0)
    assert g.trained[0]["text"] == rows("human", -1, N)["text"]


def test_replace_uses_only_the_newest_synthetic_pool():
    g = run("replace")
    for gen in range(1, 5):
        assert composition(g.trained[gen]) == Counter({("synthetic", gen - 1): M})


def test_accumulate_keeps_everything():
    g = run("accumulate")
    for gen in range(1, 5):
        want = Counter({("human", -1): N, **{("synthetic", i): M for i in range(gen)}})
        assert composition(g.trained[gen]) == want
        assert len(set(g.trained[gen]["text"])) == len(g.trained[gen])  # no example twice


def test_accumulate_subsample_draws_a_fixed_size_from_the_accumulated_pool():
    g = run("accumulate_subsample", gens=6, subsample=50)
    totals = Counter()
    for gen in range(1, 7):
        c = composition(g.trained[gen])
        assert sum(c.values()) == 50
        assert set(c) <= {("human", -1)} | {("synthetic", i) for i in range(gen)}
        assert len(set(g.trained[gen]["text"])) == 50  # without replacement
        totals.update(c)
    # The draw is uniform over the pool: the human share falls as synthetic data accumulates.
    shares = [composition(g.trained[gen])[("human", -1)] / 50 for gen in (1, 6)]
    assert shares[0] > shares[1]


def test_accumulate_subsample_counts_follow_pool_sizes_on_average():
    sizes = MixSizes(human=100, synthetic=100, subsample=100)
    pool_sizes = {HUMAN: 100, **{synthetic_pool(i): 100 for i in range(3)}}
    human = [dict((t.pool, t.count) for t in plan_mix("accumulate_subsample", 3, pool_sizes, sizes,
                                                     generation_rng(s, 3, "mix"))).get(HUMAN, 0)
             for s in range(300)]
    assert abs(np.mean(human) - 25) < 1.5  # 100 of 400 pooled examples are human


@pytest.mark.parametrize("p, n_h", [(0.1, 4), (0.5, 20), (0.0, 0), (1.0, 40)])
def test_fixed_fraction(p, n_h):
    g = run("fixed_fraction", human_fraction=p, synthetic=N)
    for gen in range(1, 5):
        c = composition(g.trained[gen])
        assert c[("human", -1)] == n_h
        assert c[("synthetic", gen - 1)] == N - n_h
        human = [t for t, o in zip(g.trained[gen]["text"], g.trained[gen]["origin"]) if o == "human"]
        assert len(set(human)) == n_h
        assert sum(c.values()) == N


def test_fixed_fraction_needs_enough_synthetic_data():
    with pytest.raises(CollapseError, match="fixed_fraction: each training set needs 36 synthetic examples but mix.synthetic_size is 30"):
        check_sizes("fixed_fraction", 3, MixSizes(human=N, synthetic=M, human_fraction=0.1), 1000)


def test_fresh_uses_new_human_data_every_generation():
    g = run("fresh", gens=4, fresh_total=4 * 10, fresh=10)
    seen: set[str] = set()
    for gen in range(5):
        texts = [t for t, o in zip(g.trained[gen]["text"], g.trained[gen]["origin"]) if o == "human"]
        assert len(texts) == (N if gen == 0 else 10)
        assert not seen & set(texts)  # never reused
        seen |= set(texts)
        if gen:
            assert composition(g.trained[gen])[("synthetic", gen - 1)] == M


def test_fresh_asking_for_more_than_exists_is_caught_up_front():
    sizes = MixSizes(human=N, synthetic=M, fresh=10)
    check_sizes("fresh", 4, sizes, N + 40)
    with pytest.raises(CollapseError, match="fresh: 5 generations need 90 fresh human examples but the human train split holds 80"):
        check_sizes("fresh", 5, sizes, N + 40)


def test_plans_are_deterministic_per_seed_and_generation():
    a = run("fixed_fraction", gens=3, synthetic=N)
    b = run("fixed_fraction", gens=3, synthetic=N)
    assert all(x["text"] == y["text"] for x, y in zip(a.trained, b.trained))


def test_apply_plan_on_arrays_along_an_axis():
    pools = {HUMAN: np.zeros((3, 5)), synthetic_pool(0): np.ones((3, 4))}
    out = apply_plan([Take(HUMAN, 5), Take(synthetic_pool(0), 2)], pools, np.random.default_rng(0), axis=1)
    assert out.shape == (3, 7) and out[:, 5:].sum() == 6


def test_unknown_pool_or_oversized_take_fails_clearly():
    with pytest.raises(CollapseError, match="unknown regime"):
        plan_mix("nope", 1, {HUMAN: 3}, MixSizes(3, 3), np.random.default_rng(0))
    with pytest.raises(CollapseError, match="does not exist"):
        plan_mix("replace", 2, {HUMAN: 3}, MixSizes(3, 3), np.random.default_rng(0))


def test_fixed_fraction_keeps_its_fraction_when_gates_leave_fewer_samples():
    from collapse.mixing import HUMAN, MixSizes, plan_fixed_fraction, synthetic_pool

    sizes = MixSizes(human=100, synthetic=100, human_fraction=0.2)
    rng = np.random.default_rng(0)
    full = {t.pool: t.count for t in plan_fixed_fraction(1, {HUMAN: 100, synthetic_pool(0): 100}, sizes, rng)}
    assert full == {HUMAN: 20, synthetic_pool(0): 80}
    short = {t.pool: t.count for t in plan_fixed_fraction(1, {HUMAN: 100, synthetic_pool(0): 40}, sizes, rng)}
    assert short == {HUMAN: 10, synthetic_pool(0): 40}  # 10 / 50 = 0.2 still


@pytest.mark.parametrize("ratio, n_s", [(1.0, 40), (0.5, 20), (0.0, 0), (0.74, 30)])
def test_augment_keeps_every_human_example_and_adds_a_ratio_of_synthetic(ratio, n_s):
    g = run("augment", synthetic=N, synthetic_ratio=ratio)
    assert composition(g.trained[0]) == Counter({("human", -1): N})
    for gen in range(1, 5):
        c = composition(g.trained[gen])
        want = Counter({("human", -1): N, ("synthetic", gen - 1): n_s})
        assert c == +want
        assert len(set(g.trained[gen]["text"])) == N + n_s  # without replacement
    plan = plan_mix("augment", 2, {HUMAN: N, synthetic_pool(1): N}, MixSizes(N, N, synthetic_ratio=ratio),
                    generation_rng(0, 2, "mix"))
    assert [(t.pool, t.count) for t in plan] == [(HUMAN, N)] + ([(synthetic_pool(1), n_s)] if n_s else [])


def test_augment_needs_enough_synthetic_samples():
    sizes = MixSizes(human=N, synthetic=M, synthetic_ratio=1.5)
    with pytest.raises(CollapseError, match=r"augment: each training set needs round\(1.5·40\) = 60 synthetic examples but mix.synthetic_size is 30"):
        check_sizes("augment", 3, sizes, 1000)
    check_sizes("augment", 0, sizes, 1000)  # generation 0 is human only
    with pytest.raises(CollapseError, match="needs 60 examples from 'synthetic_0' but it holds 30"):
        plan_mix("augment", 1, {HUMAN: N, synthetic_pool(0): M}, sizes, np.random.default_rng(0))


def test_augment_validates_in_lm_recipes():
    from collapse.config import load_config
    from collapse.errors import ConfigError

    cfg = load_config(None, ["mix.regime=augment", "mix.synthetic_ratio=0.5"])
    assert cfg.regimes == ["augment"] and cfg.mix.synthetic_ratio == 0.5
    with pytest.raises(ConfigError, match="mix.synthetic_ratio: expected >= 0"):
        load_config(None, ["mix.synthetic_ratio=-1"])


def test_lm_runs_pass_the_synthetic_ratio_to_the_augment_plan():
    """The LM side resolves mix.synthetic_ratio into the sizes the shared plan function reads."""
    from collapse.config import load_config
    from collapse.experiment import _mix_sizes
    from collapse.mixing import plan_mix, synthetic_pool

    cfg = load_config(None, {"mix.regime": "augment", "mix.synthetic_ratio": 0.25, "mix.synthetic_size": 40})
    sizes = _mix_sizes(cfg, n_train_split=100)
    assert (sizes.human, sizes.synthetic, sizes.synthetic_ratio) == (100, 40, 0.25)
    plan = plan_mix("augment", 1, {"human": 100, synthetic_pool(0): 40}, sizes, np.random.default_rng(0))
    assert [(t.pool, t.count) for t in plan] == [("human", 100), (synthetic_pool(0), 25)]
