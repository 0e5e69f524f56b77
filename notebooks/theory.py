# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Collapse in closed form: the theory models
#
# Five analytic models of the literature run through **the same generation loop and mixing regimes** as the code
# LMs (`collapse.loop.run_generations`), K trials at once, each beside its closed form: a Gaussian
# refitted from M samples (Shumailov et al. 2024), linear regression on regenerated labels (Dohmatob et al.
# 2024; Gerstgrasser et al. 2024), a categorical distribution losing its tails, a Gaussian mixture refitted by
# EM and a kernel density estimate (Kazdan et al. 2024); regimes include augment, and sampling can cut tails or
# be filtered by a verifier.

# %% tags=["parameters"]
# Parameters (papermill convention): the test suite runs this notebook with tiny values.
TRIALS = 4000
GENERATIONS = 40
SEED = 0

# %%
import matplotlib.pyplot as plt
import numpy as np

from collapse.theory.config import load_theory_config
from collapse.theory.run import run_theory

def simulate(model, regime, mix=None, verify=None, **options):
    overrides = {"run.model": model, "run.regime": regime, "run.trials": TRIALS,
                 "run.generations": GENERATIONS, "run.seed": SEED}
    overrides.update({f"{model}.{k}": v for k, v in options.items()})
    overrides.update({f"mix.{k}": v for k, v in (mix or {}).items()})
    overrides.update({f"verify.{k}": v for k, v in (verify or {}).items()})
    return run_theory(load_theory_config(None, overrides))

def show(result, quantity, ax, label=None):
    g = np.arange(result.generations + 1)
    m, se = result.mean[quantity], result.se[quantity]
    ax.plot(g, m, label=label or result.regime)
    ax.fill_between(g, m - 2 * se, m + 2 * se, alpha=0.25)
    if quantity in result.closed:
        ax.plot(g, result.closed[quantity], 'k--', lw=0.8)
    ax.set_xlabel('generation'); ax.set_title(quantity)


# %% [markdown]
# ## Gaussian: the variance drifts away even with an unbiased estimator
#
# With the unbiased estimator E[σₙ²] stays 1, yet E[σₙ] = c₄(M)ⁿ shrinks and the mean wanders: E[μₙ²] = n/M.
# Dashed lines are the closed forms.

# %%
gauss = simulate('gaussian', 'replace', samples=10, estimator='unbiased')
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for ax, q in zip(axes, ['sigma2', 'sigma', 'mu2']):
    show(gauss, q, ax)
fig.tight_layout()
print('largest |z| against the closed forms:', {q: float(np.abs(gauss.z_scores(q)).max().round(2)) for q in gauss.closed})

# %% [markdown]
# ## Regression: replace grows linearly, accumulate stays bounded
#
# Replace: E‖ŵₙ − w*‖² = n·σ²·d/(T−d−1). Accumulate: σ²·d/(T−d−1)·Σ 1/i², below π²/6 times the first error.
# Accumulate-subsample has no closed form; it lands in between.

# %%
fig, ax = plt.subplots(figsize=(5, 3))
reg = {r: simulate('regression', r, dim=5, samples=40) for r in ['replace', 'accumulate_subsample', 'accumulate']}
for r, res in reg.items():
    show(res, 'error', ax, r)
ax.legend(); fig.tight_layout()
final = {r: float(res.mean['error'][-1]) for r, res in reg.items()}
print(final)
assert final['replace'] > final['accumulate_subsample'] > final['accumulate']

# %% [markdown]
# ## Categorical: the tails go first
#
# Refitting a Zipf distribution by counting M draws: categories that draw zero counts are gone for good under
# replace. Diversity 1 − Σp² follows (1 − 1/M)ⁿ(1 − Σp₀²); keeping the human data (accumulate) holds the tail.

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for r in ['replace', 'accumulate']:
    cat = simulate('categorical', r, categories=50, samples=100, zipf=1.1)
    for ax, q in zip(axes, ['diversity', 'surviving', 'tail_mass']):
        show(cat, q, ax, r)
axes[0].legend(); fig.tight_layout()

# %% [markdown]
# ## Gaussian mixture: EM refits drift away from the start
#
# Shumailov et al.'s mixture experiment: no closed form, so we look at the W₂ distance to the initial mixture.

# %%
fig, ax = plt.subplots(figsize=(5, 3))
for r in ['replace', 'fixed_fraction', 'accumulate']:
    show(simulate('gmm', r, components=2, samples=100), 'w2', ax, r)
ax.legend(); fig.tight_layout()

# %% [markdown]
# ## Augment: the whole human set plus λ·M synthetic samples
#
# The synthetic augmentation loop (Bertrand et al. 2024; Alemohammad et al. 2024): every training set keeps all
# M human samples and adds round(λ·M) samples of the previous model. The human data anchors the chain: the
# regression error converges to (1 + λ/(1 + 2λ))·σ²·d/(T−d−1) for whole-number λ, and the Gaussian's E[σ²],
# E[μ²] follow exact recursions (dashed).

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for lam in [0.5, 1, 2]:
    show(simulate('gaussian', 'augment', mix={'synthetic_ratio': lam}, samples=10, estimator='mle'), 'sigma2', axes[0], f'λ = {lam}')
for lam in [1, 2]:
    show(simulate('regression', 'augment', mix={'synthetic_ratio': lam}, dim=5, samples=40), 'error', axes[1], f'λ = {lam}')
show(simulate('regression', 'replace', dim=5, samples=40), 'error', axes[2], 'replace')
show(simulate('regression', 'augment', dim=5, samples=40), 'error', axes[2], 'augment λ = 1')
for ax in axes: ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# ## Tail cutting: truncated sampling accelerates collapse
#
# Dohmatob et al. 2024: sampling from the fit with its tails cut. For the Gaussian (|x − μ| ≤ τσ) the variance
# collapses geometrically even with the unbiased estimator, E[σₙ²] = v(τ)ⁿ⁻¹ with v(τ) = 1 − 2τφ(τ)/(2Φ(τ) − 1)
# (dashed). For the categorical model top-k / top-p sampling removes the tail at once and diversity falls
# faster.

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for tau in [None, 2.0, 1.0]:
    opts = {} if tau is None else {'truncate': tau}
    show(simulate('gaussian', 'replace', samples=20, **opts), 'sigma2', axes[0], f'τ = {tau}')
for trunc in [None, 'top_p:0.95', 'top_k:20']:
    opts = {} if trunc is None else {'truncate': trunc}
    cat = simulate('categorical', 'replace', categories=50, samples=100, zipf=1.1, **opts)
    show(cat, 'tail_mass', axes[1], str(trunc)); show(cat, 'entropy', axes[2], str(trunc))
for ax in axes: ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# ## Verification: selecting samples can prevent collapse
#
# Feng et al. 2024: draw M/q candidates and keep the M a verifier scores best — here the log-likelihood under
# the true distribution, optionally with noise (in units of the score's spread). For regression the verifier
# keeps the labels nearest the truth and the error falls instead of growing; a noisy verifier helps less. For
# the Gaussian a likelihood verifier is mode-seeking: it keeps the mean but shrinks the variance.

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for keep, noise in [(None, 0), (0.5, 1.0), (0.5, 0.0)]:
    v = None if keep is None else {'keep': keep, 'noise': noise}
    label = 'no selection' if keep is None else f'keep {keep}, noise {noise}'
    show(simulate('regression', 'replace', verify=v, dim=5, samples=40), 'error', axes[0], label)
    show(simulate('gaussian', 'replace', verify=v, samples=20), 'sigma2', axes[1], label)
axes[0].set_yscale('log'); axes[0].legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# ## Full covariance: the determinant collapses
#
# Kazdan et al. log det(Σₙ)/det(Σ₀). With a full covariance in d dimensions, Bartlett's decomposition gives
# E[det Σₙ/det Σ₀] = (Π(M − i)/(M − ddof)^d)ⁿ and E[ln det Σₙ] = n·(Σ ψ((M − i)/2) + d ln 2 − d ln(M − ddof))
# under replace — a decay even for the unbiased estimator, whose per-coordinate E[σ²] stays 1.

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for r in ['replace', 'accumulate']:
    full = simulate('gaussian', r, dim=4, samples=20, covariance='full')
    show(full, 'logdet_ratio', axes[0], r); show(full, 'sigma2', axes[1], r)
axes[0].legend(); fig.tight_layout()

# %% [markdown]
# ## Kernel density estimation: smoothing inflates the variance
#
# A Gaussian KDE refitted on its own samples (Kazdan et al.): each generation adds h² of smoothing, so with
# Scott's or Silverman's rule the variance grows as ((M − 1)/M + c²)ⁿ (dashed) while the density drifts from its
# generation-0 fit (squared L2 distance); a fixed bandwidth settles at M·h².

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for bw in ['scott', 'silverman', 'fixed']:
    kde = simulate('kde', 'replace', samples=50, bandwidth=bw)
    show(kde, 'variance', axes[0], bw); show(kde, 'l2_gen0', axes[1], bw)
axes[0].set_yscale('log'); axes[0].legend(); fig.tight_layout()

# %% [markdown]
# ## Categorical: entropy and the time to absorption
#
# Under replace the categorical chain is a neutral Wright–Fisher chain: it ends with one category left.
# `absorbed` is the share of trials already there — the distribution function of the absorption time; Littler's
# diffusion approximation −2M·Σ(1 − pᵢ)ln(1 − pᵢ) (dotted) gives its mean.

# %%
from collapse.theory.categorical import absorption_time_diffusion, zipf_probabilities
cat = simulate('categorical', 'replace', categories=4, samples=10, zipf=1.0)
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for ax, q in zip(axes, ['diversity', 'entropy', 'absorbed']):
    show(cat, q, ax)
axes[2].axvline(absorption_time_diffusion(zipf_probabilities(4, 1.0), 10), color='k', ls=':')
fig.tight_layout()
