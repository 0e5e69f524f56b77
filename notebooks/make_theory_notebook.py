"""Writes notebooks/theory.ipynb from the cells below (run it after editing them).

Keeping the cells in a script keeps the notebook's diff readable; the test
suite executes the written notebook with tiny parameters.
"""

from pathlib import Path

import nbformat as nbf

MD, CODE = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell

cells = [
    MD("# Collapse in closed form: the theory models\n\n"
       "Four analytic models of the literature run through **the same generation loop and mixing regimes** as the "
       "code LMs (`collapse.orchestrator.run_generations`), K trials at once, each beside its closed form: a Gaussian "
       "refitted from M samples (Shumailov et al. 2024), linear regression on regenerated labels (Dohmatob et al. 2024; "
       "Gerstgrasser et al. 2024), a categorical distribution losing its tails, and a Gaussian mixture refitted by EM."),
    CODE("# Parameters (papermill convention): the test suite runs this notebook with tiny values.\n"
         "TRIALS = 4000\nGENERATIONS = 40\nSEED = 0", metadata={"tags": ["parameters"]}),
    CODE("import matplotlib.pyplot as plt\nimport numpy as np\n\n"
         "from collapse.theory.config import load_theory_config\nfrom collapse.theory.run import run_theory\n\n"
         "def simulate(model, regime, **options):\n"
         "    overrides = {\"run.model\": model, \"run.regime\": regime, \"run.trials\": TRIALS,\n"
         "                 \"run.generations\": GENERATIONS, \"run.seed\": SEED}\n"
         "    overrides.update({f\"{model}.{k}\": v for k, v in options.items()})\n"
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
]

nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
out = Path(__file__).with_name("theory.ipynb")
nbf.write(nb, out)
print(out)
