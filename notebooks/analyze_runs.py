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
# # Analyze a sweep
#
# Load every run of a sweep from MLflow with `collapse.load_runs` — one row per (run, generation), a column per
# sweep axis and per metric — then draw your own figures with seaborn and compare regimes at the last
# generation. Launch the sweep first (`collapse sweep FILE`), or let the parameter `LAUNCH` do it here: finished
# runs are skipped, so this is cheap when the sweep is done.

# %% tags=["parameters"]
# Parameters (papermill convention): the test suite runs this notebook with a tiny sweep.
SWEEP = "../experiments/sweeps/tiny_grid.yaml"
LAUNCH = True   # run what is missing, locally
PARALLEL = 2
METRIC = "test_ce"
DIVERSITY = "distinct_4"

# %%
import matplotlib.pyplot as plt
import seaborn as sns

import collapse
from collapse.sweep import launch, load_sweep, status

sweep = load_sweep(SWEEP)
if LAUNCH:
    launch(sweep, "local", parallel=PARALLEL, echo=lambda line: None)
print(status(sweep)[0])

# %%
df = collapse.load_runs(SWEEP)
axes = [c for c in df.columns[: list(df.columns).index("generation")] if c not in ("run_id", "run_name", "status")]
print(len(df), "rows;", df["run_id"].nunique(), "runs; axes:", axes)
df[axes + ["generation", METRIC, DIVERSITY]].head(8)

# %% [markdown]
# ## A custom figure
#
# Quality and diversity against generation, mean and 95 % confidence band over seeds, one line per regime; the
# dashed line is held-out human code.

# %%
from collapse.reporting import hue_order, metric_label, palette

sns.set_theme(context="paper", style="whitegrid")
colors = palette(df["regime"])  # the colours of every collapse figure: a regime is always the same colour
fig, axs = plt.subplots(1, 2, figsize=(7, 2.8))
for ax, m in zip(axs, [METRIC, DIVERSITY]):
    sns.lineplot(df, x="generation", y=m, hue="regime", hue_order=hue_order(df["regime"]), palette=colors,
                 errorbar=("ci", 95), marker="o", ax=ax)
    if f"human.{m}" in df:
        ax.axhline(df[f"human.{m}"].mean(), color="0.35", ls="--", lw=0.9)
    ax.set_ylabel(metric_label(m))  # display name and unit from the metric registry
fig.tight_layout()

# %% [markdown]
# ## Comparing regimes at the last generation
#
# Per regime: the mean over seeds at generation 0 and at the last generation, the change, and Welch's t-test of
# the last generation's per-seed values against the reference regime (the same table `collapse report` writes).

# %%
from collapse.reporting import final_effects

table, reference = final_effects(df, [METRIC, DIVERSITY], hue="regime")
print("reference:", reference)
table.round(4)

# %%
last = df[df["generation"] == df["generation"].max()]
sns.catplot(last, x="regime", y=METRIC, hue="regime", order=hue_order(last["regime"]), palette=colors,
            kind="strip", height=2.6, aspect=2.0)
plt.ylabel(metric_label(METRIC))
plt.title(f"generation {int(df['generation'].max())}, one dot per seed");
