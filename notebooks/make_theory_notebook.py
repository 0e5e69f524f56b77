"""Writes notebooks/theory.ipynb from the cells below (run it after editing them).

Keeping the cells in a script keeps the notebook's diff readable; the test
suite executes the written notebook with tiny parameters.
"""

from pathlib import Path

import nbformat as nbf

MD, CODE = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell

cells = [
    MD("# Collapse in closed form: the theory models\n\n"
       "Five analytic models of the literature run through **the same generation loop and mixing regimes** as the "
       "code LMs (`collapse.orchestrator.run_generations`), K trials at once, each beside its closed form: a Gaussian "
       "refitted from M samples (Shumailov et al. 2024), linear regression on regenerated labels (Dohmatob et al. 2024; "
       "Gerstgrasser et al. 2024), a categorical distribution losing its tails, a Gaussian mixture refitted by EM and a kernel density estimate "
       "(Kazdan et al. 2024); regimes include augment, and sampling can cut tails or be filtered by a verifier."),
    CODE("# Parameters (papermill convention): the test suite runs this notebook with tiny values.\n"
         "TRIALS = 4000\nGENERATIONS = 40\nSEED = 0", metadata={"tags": ["parameters"]}),
    CODE("import matplotlib.pyplot as plt\nimport numpy as np\n\n"
         "from collapse.theory.config import load_theory_config\nfrom collapse.theory.run import run_theory\n\n"
         "def simulate(model, regime, mix=None, verify=None, **options):\n"
         "    overrides = {\"run.model\": model, \"run.regime\": regime, \"run.trials\": TRIALS,\n"
         "                 \"run.generations\": GENERATIONS, \"run.seed\": SEED}\n"
         "    overrides.update({f\"{model}.{k}\": v for k, v in options.items()})\n"
         "    overrides.update({f\"mix.{k}\": v for k, v in (mix or {}).items()})\n"
         "    overrides.update({f\"verify.{k}\": v for k, v in (verify or {}).items()})\n"
         "    return run_theory(load_theory_config(None, overrides))\n\n"
         "def show(result, quantity, ax, label=None):\n"
         "    g = np.arange(result.generations + 1)\n"
         "    m, se = result.mean[quantity], result.se[quantity]\n"
         "    ax.plot(g, m, label=label or result.regime)\n"
         "    ax.fill_between(g, m - 2 * se, m + 2 * se, alpha=0.25)\n"
         "    if quantity in result.closed:\n"
         "        ax.plot(g, result.closed[quantity], 'k--', lw=0.8)\n"
         "    ax.set_xlabel('generation'); ax.set_title(quantity)"),
    MD("## Gaussian: the variance drifts away even with an unbiased estimator\n\n"
       "With the unbiased estimator E[σₙ²] stays 1, yet E[σₙ] = c₄(M)ⁿ shrinks and the mean wanders: "
       "E[μₙ²] = n/M. Dashed lines are the closed forms."),
    CODE("gauss = simulate('gaussian', 'replace', samples=10, estimator='unbiased')\n"
         "fig, axes = plt.subplots(1, 3, figsize=(10, 3))\n"
         "for ax, q in zip(axes, ['sigma2', 'sigma', 'mu2']):\n"
         "    show(gauss, q, ax)\n"
         "fig.tight_layout()\n"
         "print('largest |z| against the closed forms:', {q: float(np.abs(gauss.z_scores(q)).max().round(2)) for q in gauss.closed})"),
    MD("## Regression: replace grows linearly, accumulate stays bounded\n\n"
       "Replace: E‖ŵₙ − w*‖² = n·σ²·d/(T−d−1). Accumulate: σ²·d/(T−d−1)·Σ 1/i², below π²/6 times the first error. "
       "Accumulate-subsample has no closed form; it lands in between."),
    CODE("fig, ax = plt.subplots(figsize=(5, 3))\n"
         "reg = {r: simulate('regression', r, dim=5, samples=40) for r in ['replace', 'accumulate_subsample', 'accumulate']}\n"
         "for r, res in reg.items():\n"
         "    show(res, 'error', ax, r)\n"
         "ax.legend(); fig.tight_layout()\n"
         "final = {r: float(res.mean['error'][-1]) for r, res in reg.items()}\n"
         "print(final)\n"
         "assert final['replace'] > final['accumulate_subsample'] > final['accumulate']"),
    MD("## Categorical: the tails go first\n\n"
       "Refitting a Zipf distribution by counting M draws: categories that draw zero counts are gone for good under "
       "replace. Diversity 1 − Σp² follows (1 − 1/M)ⁿ(1 − Σp₀²); keeping the human data (accumulate) holds the tail."),
    CODE("fig, axes = plt.subplots(1, 3, figsize=(10, 3))\n"
         "for r in ['replace', 'accumulate']:\n"
         "    cat = simulate('categorical', r, categories=50, samples=100, zipf=1.1)\n"
         "    for ax, q in zip(axes, ['diversity', 'surviving', 'tail_mass']):\n"
         "        show(cat, q, ax, r)\n"
         "axes[0].legend(); fig.tight_layout()"),
    MD("## Gaussian mixture: EM refits drift away from the start\n\n"
       "Shumailov et al.'s mixture experiment: no closed form, so we look at the W₂ distance to the initial mixture."),
    CODE("fig, ax = plt.subplots(figsize=(5, 3))\n"
         "for r in ['replace', 'fixed_fraction', 'accumulate']:\n"
         "    show(simulate('gmm', r, components=2, samples=100), 'w2', ax, r)\n"
         "ax.legend(); fig.tight_layout()"),
    MD("## Augment: the whole human set plus λ·M synthetic samples\n\n"
       "The synthetic augmentation loop (Bertrand et al. 2024; Alemohammad et al. 2024): every training set keeps all "
       "M human samples and adds round(λ·M) samples of the previous model. The human data anchors the chain: the "
       "regression error converges to (1 + λ/(1 + 2λ))·σ²·d/(T−d−1) for whole-number λ, and the Gaussian's E[σ²], "
       "E[μ²] follow exact recursions (dashed)."),
    CODE("fig, axes = plt.subplots(1, 3, figsize=(10, 3))\n"
         "for lam in [0.5, 1, 2]:\n"
         "    show(simulate('gaussian', 'augment', mix={'synthetic_ratio': lam}, samples=10, estimator='mle'), 'sigma2', axes[0], f'λ = {lam}')\n"
         "for lam in [1, 2]:\n"
         "    show(simulate('regression', 'augment', mix={'synthetic_ratio': lam}, dim=5, samples=40), 'error', axes[1], f'λ = {lam}')\n"
         "show(simulate('regression', 'replace', dim=5, samples=40), 'error', axes[2], 'replace')\n"
         "show(simulate('regression', 'augment', dim=5, samples=40), 'error', axes[2], 'augment λ = 1')\n"
         "for ax in axes: ax.legend(fontsize=7)\n"
         "fig.tight_layout()"),
    MD("## Tail cutting: truncated sampling accelerates collapse\n\n"
       "Dohmatob et al. 2024: sampling from the fit with its tails cut. For the Gaussian (|x − μ| ≤ τσ) the variance "
       "collapses geometrically even with the unbiased estimator, E[σₙ²] = v(τ)ⁿ⁻¹ with "
       "v(τ) = 1 − 2τφ(τ)/(2Φ(τ) − 1) (dashed). For the categorical model top-k / top-p sampling removes the tail at "
       "once and diversity falls faster."),
    CODE("fig, axes = plt.subplots(1, 3, figsize=(10, 3))\n"
         "for tau in [None, 2.0, 1.0]:\n"
         "    opts = {} if tau is None else {'truncate': tau}\n"
         "    show(simulate('gaussian', 'replace', samples=20, **opts), 'sigma2', axes[0], f'τ = {tau}')\n"
         "for trunc in [None, 'top_p:0.95', 'top_k:20']:\n"
         "    opts = {} if trunc is None else {'truncate': trunc}\n"
         "    cat = simulate('categorical', 'replace', categories=50, samples=100, zipf=1.1, **opts)\n"
         "    show(cat, 'tail_mass', axes[1], str(trunc)); show(cat, 'entropy', axes[2], str(trunc))\n"
         "for ax in axes: ax.legend(fontsize=7)\n"
         "fig.tight_layout()"),
    MD("## Verification: selecting samples can prevent collapse\n\n"
       "Feng et al. 2024: draw M/q candidates and keep the M a verifier scores best — here the log-likelihood under "
       "the true distribution, optionally with noise (in units of the score's spread). For regression the verifier "
       "keeps the labels nearest the truth and the error falls instead of growing; a noisy verifier helps less. For "
       "the Gaussian a likelihood verifier is mode-seeking: it keeps the mean but shrinks the variance."),
    CODE("fig, axes = plt.subplots(1, 2, figsize=(8, 3))\n"
         "for keep, noise in [(None, 0), (0.5, 1.0), (0.5, 0.0)]:\n"
         "    v = None if keep is None else {'keep': keep, 'noise': noise}\n"
         "    label = 'no selection' if keep is None else f'keep {keep}, noise {noise}'\n"
         "    show(simulate('regression', 'replace', verify=v, dim=5, samples=40), 'error', axes[0], label)\n"
         "    show(simulate('gaussian', 'replace', verify=v, samples=20), 'sigma2', axes[1], label)\n"
         "axes[0].set_yscale('log'); axes[0].legend(fontsize=7)\n"
         "fig.tight_layout()"),
    MD("## Full covariance: the determinant collapses\n\n"
       "Kazdan et al. log det(Σₙ)/det(Σ₀). With a full covariance in d dimensions, Bartlett's decomposition gives "
       "E[det Σₙ/det Σ₀] = (Π(M − i)/(M − ddof)^d)ⁿ and E[ln det Σₙ] = n·(Σ ψ((M − i)/2) + d ln 2 − d ln(M − ddof)) "
       "under replace — a decay even for the unbiased estimator, whose per-coordinate E[σ²] stays 1."),
    CODE("fig, axes = plt.subplots(1, 2, figsize=(8, 3))\n"
         "for r in ['replace', 'accumulate']:\n"
         "    full = simulate('gaussian', r, dim=4, samples=20, covariance='full')\n"
         "    show(full, 'logdet_ratio', axes[0], r); show(full, 'sigma2', axes[1], r)\n"
         "axes[0].legend(); fig.tight_layout()"),
    MD("## Kernel density estimation: smoothing inflates the variance\n\n"
       "A Gaussian KDE refitted on its own samples (Kazdan et al.): each generation adds h² of smoothing, so with "
       "Scott's or Silverman's rule the variance grows as ((M − 1)/M + c²)ⁿ (dashed) while the density drifts from its "
       "generation-0 fit (squared L2 distance); a fixed bandwidth settles at M·h²."),
    CODE("fig, axes = plt.subplots(1, 2, figsize=(8, 3))\n"
         "for bw in ['scott', 'silverman', 'fixed']:\n"
         "    kde = simulate('kde', 'replace', samples=50, bandwidth=bw)\n"
         "    show(kde, 'variance', axes[0], bw); show(kde, 'l2_gen0', axes[1], bw)\n"
         "axes[0].set_yscale('log'); axes[0].legend(); fig.tight_layout()"),
    MD("## Categorical: entropy and the time to absorption\n\n"
       "Under replace the categorical chain is a neutral Wright–Fisher chain: it ends with one category left. "
       "`absorbed` is the share of trials already there — the distribution function of the absorption time; "
       "Littler's diffusion approximation −2M·Σ(1 − pᵢ)ln(1 − pᵢ) (dotted) gives its mean."),
    CODE("from collapse.theory.categorical import absorption_time_diffusion, zipf_probabilities\n"
         "cat = simulate('categorical', 'replace', categories=4, samples=10, zipf=1.0)\n"
         "fig, axes = plt.subplots(1, 3, figsize=(10, 3))\n"
         "for ax, q in zip(axes, ['diversity', 'entropy', 'absorbed']):\n"
         "    show(cat, q, ax)\n"
         "axes[2].axvline(absorption_time_diffusion(zipf_probabilities(4, 1.0), 10), color='k', ls=':')\n"
         "fig.tight_layout()"),
]

nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
out = Path(__file__).with_name("theory.ipynb")
nbf.write(nb, out)
print(out)
