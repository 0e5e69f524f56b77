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
# # Quickstart: one collapse experiment, inline
#
# Fine-tune the CPU base code LM (`experiments/pretrain_cpu.yaml`: pretrained once on the Python functions of
# the standard library and installed packages, about 12 minutes on 2 cores the first time, reused after) on
# stdlib functions, sample from it, fine-tune the base again on the samples under two mixing regimes, and look
# at what changes. Everything runs offline on a CPU; the run directories, the base and the MLflow database land
# under `ROOT`, and re-running a cell reads finished generations back instead of recomputing them.

# %% tags=["parameters"]
# Parameters (papermill convention): the test suite runs this notebook with tiny values.
CONFIG = "../experiments/quickstart.yaml"
REGIMES = ["replace", "accumulate"]
GENERATIONS = 5
# Where the run directories, the CPU base and the MLflow database go: a folder outside the checkout, kept between
# sessions so finished generations are read back (any path; "~" is your home; tempfile.mkdtemp() for a scratch one).
ROOT = "~/collapse-runs"
EXPERIMENT = "notebook_quickstart"
PROGRESS = True  # progress bars for data preparation, training, sampling and metrics
OVERRIDES = {}  # any other config keys, e.g. {"model.preset": "tiny"}

# %% [markdown]
# The run logs one line per generation (the same lines as `collapse run`: times, headline metrics and the time
# left; `(cached)` when a finished generation is read back from disk).

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import HTML, display

import collapse

root = Path(ROOT).expanduser()
res = collapse.run(CONFIG, run={"root": str(root), "experiment": EXPERIMENT, "generations": GENERATIONS,
                                "progress": PROGRESS},
                   mix={"regime": REGIMES}, **OVERRIDES)
res

# %% [markdown]
# ## The metrics, one row per regime and generation
#
# `res.metrics` is a DataFrame; `human.*` columns are the same measurements on held-out human code.

# %%
cols = ["regime", "generation", "test_ce", "syntax_valid", "distinct_4", "self_bleu", "ppl_gen0_q50", "copy_rate"]
res.metrics[[c for c in cols if c in res.metrics]].round(3)

# %% [markdown]
# ## Samples of each generation, side by side
#
# The same sample index in every generation; generated code is only ever displayed here, never run.

# %%
import html

def side_by_side(regime, n=2, chars=400):
    gens = res.generations
    head = "".join(f"<th>generation {g}</th>" for g in gens)
    rows = []
    for i in range(n):
        cells = "".join(f"<td style='vertical-align:top'><pre style='font-size:9px'>{html.escape(res.texts(g, regime, n=n)[i][:chars])}</pre></td>" for g in gens)
        rows.append(f"<tr>{cells}</tr>")
    return HTML(f"<h4>{regime}</h4><table><tr>{head}</tr>{''.join(rows)}</table>")

for regime in REGIMES:
    display(side_by_side(regime))

# %% [markdown]
# ## Plots
#
# Held-out cross-entropy (quality), distinct-4 (diversity) and the median perplexity of the samples under the
# generation-0 model (the tails), against generation; dashed: human code.

# %%
from collapse.metrics.registry import key_label
from collapse.figures import hue_order, palette

df = res.metrics
panels = [m for m in ["test_ce", "distinct_4", "ppl_gen0_q50"] if m in df]
fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False)
for ax, m in zip(axes[0], panels):
    # The colours of every collapse figure and report: a regime is always the same colour.
    sns.lineplot(df, x="generation", y=m, hue="regime", hue_order=hue_order(df["regime"]), palette=palette(df["regime"]),
                 marker="o", ax=ax)
    if f"human.{m}" in df:
        ax.axhline(df[f"human.{m}"].mean(), color="0.4", ls="--")
    ax.set_ylabel(key_label(m))  # display name and unit from the metric registry
fig.tight_layout()

# %%
from collapse.figures import perplexity_values, plot_perplexity_histograms

paths = plot_perplexity_histograms({r: perplexity_values(d) for r, d in res.run_dirs.items()}, res.run_dir / "perplexity_gen0")
from IPython.display import Image
Image(filename=str(paths[0]), width=700)

# %% [markdown]
# Next: `collapse report` draws the paper figures and tables from MLflow; `analyze_runs.ipynb` loads a whole
# sweep with `collapse.load_runs`.
