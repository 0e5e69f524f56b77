"""Known-answer tests of the theory sandbox (collapse.theory).

Every closed form is checked against the simulation within a few standard
errors of a mean over K trials (small M and n, so the effects are large and
the check is sharp), some also against an independently derived quantity,
and the checks are shown to reject a wrong formula. The simulations run
through the real loop (collapse.loop.run_generations) and the real
mixing plans (collapse.mixing).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from collapse.cli import main
from collapse.errors import CollapseError, ConfigError
from collapse.theory import load_theory_config, run_theory
from collapse.theory.categorical import categorical_closed_form, tail_categories, zipf_probabilities
from collapse.theory.gaussian import c4, gaussian_closed_form
from collapse.theory.gmm import ReferenceQuantile, l2_distance, mixture_cdf, w2_distance
from collapse.theory.regression import inverse_wishart_trace

REPO = Path(__file__).resolve().parents[1]
K = 20000  # trials for the closed-form checks: s.e. of a mean ≈ sd/141
Z = 4.0  # |z| bound per generation; several generations and quantities are checked at once


def simulate(model: str, regime: str = "replace", generations: int = 8, trials: int = K, seed: int = 0,
             keep_trials: bool = False, mix: dict | None = None, **options):
    overrides = {"run.model": model, "run.regime": regime, "run.generations": generations,
                 "run.trials": trials, "run.seed": seed}
    overrides.update({f"{model}.{k}": v for k, v in options.items()})
    overrides.update({f"mix.{k}": v for k, v in (mix or {}).items()})
    return run_theory(load_theory_config(None, overrides), keep_trials=keep_trials)


def max_abs_z(result, quantity: str, closed: np.ndarray | None = None) -> float:
    closed = result.closed[quantity] if closed is None else closed
    return float(np.max(np.abs((result.mean[quantity] - closed) / result.se[quantity])))


# ------------------------------------------------------------------ gaussian

@pytest.mark.parametrize("estimator", ["mle", "unbiased"])
@pytest.mark.parametrize("samples,generations,dim", [(5, 6, 1), (20, 12, 1), (8, 8, 3)])
def test_gaussian_closed_forms_match_simulation(estimator, samples, generations, dim):
    r = simulate("gaussian", generations=generations, samples=samples, estimator=estimator, dim=dim)
    assert set(r.closed) == {"sigma2", "mu2", "sigma", "w2"}
    for q in r.closed:
        assert max_abs_z(r, q) < Z, (q, r.mean[q], r.closed[q])


def test_gaussian_closed_forms_are_the_issue_formulas():
    m, n = 7, np.arange(1, 11)
    mle = gaussian_closed_form("mle", [m] * 10)
    np.testing.assert_allclose(mle["sigma2"], (1 - 1 / m) ** n)
    np.testing.assert_allclose(mle["mu2"], 1 - (1 - 1 / m) ** n)
    unb = gaussian_closed_form("unbiased", [m] * 10)
    np.testing.assert_allclose(unb["sigma2"], 1.0)
    np.testing.assert_allclose(unb["mu2"], n / m)
    np.testing.assert_allclose(unb["sigma"], c4(m) ** n)
    np.testing.assert_allclose(unb["w2"], n / m + 2 * (1 - c4(m) ** n))


@pytest.mark.parametrize("m", [2, 3, 5, 10, 50, 400])
def test_c4_is_the_mean_of_the_sample_standard_deviation(m):
    # Independent derivation: s·√(m−1)/σ follows a chi distribution with m − 1 degrees of freedom.
    assert c4(m) == pytest.approx(stats.chi(m - 1).mean() / math.sqrt(m - 1), rel=1e-12)


def test_a_wrong_gaussian_formula_is_rejected():
    m = 5
    r = simulate("gaussian", generations=8, samples=m, estimator="mle")
    n = np.arange(1, 10)
    assert max_abs_z(r, "sigma2") < Z
    assert max_abs_z(r, "sigma2", (1 - 1 / (m + 1)) ** n) > 3 * Z  # M + 1 instead of M
    assert max_abs_z(r, "sigma2", (1 - 1 / m) ** (n - 1)) > 3 * Z  # n counted from generation, not fits
    assert max_abs_z(r, "mu2", n / m) > 3 * Z  # the unbiased estimator's law
    assert max_abs_z(r, "sigma", c4(m) ** n) > 3 * Z  # forgets the √(1 − 1/M) of the MLE


@pytest.mark.parametrize("estimator", ["mle", "unbiased"])
def test_full_covariance_determinant_closed_forms(estimator):
    from collapse.theory.gaussian import det_closed_form

    r = simulate("gaussian", generations=8, samples=8, dim=3, covariance="full", estimator=estimator)
    assert set(r.closed) == {"sigma2", "mu2", "sigma", "det_ratio", "logdet_ratio"}
    assert r.quantities == ("sigma2", "mu2", "sigma", "w2", "det_ratio", "logdet_ratio")
    for q in r.closed:
        assert max_abs_z(r, q) < Z, (q, r.mean[q], r.closed[q])
    # independently: E[det W] and E[ln det W] of W ∼ Wishart_3(7, I) by scipy's sampler
    w = stats.wishart(df=7, scale=np.eye(3)).rvs(size=40000, random_state=3)
    ddof = 1 if estimator == "unbiased" else 0
    det = np.linalg.det(w) / (8 - ddof) ** 3
    cf = det_closed_form(estimator, 1, 8, 3)
    assert abs(det.mean() - cf["det_ratio"][0]) < Z * det.std() / math.sqrt(det.size)
    assert abs(np.log(det).mean() - cf["logdet_ratio"][0]) < Z * np.log(det).std() / math.sqrt(det.size)
    assert cf["det_ratio"][0] < 1  # the determinant collapses even for the unbiased estimator


def test_full_covariance_recovers_a_correlated_fit():
    from collapse.theory.gaussian import GaussianModel

    g = GaussianModel(4, 0, dim=2, covariance="full")
    g.mu, g.cov = np.zeros((4, 2)), np.broadcast_to(np.array([[2.0, 0.9], [0.9, 1.0]]), (4, 2, 2)).copy()
    x = g.sample(20000, 1)
    g.fit(x, 2)
    np.testing.assert_allclose(g.cov, np.broadcast_to([[2.0, 0.9], [0.9, 1.0]], (4, 2, 2)), atol=0.06)


# ------------------------------------------------------------------ regression

@pytest.mark.parametrize("regime", ["replace", "accumulate"])
@pytest.mark.parametrize("samples,dim,noise", [(12, 3, 1.0), (20, 5, 0.5)])
def test_regression_closed_forms_match_simulation(regime, samples, dim, noise):
    r = simulate("regression", regime, generations=8, samples=samples, dim=dim, noise=noise)
    tau = dim / (samples - dim - 1)
    n = np.arange(1, 10)
    expect = n * noise * tau if regime == "replace" else noise * tau * np.cumsum(1 / n**2)
    np.testing.assert_allclose(r.closed["error"], expect)
    assert max_abs_z(r, "error") < Z, (r.mean["error"], r.closed["error"])


def test_regression_shared_design_matches_its_exact_trace():
    r = simulate("regression", "replace", generations=6, samples=12, dim=3, design="shared")
    assert max_abs_z(r, "error") < Z


def test_a_wrong_regression_formula_is_rejected():
    r = simulate("regression", "replace", generations=8, samples=12, dim=3)
    n = np.arange(1, 10)
    assert max_abs_z(r, "error") < Z
    assert max_abs_z(r, "error", n * 3 / (12 - 3)) > 2 * Z  # d/(T − d) instead of d/(T − d − 1)
    acc = simulate("regression", "accumulate", generations=8, samples=12, dim=3)
    assert max_abs_z(acc, "error", 3 / 8 * np.cumsum(1 / n)) > 2 * Z  # Σ 1/i instead of Σ 1/i²


def test_inverse_wishart_trace_by_monte_carlo():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40000, 12, 3))
    tr = np.trace(np.linalg.inv(np.swapaxes(x, 1, 2) @ x), axis1=1, axis2=2)
    assert abs(tr.mean() - inverse_wishart_trace(3, 12)) < 4 * tr.std() / math.sqrt(tr.size)


def test_regression_accumulate_stays_below_pi2_over_6_times_the_first_error():
    r = simulate("regression", "accumulate", generations=30, samples=12, dim=3)
    first = r.closed["error"][0]
    bound = math.pi**2 / 6 * first
    assert np.all(r.closed["error"] <= bound)
    assert r.closed["error"][-1] > 0.95 * bound  # the bound is tight: Σ 1/i² → π²/6
    assert np.all(r.mean["error"] <= bound + 3 * r.se["error"])
    assert np.all(r.mean["error"] <= math.pi**2 / 6 * (r.mean["error"][0] + 3 * r.se["error"][0]))
    # replace grows past the bound within two generations and never looks back
    rep = simulate("regression", "replace", generations=30, samples=12, dim=3)
    assert rep.mean["error"][-1] > 10 * bound


# ------------------------------------------------------------------ accumulate and augment closed forms

@pytest.mark.parametrize("model,regime,options,mix", [
    ("gaussian", "accumulate", {"samples": 5, "estimator": "mle"}, {}),
    ("gaussian", "accumulate", {"samples": 6, "dim": 2}, {"synthetic_size": 3}),
    ("gaussian", "augment", {"samples": 5}, {"synthetic_ratio": 0.6}),
    ("gaussian", "augment", {"samples": 6, "estimator": "mle"}, {"synthetic_ratio": 2}),
    ("categorical", "accumulate", {"samples": 10, "categories": 8}, {}),
    ("categorical", "augment", {"samples": 10, "categories": 8}, {"synthetic_ratio": 1.5}),
    ("regression", "augment", {"samples": 12, "dim": 3}, {}),
    ("regression", "augment", {"samples": 12, "dim": 3}, {"synthetic_ratio": 2}),
])
def test_accumulate_and_augment_closed_forms_match_simulation(model, regime, options, mix):
    r = simulate(model, regime, generations=8, mix=mix, **options)
    want = {"gaussian": {"sigma2", "mu2"}, "categorical": {"diversity", "tail_mass"}, "regression": {"error"}}[model]
    assert set(r.closed) == want and set(r.closed_forms) == want
    for q in r.closed:
        assert max_abs_z(r, q) < Z, (q, r.mean[q], r.closed[q])


def test_augment_closed_forms_against_an_independent_simulation():
    # The augment chains written out directly (no loop, no plans), K trials at once.
    from collapse.mixing import MixSizes
    from collapse.theory.categorical import categorical_merge_diversity
    from collapse.theory.gaussian import gaussian_merge_closed_form

    rng = np.random.default_rng(11)
    k, n, ns, fits = 40000, 5, 3, 7
    h = rng.standard_normal((k, n))
    x = h
    s2, m2 = [], []
    for _ in range(fits):
        mu, var = x.mean(1), x.var(1, ddof=1)
        s2.append(var), m2.append(mu**2)
        x = np.concatenate([h, mu[:, None] + np.sqrt(var)[:, None] * rng.standard_normal((k, ns))], axis=1)
    cf = gaussian_merge_closed_form("augment", "unbiased", fits, n, n, ns)
    for sim, closed in ((s2, cf["sigma2"]), (m2, cf["mu2"])):
        sim = np.array(sim)
        assert np.all(np.abs(sim.mean(1) - closed) < Z * sim.std(1) / math.sqrt(k)), (sim.mean(1), closed)
    # categorical augment: counts of the n human tokens plus ns draws of the fit
    p0 = zipf_probabilities(4, 1.0)
    hc = rng.multinomial(8, p0, size=k)
    c = hc
    div = []
    for _ in range(fits):
        p = c / c.sum(1, keepdims=True)
        div.append(1 - (p**2).sum(1))
        c = hc + _multinomial_rows(rng, 6, p)
    div = np.array(div)
    closed = categorical_merge_diversity("augment", p0, fits, 8, 6)
    assert np.all(np.abs(div.mean(1) - closed) < Z * div.std(1) / math.sqrt(k)), (div.mean(1), closed)
    assert MixSizes(8, 8, synthetic_ratio=0.75).augment_count() == 6


def _multinomial_rows(rng, n, p):
    """One Multinomial(n, p_r) draw per row of p (K, V), by inverse-CDF draws."""
    u = rng.random((p.shape[0], n))
    cat = (u[:, :, None] > np.cumsum(p, 1)[:, None, :-1]).sum(2)
    return np.stack([(cat == v).sum(1) for v in range(p.shape[1])], axis=1)


def test_categorical_accumulate_closed_form_equals_the_exact_chain():
    # Two categories, small sizes: the exact law of the count of category 0 by
    # enumeration (state: count among N_g tokens), no simulation.
    n, m, a, fits = 4, 3, 0.7, 5
    law = {int(c): stats.binom.pmf(c, n, a) for c in range(n + 1)}
    size, exact = n, []
    for _ in range(fits):
        exact.append(sum(pr * (1 - (c / size) ** 2 - (1 - c / size) ** 2) for c, pr in law.items()))
        nxt: dict[int, float] = {}
        for c, pr in law.items():
            for y in range(m + 1):
                nxt[c + y] = nxt.get(c + y, 0.0) + pr * stats.binom.pmf(y, m, c / size)
        law, size = nxt, size + m
    from collapse.theory.categorical import categorical_merge_diversity

    np.testing.assert_allclose(categorical_merge_diversity("accumulate", np.array([a, 1 - a]), fits, n, m), exact,
                               rtol=1e-10)


def test_augment_runs_for_every_model_and_sits_between_replace_and_the_start():
    for model, opts in (("gaussian", {"samples": 10}), ("regression", {"samples": 12, "dim": 3}),
                        ("categorical", {"samples": 20}), ("gmm", {"samples": 40}), ("kde", {"samples": 20})):
        r = simulate(model, "augment", generations=3, trials=50, **opts)
        assert r.train[1:] == [{"human": opts["samples"], "synthetic": opts["samples"]}] * 3
        assert all(np.all(np.isfinite(r.mean[q])) for q in r.quantities)
    # the human data anchors the chain: far less error than replace
    aug = simulate("regression", "augment", generations=10, trials=4000, samples=12, dim=3)
    rep = simulate("regression", "replace", generations=10, trials=4000, samples=12, dim=3)
    assert aug.mean["error"][-1] < 1.5 * aug.closed["error"][0] + 4 * aug.se["error"][-1] < rep.mean["error"][-1] / 5


# ------------------------------------------------------------------ tail cutting and verification

@pytest.mark.parametrize("estimator,tau,dim", [("unbiased", 1.0, 1), ("mle", 1.5, 2)])
def test_truncated_gaussian_closed_form_matches_simulation(estimator, tau, dim):
    from collapse.theory.gaussian import truncated_variance

    # v(τ) against scipy's truncated normal
    assert truncated_variance(tau) == pytest.approx(stats.truncnorm(-tau, tau).var(), rel=1e-12)
    r = simulate("gaussian", generations=8, samples=10, estimator=estimator, dim=dim, truncate=tau)
    assert set(r.closed) == {"sigma2", "mu2"}
    for q in r.closed:
        assert max_abs_z(r, q) < Z, (q, r.mean[q], r.closed[q])
    # collapse accelerates: the variance falls geometrically even when the untruncated chain keeps E[σ²]
    n = np.arange(1, 10)
    c = 1.0 if estimator == "unbiased" else 0.9
    np.testing.assert_allclose(r.closed["sigma2"], c**n * truncated_variance(tau) ** (n - 1))
    plain = simulate("gaussian", generations=8, samples=10, estimator=estimator, dim=dim)
    assert r.mean["sigma2"][-1] < 0.5 * plain.mean["sigma2"][-1]


def test_truncated_gaussian_draws_stay_inside_the_band():
    from collapse.theory.gaussian import GaussianModel

    g = GaussianModel(500, 0, dim=2, truncate=0.7)
    g.mu, g.var = np.full((500, 2), 3.0), np.full((500, 2), 4.0)
    x = g.sample(50, 1)
    assert np.all(np.abs(x - 3.0) <= 0.7 * 2.0 + 1e-12)
    assert abs(x.var() / 4.0 - stats.truncnorm(-0.7, 0.7).var()) < 0.01


def test_categorical_top_k_and_top_p_cut_the_tail():
    from collapse.theory.categorical import draw_from_counts, truncation_weights

    counts = np.array([[5, 1, 3, 0, 1], [2, 2, 2, 2, 2]])
    np.testing.assert_array_equal(truncation_weights(counts, ("top_k", 2)), [[5, 0, 3, 0, 0], [2, 2, 0, 0, 0]])
    np.testing.assert_array_equal(truncation_weights(counts, ("top_p", 0.7)), [[5, 0, 3, 0, 0], [2, 2, 2, 2, 0]])
    x = draw_from_counts(np.array([[1, 0, 3], [0, 2, 0]]), 40000, np.random.default_rng(0))
    assert np.all(x[1] == 1) and not np.any(x[0] == 1)
    assert abs(np.mean(x[0] == 2) - 0.75) < 0.01
    top_k = simulate("categorical", generations=10, trials=1000, samples=50, truncate="top_k:5", keep_trials=True)
    plain = simulate("categorical", generations=10, trials=1000, samples=50)
    assert top_k.closed == {} and top_k.closed_forms == {}
    assert np.all(top_k.trial_values["surviving"][1:] <= 5)
    top_p = simulate("categorical", generations=10, trials=1000, samples=50, truncate="top_p:0.9")
    for r in (top_k, top_p):  # the tail vanishes and diversity collapses faster than without truncation
        assert r.mean["tail_mass"][-1] < 0.2 * plain.mean["tail_mass"][-1]
        assert r.mean["entropy"][-1] < plain.mean["entropy"][-1] - 4 * r.se["entropy"][-1]


def test_categorical_entropy_and_absorption():
    r = simulate("categorical", generations=60, trials=2000, categories=3, samples=6, zipf=0.0, keep_trials=True)
    c0 = r.trial_values["entropy"][0]
    assert np.all(c0 <= math.log(3) + 1e-12)
    absorbed = r.mean["absorbed"]
    assert np.all(np.diff(absorbed) >= 0) and absorbed[-1] > 0.99  # absorption is for good under replace
    assert np.all(r.trial_values["entropy"][r.trial_values["absorbed"] == 1] == 0)
    # mean absorption time from the distribution function vs Littler's diffusion approximation
    from collapse.theory.categorical import absorption_time_diffusion

    mean_t = float(np.sum(1.0 - absorbed))  # generations until one category is left (generation 0 = fit 1)
    approx = absorption_time_diffusion(np.full(3, 1 / 3), 6)
    assert 0.7 * approx < mean_t + 1 < 1.3 * approx, (mean_t, approx)


def test_verification_prevents_collapse_of_regression():
    rep = simulate("regression", generations=10, trials=3000, samples=12, dim=3)
    sel = run_theory(load_theory_config(None, {"run.model": "regression", "run.generations": 10, "run.trials": 3000,
                                               "regression.samples": 12, "regression.dim": 3, "verify.keep": 0.5}))
    noisy = run_theory(load_theory_config(None, {"run.model": "regression", "run.generations": 10, "run.trials": 3000,
                                                 "regression.samples": 12, "regression.dim": 3, "verify.keep": 0.5,
                                                 "verify.noise": 3.0}))
    assert sel.closed == {} and rep.mean["error"][0] == sel.mean["error"][0]  # generation 0 fits human data
    assert sel.mean["error"][-1] < sel.mean["error"][0] < rep.mean["error"][-1] / 10  # selection stops collapse
    assert sel.mean["error"][-1] < noisy.mean["error"][-1] < rep.mean["error"][-1]  # a noisy verifier helps less


def test_verifier_keeps_the_best_candidates():
    from collapse.theory.gaussian import GaussianModel

    g = GaussianModel(200, 0, dim=1)
    g.mu, g.var = np.zeros((200, 1)), np.ones((200, 1))
    g.verify = 0.25
    x = g.sample(10, 1)[..., 0]  # the 10 of 40 candidates nearest 0
    assert x.shape == (200, 10)
    cand = g.draw(40, 1)[..., 0]
    np.testing.assert_allclose(np.sort(np.abs(x), 1), np.sort(np.abs(cand), 1)[:, :10])


# ------------------------------------------------------------------ ordering

def _final(model, regime, quantity, **options):
    r = simulate(model, regime, generations=10, trials=4000, **options)
    return r.mean[quantity][-1], r.se[quantity][-1]


def _assert_strictly_ordered(values: dict[str, tuple[float, float]], order: list[str]):
    """order lists the regimes from largest to smallest; each gap exceeds 3 combined s.e."""
    for hi, lo in zip(order, order[1:]):
        (a, sa), (b, sb) = values[hi], values[lo]
        assert a - b > 3 * math.hypot(sa, sb), (hi, lo, values)


def test_regression_error_orders_replace_worst_accumulate_best():
    regimes = ["replace", "accumulate_subsample", "accumulate"]
    err = {g: _final("regression", g, "error", samples=12, dim=3) for g in regimes}
    _assert_strictly_ordered(err, regimes)


def test_gaussian_variance_orders_replace_worst_accumulate_best():
    regimes = ["replace", "accumulate_subsample", "accumulate"]
    # MLE variance collapses: replace loses the most (smallest σ²), accumulate the least.
    var = {g: _final("gaussian", g, "sigma2", samples=10, estimator="mle") for g in regimes}
    _assert_strictly_ordered(var, regimes[::-1])
    # and the distance to the start orders the other way round
    w2 = {g: _final("gaussian", g, "w2", samples=10, estimator="unbiased") for g in regimes}
    _assert_strictly_ordered(w2, regimes)


# ------------------------------------------------------------------ categorical

@pytest.mark.parametrize("categories,samples,zipf,generations", [(10, 20, 0.0, 10), (50, 30, 1.2, 8)])
def test_categorical_closed_forms_match_simulation(categories, samples, zipf, generations):
    r = simulate("categorical", generations=generations, categories=categories, samples=samples, zipf=zipf)
    assert set(r.closed) == {"diversity", "tail_mass"}
    for q in r.closed:
        assert max_abs_z(r, q) < Z, (q, r.mean[q], r.closed[q])
    n = np.arange(1, generations + 2)
    p0 = zipf_probabilities(categories, zipf)
    assert max_abs_z(r, "diversity", (1 - 1 / (samples + 1)) ** n * (1 - np.sum(p0**2))) > Z


@pytest.mark.parametrize("m,a,fits", [(2, 0.5, 6), (5, 0.8, 9), (12, 0.9, 15)])
def test_categorical_closed_form_equals_the_exact_wright_fisher_chain(m, a, fits):
    # Two categories: the count of category 0 is a Wright–Fisher Markov chain on
    # 0..M; its exact law after n fits gives E[1 − Σp²] with no simulation.
    k = np.arange(m + 1)
    trans = stats.binom.pmf(k[None, :], m, (k / m)[:, None])  # (M+1, M+1)
    law = stats.binom.pmf(k, m, a)  # after the first fit
    exact_div, exact_tail = [], []
    for _ in range(fits):
        p = k / m
        exact_div.append(law @ (1 - p**2 - (1 - p) ** 2))
        exact_tail.append(law @ (1 - p))
        law = law @ trans
    p0 = np.array([a, 1 - a])
    cf = categorical_closed_form("replace", p0, tail_categories(p0, 0.1), [m] * fits)
    np.testing.assert_allclose(cf["diversity"], exact_div, rtol=1e-10)
    np.testing.assert_allclose(cf["tail_mass"], exact_tail, rtol=1e-10)


def test_categorical_surviving_categories_never_increase_under_replace():
    r = simulate("categorical", generations=25, trials=2000, categories=40, samples=30, zipf=1.0, keep_trials=True)
    surv = r.trial_values["surviving"]  # (generations + 1, trials)
    assert np.all(np.diff(surv, axis=0) <= 0)
    assert surv[-1].mean() < 0.6 * surv[0].mean()
    # the expected tail mass is conserved while most trials lose the tail
    tail = r.trial_values["tail_mass"]
    assert abs(tail[-1].mean() - r.closed["tail_mass"][-1]) < Z * r.se["tail_mass"][-1]
    assert np.median(tail[-1]) < 0.25 * np.median(tail[0])
    # accumulate keeps the human pool, so a category seen at generation 0 never dies
    acc = simulate("categorical", "accumulate", generations=10, trials=500, categories=40, samples=30, keep_trials=True)
    assert np.all(acc.trial_values["surviving"] >= acc.trial_values["surviving"][0])


# ------------------------------------------------------------------ gmm

def test_w2_and_l2_distances_have_the_known_answers():
    ref = ReferenceQuantile(np.ones(1), np.zeros(1), np.ones(1))
    a, s = np.array([[0.3], [1.0], [-2.0], [0.0]]), np.array([[1.0], [0.5], [2.0], [0.05]])
    np.testing.assert_allclose(w2_distance(np.ones((4, 1)), a, s**2, ref), np.hypot(a[:, 0], s[:, 0] - 1), atol=1e-6)
    # a two-component mixture shifted by δ is W₂ = δ from itself
    w0, mu0, v0 = np.full(2, 0.5), np.array([-2.0, 2.0]), np.ones(2)
    ref2 = ReferenceQuantile(w0, mu0, v0)
    shifted = w2_distance(np.full((2, 2), 0.5), mu0 + np.array([[0.0], [0.3]]), np.ones((2, 2)), ref2)
    np.testing.assert_allclose(shifted, [0.0, 0.3], atol=1e-6)
    # L2 against a direct numerical integral
    xs = np.linspace(-15, 15, 300001)
    w, mu, v = np.array([[0.3, 0.7]]), np.array([[-1.0, 2.5]]), np.array([[0.5, 2.0]])
    pdf = lambda ww, mm, vv: (ww * stats.norm.pdf(xs[:, None], mm, np.sqrt(vv))).sum(1)  # noqa: E731
    num = math.sqrt(np.trapezoid((pdf(w[0], mu[0], v[0]) - pdf(w0, mu0, v0)) ** 2, xs))
    assert l2_distance(w, mu, v, w0, mu0, v0)[0] == pytest.approx(num, rel=1e-6)
    assert mixture_cdf(np.array([[0.0]]), w0[None], mu0[None], v0[None])[0, 0] == pytest.approx(0.5)


@pytest.mark.parametrize("distance", ["w2", "l2"])
def test_gmm_distance_to_the_start_grows_under_replace(distance):
    r = simulate("gmm", generations=20, trials=300, samples=40, distance=distance)
    d, se = r.mean[distance], r.se[distance]
    assert r.closed == {} and r.closed_forms == {}  # no closed form is claimed
    assert d[-1] - d[0] > 3 * math.hypot(se[-1], se[0])
    assert d[-1] > d[10] > d[0]
    # accumulate stays closer to the start than replace
    acc = simulate("gmm", "accumulate", generations=20, trials=300, samples=40, distance=distance)
    assert acc.mean[distance][-1] < d[-1]


def _em_test_data(k: int, n: int, seed: int) -> np.ndarray:
    """Rows from the start mixture, from mixtures with a narrow component far
    out (m = L₀ − L₁ far past the float32 range), and degenerate rows."""
    rng = np.random.default_rng(seed)
    start = np.where(rng.random((k, n)) < 0.5, -2.0, 2.0) + rng.standard_normal((k, n))
    narrow = np.where(rng.random((k, n)) < 0.1, 3 + 1e-3 * rng.standard_normal((k, n)), rng.standard_normal((k, n)))
    x = np.concatenate([start, narrow])
    x[0] = 5.0  # every point equal: no spread
    x[1, : n // 2], x[1, n // 2:] = -1.0, 1.0  # two exact atoms
    x[2] = 1e6 + rng.standard_normal(n)  # far from 0: standardisation matters
    return x


@pytest.mark.parametrize("n", [3, 7, 40, 100])
def test_two_component_em_matches_the_general_em(n):
    from collapse.theory.gmm import em_fit

    x = _em_test_data(1500, n, seed=n)
    fast = em_fit(x, 2, 100, 1e-5)
    ref = em_fit(x, 2, 100, 1e-5, reference=True)
    assert fast[3] <= 100 and all(np.all(np.isfinite(a)) for a in fast[:3])
    np.testing.assert_allclose(fast[0].sum(axis=1), 1.0, rtol=1e-6)
    scale = np.maximum(x.std(axis=1), 1e-3)[:, None]
    for a, b, unit in zip(fast[:3], ref[:3], (1.0, scale, scale**2)):
        d = np.abs(a - b) / unit  # weights as they are, means in sd of the data, variances in its variance
        # the same iteration, compiled in float64 and in numpy (float32
        # responsibilities): equal to about 1e-8 where EM converges (measured:
        # medians below 3e-9, 99.6 % of trials within 1e-6, all within 4e-3), apart near its
        # stopping rule (tol 1e-5 on the mean log-likelihood)
        assert np.median(d) < 1e-7
        assert np.mean(d < 1e-6) > 0.99
        assert np.mean(d < 1e-3) > 0.995
    # run to convergence from the same start they agree closely on nearly every trial
    tight = em_fit(x[:400], 2, 1000, 1e-9)
    tight_ref = em_fit(x[:400], 2, 1000, 1e-9, reference=True)
    for a, b in zip(tight[:3], tight_ref[:3]):
        assert np.mean(np.abs(a - b).max(axis=1) / scale[:400, 0] < 1e-2) > 0.95
    # and from a k-means start (variances in x's units)
    from collapse.theory.em2 import init_from_labels, kmeans_labels

    init = init_from_labels(x[..., None], kmeans_labels(x[..., None], 2, np.random.default_rng(0)), 2)
    kf, kr = em_fit(x, 2, 100, 1e-5, init), em_fit(x, 2, 100, 1e-5, init, reference=True)
    assert np.median(np.abs(kf[1] - kr[1]) / scale) < 1e-7


def test_two_component_em_keeps_the_log_likelihood_exact_far_out():
    # A narrow component far from the others puts m = L₀ − L₁ far past the
    # range of exp on some points (e^−|m| underflows; the float32 form of
    # before clipped m at 80): EM must still stop by the exact
    # log-likelihood and land where the general EM lands.
    from collapse.theory.gmm import em_fit

    rng = np.random.default_rng(1)
    k, n = 500, 60
    x = np.concatenate([rng.standard_normal((k, n - 6)), 8 + 1e-4 * rng.standard_normal((k, 6))], axis=1)
    fast, ref = em_fit(x, 2, 300, 1e-6), em_fit(x, 2, 300, 1e-6, reference=True)
    by_mean = [(np.take_along_axis(a, np.argsort(fit[1], axis=1), 1) for a in fit[:3]) for fit in (fast, ref)]
    (wf, mf, vf), (wr, mr, vr) = by_mean  # components in the order of their means
    split = np.abs(wr[:, 1] - 0.1) < 1e-9  # the far atoms on their own: m ≈ 1e9 on the other points
    assert split.mean() > 0.9
    np.testing.assert_allclose(wf[split], wr[split], rtol=1e-9)
    np.testing.assert_allclose(mf[split], mr[split], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(vf[split], vr[split], rtol=1e-6)
    assert np.mean(np.abs(wf - wr).max(axis=1) < 1e-3) > 0.98
    # m past 80 on the far points while every term stays moderate (a
    # log-likelihood that lost the excess would stop 3/4 of these trials elsewhere)
    x = np.where(rng.random((800, 80)) < 0.75, rng.normal(-1.0, 1.0, (800, 80)), rng.normal(3.0, 0.25, (800, 80)))
    fast, ref = em_fit(x, 2, 500, 1e-7), em_fit(x, 2, 500, 1e-7, reference=True)
    d = np.abs(fast[1] - ref[1]).max(axis=1)
    assert np.median(d) < 1e-6 and np.mean(d > 1e-4) < 0.15
    # a narrow component (sd 0.005 of the data's) far from most points: the
    # log-likelihood must not lose precision to the narrow component's huge
    # terms, or the stopping rule never fires
    rng = np.random.default_rng(7)
    x = np.where(rng.random((600, 80)) < 0.9, rng.standard_normal((600, 80)), 6 + 0.01 * rng.standard_normal((600, 80)))
    fast, ref = em_fit(x, 2, 500, 1e-6), em_fit(x, 2, 500, 1e-6, reference=True)
    assert fast[3] <= ref[3] + 5
    d = np.abs(np.sort(fast[1], axis=1) - np.sort(ref[1], axis=1)).max(axis=1)
    assert np.median(d) < 1e-6 and np.mean(d > 1e-4) < 0.05


@pytest.mark.parametrize("regime", ["replace", "accumulate"])
def test_gmm_chain_with_the_fast_em_matches_the_general_em(regime):
    # Statistically the same chain: per-generation means within a few standard
    # errors of the paired difference (same seeds, same draws until a fit differs).
    cfg = load_theory_config(None, {"run.model": "gmm", "run.regime": regime, "run.generations": 10,
                                    "run.trials": 2000, "run.seed": 4, "gmm.samples": 50})
    fast = run_theory(cfg, keep_trials=True)
    ref = run_theory(cfg, keep_trials=True, reference=True)
    assert fast.params == ref.params and fast.train == ref.train
    for q in fast.quantities:
        d = fast.trial_values[q] - ref.trial_values[q]  # (generations + 1, K)
        se = d.std(axis=1, ddof=1) / math.sqrt(d.shape[1])
        assert np.all(np.abs(d.mean(axis=1)) <= Z * se + 1e-9), (q, d.mean(axis=1), se)
        assert np.median(np.abs(d[0])) < 1e-5  # generation 0: the same data, the same fit to rounding


def test_gmm_2d_l2_and_em_against_scikit_learn():
    from sklearn.mixture import GaussianMixture

    from collapse.theory.em2 import em2_fit, kmeans_labels, mixture_inner

    # ∫ f g for 2-D mixtures against a grid integral
    w = np.array([[0.3, 0.7]])
    mu = np.array([[[-1.0, 0.5], [1.5, -0.2]]])
    cov = np.array([[[[1.0, 0.3], [0.3, 0.6]], [[0.5, -0.1], [-0.1, 1.2]]]])
    g = np.linspace(-9, 9, 721)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([xx, yy], -1)
    dens = sum(w[0, c] * stats.multivariate_normal(mu[0, c], cov[0, c]).pdf(pts) for c in range(2))
    num = np.trapezoid(np.trapezoid(dens * dens, g, axis=1), g)
    assert mixture_inner(w, mu, cov, w, mu, cov)[0] == pytest.approx(num, rel=1e-6)
    # EM on two well-separated clusters lands where scikit-learn's does
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((1, 150, 2)) + [-3, 0], rng.standard_normal((1, 100, 2)) * 0.7 + [3, 1]], axis=1)
    labels = kmeans_labels(x, 2, np.random.default_rng(1))[0]
    assert len(set(labels[:150])) == 1 and len(set(labels[150:])) == 1 and labels[0] != labels[-1]
    for init in ("kmeans", "quantiles"):
        ww, mm, cv, _ = em2_fit(x, 2, 300, 1e-10, init, np.random.default_rng(2))
        ref = GaussianMixture(2, tol=1e-10, max_iter=300, random_state=0).fit(x[0])
        order, ref_order = np.argsort(mm[0, :, 0]), np.argsort(ref.means_[:, 0])
        np.testing.assert_allclose(mm[0, order], ref.means_[ref_order], atol=1e-4)
        np.testing.assert_allclose(cv[0, order], ref.covariances_[ref_order], atol=1e-4)
        np.testing.assert_allclose(ww[0, order], ref.weights_[ref_order], atol=1e-4)


@pytest.mark.parametrize("dim", [1, 2])
def test_gmm_drifts_from_its_generation_0_fit_and_names_the_init(dim, capsys):
    opts = {"dim": dim, "distance": "l2"} if dim == 2 else {}
    for init in ("quantiles", "kmeans"):
        r = simulate("gmm", generations=8, trials=200, samples=40, init=init, keep_trials=True, **opts)
        # medians: a component that shrinks onto a few points makes the squared L2 heavy-tailed
        d = np.median(r.trial_values["l2_gen0"], axis=1)
        assert d[0] == 0 and d[-1] > 3 * d[1] > 0
        assert r.params["init"] == init and r.closed == {}
    assert main(["theory", "gmm", "--json", "--dim", "2", "--distance", "l2", "--init", "kmeans", "--trials", "20",
                 "--generations", "1", "--samples", "30"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["init"] == "kmeans" and out["quantities"] == ["l2_gen0", "l2", "variance"]


# ------------------------------------------------------------------ kde

@pytest.mark.parametrize("bandwidth", ["scott", "silverman", "fixed"])
def test_kde_variance_closed_form_matches_simulation(bandwidth):
    r = simulate("kde", generations=8, trials=10000, samples=10, bandwidth=bandwidth)
    assert set(r.closed) == {"variance"}
    assert max_abs_z(r, "variance") < Z, (r.mean["variance"], r.closed["variance"])
    assert r.mean["l2_gen0"][0] == 0 and r.mean["l2_gen0"][-1] > r.mean["l2_gen0"][1] > 0
    if bandwidth != "fixed":  # smoothing inflates the variance every generation
        assert r.closed["variance"][-1] > 5 and r.mean["variance"][-1] > 5


def test_kde_l2_distance_and_bandwidth_rules_against_scipy():
    from collapse.theory.kde import KDEModel, _cross

    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 30))
    for rule in ("scott", "silverman"):
        m = KDEModel(2, 0, samples=30, bandwidth=rule)
        m.fit(x, 0)
        for t in range(2):
            kde = stats.gaussian_kde(x[t], bw_method=rule)
            assert m.h[t] == pytest.approx(math.sqrt(kde.covariance[0, 0]), rel=1e-12)
    y = rng.standard_normal((2, 20)) * 1.5 + 0.5
    ha, hb = np.array([0.3, 0.5]), np.array([0.2, 0.7])
    xs = np.linspace(-15, 15, 200001)
    f = lambda pts, h: stats.norm.pdf(xs[:, None], pts[None, :], h).mean(1)  # noqa: E731
    for t in range(2):
        num = np.trapezoid((f(x[t], ha[t]) - f(y[t], hb[t])) ** 2, xs)
        exact = _cross(x, ha, x, ha)[t] - 2 * _cross(x, ha, y, hb)[t] + _cross(y, hb, y, hb)[t]
        assert exact == pytest.approx(num, rel=1e-6)


# ------------------------------------------------------------------ loop, regimes, reproducibility

def test_theory_runs_through_the_shared_loop_and_plans(monkeypatch):
    import collapse.loop as orch

    calls = []
    real = orch.apply_plan_trials

    def spy(plan, pools, rng, union=None):
        calls.append(next(iter(pools.values())).shape[0])  # trials on axis 0
        return real(plan, pools, rng, union=union)

    plans = []
    real_plan = orch.plan_mix

    def plan_spy(regime, g, *args):
        plans.append((regime, g))
        return real_plan(regime, g, *args)

    monkeypatch.setattr(orch, "apply_plan_trials", spy)
    monkeypatch.setattr(orch, "plan_mix", plan_spy)
    simulate("gaussian", "augment", generations=3, trials=10, samples=4)
    assert calls == [10, 10, 10, 10] and plans == [("augment", g) for g in range(4)]
    # accumulate fits from running sufficient statistics: the same plans, no training set built
    r = simulate("gaussian", "accumulate", generations=3, trials=10, samples=4)
    assert len(calls) == 4 and plans[4:] == [("accumulate", g) for g in range(4)]
    assert r.train == [{"human": 4, "synthetic": 0}, {"human": 4, "synthetic": 4},
                       {"human": 4, "synthetic": 8}, {"human": 4, "synthetic": 12}]
    rep = simulate("categorical", "replace", generations=2, trials=10, samples=6)
    assert rep.train[1:] == [{"human": 0, "synthetic": 6}] * 2
    fresh = simulate("regression", "fresh", generations=2, trials=10, samples=8, dim=2)
    assert fresh.train[1:] == [{"human": 8, "synthetic": 8}] * 2
    ff = simulate("gmm", "fixed_fraction", generations=2, trials=10, samples=20, mix={"human_fraction": 0.25})
    assert ff.train[1:] == [{"human": 5, "synthetic": 15}] * 2


@pytest.mark.parametrize("model", ["gaussian", "regression", "categorical", "gmm", "kde"])
@pytest.mark.parametrize("regime", ["accumulate_subsample", "fixed_fraction", "fresh"])
def test_regimes_without_closed_forms_claim_none(model, regime):
    samples = 12 if model == "regression" else 20
    options = {"dim": 3} if model == "regression" else {}
    r = simulate(model, regime, generations=3, trials=20, samples=samples, **options)
    assert r.closed == {} and r.closed_forms == {}
    assert all(np.all(np.isfinite(r.mean[q])) for q in r.quantities)


@pytest.mark.parametrize("regime", ["accumulate_subsample", "fixed_fraction"])
def test_reported_standard_error_matches_the_spread_across_seeds(regime):
    # Trials must be independent: the standard error over trials has to
    # describe how much the mean moves from seed to seed. One composition
    # shared by all trials made the spread 2.4× the reported s.e. here.
    means, ses = [], []
    for seed in range(16):
        r = simulate("regression", regime, generations=20, trials=500, seed=seed, samples=32, dim=10)
        means.append(r.mean["error"][-1])
        ses.append(r.se["error"][-1])
    ratio = np.std(means, ddof=1) / np.mean(ses)
    assert 0.6 <= ratio <= 1.6, ratio


def test_every_trial_draws_its_own_composition_and_positions():
    from collapse.mixing import HUMAN, Take, apply_plan_trials, pooled_union, synthetic_pool

    k = 4000
    pools = {HUMAN: np.broadcast_to(np.arange(10.0), (k, 10)).copy(),
             synthetic_pool(0): np.broadcast_to(100 + np.arange(30.0), (k, 30)).copy()}
    rng = np.random.default_rng(0)
    union = pooled_union("accumulate_subsample", 1)
    train, counts = apply_plan_trials([Take(HUMAN, 3), Take(synthetic_pool(0), 7)], pools, rng, union=union)
    assert train.shape == (k, 10)
    assert np.all(counts[HUMAN] + counts[synthetic_pool(0)] == 10)
    assert np.all((train < 100).sum(axis=1) == counts[HUMAN])  # the counts say what was taken
    assert np.all(np.diff(np.sort(train, axis=1), axis=1) > 0)  # without replacement
    # per-trial human counts: hypergeometric(10 of 40, 10 drawn), not one shared draw
    h = counts[HUMAN]
    assert abs(h.mean() - 2.5) < 0.1 and abs(h.var() - stats.hypergeom(40, 10, 10).var()) < 0.15
    # every position equally likely, and trials differ
    assert np.allclose(np.bincount(train[train < 100].astype(int), minlength=10) / h.sum(), 0.1, atol=0.01)
    # a pool every trial takes whole, after pools taken in varying amounts
    tiny = {HUMAN: pools[HUMAN], synthetic_pool(0): np.full((k, 1), 500.0)}
    both, cnt = apply_plan_trials([Take(HUMAN, 10), Take(synthetic_pool(0), 1)], tiny, rng,
                                  union=[synthetic_pool(0), HUMAN])
    assert np.all(cnt[synthetic_pool(0)] == 1) and np.all((both == 500).sum(axis=1) == 1)
    pools3 = {**tiny, synthetic_pool(1): np.full((k, 1), 700.0)}
    three, cnt3 = apply_plan_trials([Take(HUMAN, 3), Take(synthetic_pool(1), 1)], pools3, rng,
                                    union=[HUMAN, synthetic_pool(0), synthetic_pool(1)])
    for v, name in ((500, synthetic_pool(0)), (700, synthetic_pool(1))):
        assert np.all((three == v).sum(axis=1) == cnt3[name])
    assert np.all((three < 100).sum(axis=1) == cnt3[HUMAN]) and three.shape == (k, 4)
    # a middle pool every trial takes whole while the later pool's counts vary (so do the offsets)
    small = {HUMAN: np.broadcast_to(np.arange(10.0), (3, 10)).copy(), synthetic_pool(0): np.full((3, 1), 500.0),
             synthetic_pool(1): np.broadcast_to(700.0 + np.arange(3), (3, 3)).copy()}
    for seed in range(20):
        got, cs = apply_plan_trials([Take(HUMAN, 12)], small, np.random.default_rng(seed),
                                    union=[HUMAN, synthetic_pool(0), synthetic_pool(1)])
        for row, h, s0, s1 in zip(got, cs[HUMAN], cs[synthetic_pool(0)], cs[synthetic_pool(1)]):
            assert len(set(row)) == 12 and (row < 100).sum() == h and (row == 500).sum() == s0 and (row >= 700).sum() == s1
    sub, c = apply_plan_trials([Take(HUMAN, 4)], pools, rng)
    assert np.all(c[HUMAN] == 4) and len({tuple(row) for row in sub[:50]}) > 40
    assert np.allclose(np.bincount(sub.astype(int).ravel(), minlength=10) / sub.size, 0.1, atol=0.01)


def test_uniform_subset_indices_draws_every_subset_alike():
    from itertools import combinations

    from collapse.mixing import uniform_subset_indices

    rng = np.random.default_rng(0)
    idx = uniform_subset_indices(rng, 240000, 10, 3)  # sparse (2·3 < 10): draws with repeats redrawn
    assert idx.shape == (240000, 3) and idx.min() >= 0 and idx.max() < 10
    assert np.all(np.diff(idx, axis=1) > 0)  # sorted, distinct
    code = {c: i for i, c in enumerate(combinations(range(10), 3))}
    seen = np.bincount([code[tuple(r)] for r in idx.tolist()], minlength=len(code))
    assert stats.chisquare(seen).pvalue > 1e-3  # all 120 subsets equally likely
    big = uniform_subset_indices(rng, 2000, 10100, 100)
    assert np.all(np.diff(big, axis=1) > 0) and abs(big.mean() - 5049.5) < 30
    dense = uniform_subset_indices(rng, 5, 8, 6)
    assert np.all(np.diff(dense, axis=1) > 0) and dense.max() < 8


def test_union_buffer_draws_per_trial_from_every_pool():
    from collapse.mixing import UnionBuffer

    k = 3000
    human = np.broadcast_to(np.arange(10.0), (k, 10)).copy()
    buf = UnionBuffer(human, 10 + 2 * 30)
    assert np.shares_memory(buf.append("human", human), buf.data)
    for g, base in enumerate((100.0, 200.0)):
        buf.append(f"synthetic_{g}", np.broadcast_to(base + np.arange(30.0), (k, 30)).copy())
    train, counts = buf.draw(12, np.random.default_rng(0))
    assert train.shape == (k, 12) and np.all(np.diff(train, axis=1) > 0)  # distinct, in union order
    assert np.all(sum(counts.values()) == 12)
    for name, lo in (("human", 0), ("synthetic_0", 100), ("synthetic_1", 200)):
        assert np.all(((train >= lo) & (train < lo + 50)).sum(axis=1) == counts[name])
    h = counts["human"]  # hypergeometric(10 of 70, 12 drawn) per trial
    assert abs(h.mean() - 12 * 10 / 70) < 0.05 and abs(h.var() - stats.hypergeom(70, 10, 12).var()) < 0.1


@pytest.mark.parametrize("model,options", [("gaussian", {"samples": 6}), ("regression", {"samples": 12, "dim": 3}),
                                           ("categorical", {"samples": 12, "categories": 8}), ("gmm", {"samples": 20})])
def test_accumulate_subsample_from_positions_matches_the_pool_reference(model, options):
    # The fast path (positions drawn per trial: a buffer gather, or counts for
    # the categorical model) and the reference (a pass over every pool) are
    # independent draws of the same process: the same means within errors.
    overrides = {"run.model": model, "run.regime": "accumulate_subsample", "run.generations": 8,
                 "run.trials": 4000, "run.seed": 5, "mix.subsample_size": options["samples"] + 2}
    overrides.update({f"{model}.{k}": v for k, v in options.items()})
    cfg = load_theory_config(None, overrides)
    fast = run_theory(cfg)
    ref = run_theory(cfg, pool_based=True)
    assert [t["human"] + t["synthetic"] for t in fast.train] == [t["human"] + t["synthetic"] for t in ref.train]
    for q in fast.quantities:
        if model == "categorical" and q == "absorbed":
            continue  # zero in both: no trial reaches one category in 8 generations
        z = (fast.mean[q][1:] - ref.mean[q][1:]) / np.hypot(fast.se[q][1:], ref.se[q][1:])
        assert np.all(np.abs(z) < Z), (q, z)
    np.testing.assert_allclose(fast.mean[fast.quantities[0]][0], ref.mean[ref.quantities[0]][0])  # generation 0 alike
    human = np.array([t["human"] for t in fast.train[1:]])
    human_ref = np.array([t["human"] for t in ref.train[1:]])
    # the per-trial compositions agree on average (a hypergeometric count's variance is below its mean)
    assert np.all(np.abs(human - human_ref) < Z * np.sqrt(2 * np.maximum(human_ref, 1) / 4000)), (human, human_ref)


def test_accumulate_subsample_memory_is_flat_for_the_categorical_model():
    import tracemalloc

    def peak(generations):
        cfg = load_theory_config(None, {"run.model": "categorical", "run.regime": "accumulate_subsample",
                                        "run.trials": 2000, "run.generations": generations, "categorical.samples": 100})
        tracemalloc.start()
        run_theory(cfg)
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top

    short, long = peak(5), peak(40)  # a kept pool is 0.8 MB: 35 more would add 28 MB
    assert long < short + 4e6, (short, long)


@pytest.mark.parametrize("model,options", [
    ("gaussian", {"samples": 7}), ("gaussian", {"samples": 7, "dim": 3, "covariance": "full"}),
    ("regression", {"samples": 12, "dim": 3}), ("categorical", {"samples": 9}),
])
def test_accumulate_from_sufficient_statistics_equals_the_rebuilt_pool(model, options):
    overrides = {"run.model": model, "run.regime": "accumulate", "run.generations": 12, "run.trials": 300, "run.seed": 2}
    overrides.update({f"{model}.{k}": v for k, v in options.items()})
    cfg = load_theory_config(None, overrides)
    fast = run_theory(cfg, keep_trials=True)
    slow = run_theory(cfg, keep_trials=True, pool_based=True)
    assert fast.train == slow.train
    for q in fast.quantities:
        np.testing.assert_allclose(fast.trial_values[q], slow.trial_values[q], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("model", ["gaussian", "categorical"])
def test_accumulate_memory_is_flat_in_the_number_of_generations(model):
    import tracemalloc

    def peak(generations):
        cfg = load_theory_config(None, {"run.model": model, "run.regime": "accumulate", "run.trials": 2000,
                                        "run.generations": generations, f"{model}.samples": 100})
        tracemalloc.start()
        run_theory(cfg)
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top

    # a kept pool is 1.6 MB (gaussian; categorical tokens 0.8 MB as int32):
    # 40 of them would add 56 (28) MB
    short, long = peak(5), peak(40)
    assert long < short + 8e6, (short, long)


def test_categories_at_and_the_count_sampler_are_exact():
    from collapse.theory.categorical import categories_at, sample_counts

    rng = np.random.default_rng(0)
    for k, v, n in [(5, 1, 7), (40, 3, 5), (300, 30, 40), (500, 50, 2000), (64, 7, 10**6)]:
        counts = rng.multinomial(n, rng.dirichlet(np.full(v, 0.3)), size=k)
        counts[: k // 2, v // 2] = 0  # dead categories in the middle and at the ends
        counts[: k // 3, 0] = 0
        counts[:, -1] += n - counts.sum(axis=1)
        cum = np.cumsum(counts, axis=1)
        pos = np.concatenate([rng.integers(0, n, size=(k, 60)), cum[:, :-1] - 1, np.minimum(cum[:, :-1], n - 1),
                              np.zeros((k, 1), int), np.full((k, 1), n - 1)], axis=1)
        brute = (cum[:, None, :] <= pos[:, :, None]).sum(axis=2)  # categories ending at or before the position
        np.testing.assert_array_equal(categories_at(cum, pos), brute)
    # the sampler draws the token at each drawn position of the tokens laid out
    # in category order (np.repeat), the positions the token-based sampler drew
    for n_tokens in (30, 4000):
        counts = rng.multinomial(n_tokens, np.full(10, 0.1), size=200)
        counts[:50, 0] += counts[:50, 3]  # an empty category in a quarter of the rows
        counts[:50, 3] = 0
        drawn = sample_counts(counts, 50, np.random.default_rng(1))
        pick = np.random.default_rng(1).integers(0, n_tokens, size=(200, 50), dtype=np.int32)
        laid = np.repeat(np.tile(np.arange(10), 200), counts.ravel()).reshape(200, n_tokens)
        np.testing.assert_array_equal(drawn, np.take_along_axis(laid, pick, axis=1))
    # and the draws follow counts/N (chi-square over 400,000 tokens, N > 4V: the search)
    counts = np.tile(np.array([[500, 0, 1, 3000, 250, 0, 6249]]), (100, 1))
    drawn = sample_counts(counts, 4000, np.random.default_rng(2))
    seen = np.bincount(drawn.ravel(), minlength=7)
    expect = counts.sum(axis=0) / counts.sum() * drawn.size
    assert seen[1] == seen[5] == 0
    live = expect > 0
    assert stats.chisquare(seen[live], expect[live]).pvalue > 1e-3


def test_same_seed_same_output_and_trial_counts_agree():
    a = simulate("categorical", generations=5, trials=3000, seed=3, samples=20, categories=30)
    b = simulate("categorical", generations=5, trials=3000, seed=3, samples=20, categories=30)
    assert a.to_json() == b.to_json()
    c = simulate("categorical", generations=5, trials=3000, seed=4, samples=20, categories=30)
    assert a.to_json() != c.to_json()
    small = simulate("gaussian", generations=6, trials=2000, seed=5, samples=8)
    big = simulate("gaussian", generations=6, trials=16000, seed=5, samples=8)
    for q in small.quantities:
        gap = np.abs(small.mean[q] - big.mean[q]) / np.hypot(small.se[q], big.se[q])
        assert np.all(gap < Z), q


# ------------------------------------------------------------------ config and CLI

@pytest.mark.parametrize("model", ["gaussian", "regression", "categorical", "gmm", "kde"])
def test_recipes_load_and_run(model):
    path = REPO / "experiments" / f"theory_{model}.yaml"
    cfg = load_theory_config(path)
    assert cfg.run.model == model
    tiny = load_theory_config(path, ["run.trials=20", "run.generations=2"])
    r = run_theory(tiny)
    assert len(r.train) == 3


def test_unknown_keys_are_rejected_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  model: gaussian\ngaussian:\n  sampels: 10\n")
    with pytest.raises(ConfigError, match=r"^gaussian\.sampels: unknown key") as e:
        load_theory_config(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="colour"):
        load_theory_config(None, ["colour=3"])


def test_cli_json_prints_one_object_with_the_documented_fields(capsys):
    rc = main(["theory", "gaussian", "--json", "--generations", "3", "--trials", "500", "--samples", "10",
               "--estimator", "mle", "--seed", "2"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)  # exactly one JSON document
    assert out["model"] == "gaussian" and out["regime"] == "replace" and out["trials"] == 500 and out["seed"] == 2
    assert out["quantities"] == ["sigma2", "mu2", "sigma", "w2"]
    rows = out["per_generation"]
    assert [row["generation"] for row in rows] == [0, 1, 2, 3]
    for row in rows:
        n = row["fits"]
        assert n == row["generation"] + 1
        for q in out["quantities"]:
            assert set(row[q]) == {"mean", "se", "closed"}
            assert row[q]["se"] > 0
        assert row["sigma2"]["closed"] == pytest.approx(0.9**n)
    noclosed = main(["theory", "gaussian", "--json", "--generations", "1", "--trials", "50", "--regime", "fresh"])
    assert noclosed == 0
    row = json.loads(capsys.readouterr().out)["per_generation"][1]
    assert row["sigma2"]["closed"] is None and row["train"] == {"human": 100, "synthetic": 100}


def test_cli_augment_with_synthetic_ratio(capsys):
    rc = main(["theory", "regression", "--json", "--regime", "augment", "--synthetic-ratio", "2", "--generations", "2",
               "--trials", "200", "--samples", "12", "--dim", "3"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["synthetic_ratio"] == 2 and out["params"]["synthetic_size"] == 24
    assert out["per_generation"][2]["train"] == {"human": 12, "synthetic": 24}
    assert out["per_generation"][2]["error"]["closed"] > 0
    assert main(["theory", "gaussian", "--regime", "augment", "--synthetic-ratio", "2", "--synthetic-size", "10"]) == 2
    assert "augment needs round(2·100) = 200 synthetic samples" in capsys.readouterr().err


def test_cli_table_figure_and_mlflow(tmp_path, capsys, monkeypatch):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "figs"
    rc = main(["theory", "regression", "--generations", "4", "--trials", "300", "--samples", "12", "--dim", "3",
               "--regime", "accumulate", "--out", str(out), "--tracking-uri", uri])
    assert rc == 0
    text = capsys.readouterr().out
    assert "error (mean ± se)" in text and "error closed" in text
    for suffix in (".png", ".pdf", ".json"):
        assert (out / f"regression_accumulate{suffix}").stat().st_size > 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("theory_regression")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["regression.samples"] == "12" and run.data.params["run.regime"] == "accumulate"
    hist = client.get_metric_history(run.info.run_id, "error_closed")
    assert sorted(m.step for m in hist) == [0, 1, 2, 3, 4]
    assert {"error", "error_se"} <= set(run.data.metrics)
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "regression_accumulate.png" in arts
    # --json with --mlflow still prints exactly one JSON object
    rc = main(["theory", "categorical", "--json", "--generations", "2", "--trials", "50", "--mlflow",
               "--tracking-uri", uri, "--experiment", "cat"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["model"] == "categorical"
    cat = client.get_experiment_by_name("cat")
    (cat_run,) = client.search_runs([cat.experiment_id])
    assert {"entropy", "entropy_se", "absorbed", "diversity_closed"} <= set(cat_run.data.metrics)


@pytest.mark.parametrize("argv,needle", [
    (["theory", "poisson"], "unknown theory model 'poisson'"),
    (["theory", "gaussian", "--regime", "recycle"], "unknown regime 'recycle'"),
    (["theory", "gaussian", "--samples", "0"], "gaussian.samples: expected > 0"),
    (["theory", "gaussian", "--trials", "-3"], "run.trials: expected > 0"),
    (["theory", "gaussian", "--trials", "many"], "run.trials: expected int"),
    (["theory", "gaussian", "--samples", "1"], "unbiased estimator needs at least 2"),
    (["theory", "gaussian", "--regime", "accumulate_subsample", "--subsample-size", "1"], "mix.subsample_size"),
    (["theory", "regression", "--samples", "11", "--dim", "10"], "T - d - 1 > 0"),
    (["theory", "regression", "--estimator", "mle"], "--estimator applies to gaussian"),
    (["theory", "gmm", "--distance", "kl"], "gmm.distance"),
    (["theory", "gmm", "--dim", "2"], "gmm.distance: the 2-D mixture tracks the L2 distance only"),
    (["theory", "gmm", "--init", "random"], "gmm.init"),
    (["theory", "categorical", "--truncate", "top_q:3"], "categorical.truncate: expected top_k:K"),
    (["theory", "gmm", "--truncate", "1"], "--truncate applies to gaussian, categorical"),
    (["theory", "gaussian", "--covariance", "full", "--dim", "3", "--samples", "3"], "more than d samples"),
    (["theory", "gaussian", "--covariance", "full", "--dim", "2", "--truncate", "1"], "needs covariance: diagonal"),
    (["theory", "gaussian", "--verify", "1.5"], "verify.keep: expected in (0, 1]"),
    (["theory", "gaussian", "gaussian.colour=1"], "gaussian.colour: unknown key"),
    (["theory"], "expected a model"),
    (["theory", "--config", "does/not/exist.yaml"], "config file not found"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("collapse: error: "), err
    assert needle in err


def test_library_raises_collapse_error():
    with pytest.raises(CollapseError):
        load_theory_config(None, {"run.model": "gaussian", "gaussian.estimator": "unbiased", "gaussian.samples": 1})
