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
# runs are skipped, so this is cheap when the sweep is done. Then explore: any metric against generations and
# against tokens seen, and one generation's training set, samples and verbatim copies.

# %% tags=["parameters"]
# Parameters (papermill convention): the test suite runs this notebook with a tiny sweep.
SWEEP = "../experiments/sweeps/tiny_grid.yaml"
# Where the sweep's runs and MLflow database are: a sweep whose run.root is relative (the default, "runs") runs and is
# read under this folder, outside the checkout ("~" is your home); an absolute run.root is used as it is.
ROOT = "~/collapse-runs"
LAUNCH = True   # run what is missing, locally
PARALLEL = 2
METRIC = "test_ce"       # the first figure's quality metric, and the metric picker's first choice
DIVERSITY = "distinct_4"
RUN = None               # the run to browse, by its name in the sweep (None: the first)
GENERATION = None        # the generation to browse (None: the last finished)
SAMPLES = 3              # samples to show

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

import collapse
from collapse.sweep import launch, load_sweep, status

SWEEP = str(Path(SWEEP).expanduser().resolve())  # before moving to ROOT
root = Path(ROOT).expanduser()
root.mkdir(parents=True, exist_ok=True)
os.chdir(root)
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
from collapse.metrics.registry import key_label
from collapse.figures import hue_order, palette

sns.set_theme(context="paper", style="whitegrid")
colors = palette(df["regime"])  # the colours of every collapse figure: a regime is always the same colour
fig, axs = plt.subplots(1, 2, figsize=(7, 2.8))
for ax, m in zip(axs, [METRIC, DIVERSITY]):
    sns.lineplot(df, x="generation", y=m, hue="regime", hue_order=hue_order(df["regime"]), palette=colors,
                 errorbar=("ci", 95), marker="o", ax=ax)
    if f"human.{m}" in df:
        ax.axhline(df[f"human.{m}"].mean(), color="0.35", ls="--", lw=0.9)
    ax.set_ylabel(key_label(m))  # display name and unit from the metric registry
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
plt.ylabel(key_label(METRIC))
plt.title(f"generation {int(df['generation'].max())}, one dot per seed");

# %% [markdown]
# ## Explore: any metric, against generations and against tokens seen
#
# Pick a metric (a dropdown with ipywidgets; without it, set `METRIC` in the first cell). Left: mean over seeds
# against generation, with the t-based 95 % confidence band of `collapse.stats` (none below 3 seeds). Right: against the tokens the chain has trained on so far (the
# cumulative `train_tokens` of each run's generations), one line per run: a regime that trains on more data per
# generation (accumulate) moves right faster, so a gap between regimes at equal generations may close or widen at
# equal training compute. Dashed: held-out human code.

# %%
import pandas as pd
from IPython.display import display
from matplotlib.ticker import EngFormatter, MaxNLocator

from collapse.metrics.registry import key_info
from collapse.figures import default_metrics
from collapse.stats import mean_ci

df = df.sort_values(["run_id", "generation"]).reset_index(drop=True)
df["tokens_seen"] = df.groupby("run_id")["train_tokens"].cumsum()
skip = set(axes) | {"run_id", "run_name", "status", "generation", "tokens_seen"}
logged = [c for c in df.columns if c not in skip and not c.startswith(("human.", "time."))
          and pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()]
story = default_metrics(logged)  # the panels `collapse report` draws first, then the rest by name
metrics = story + sorted(set(logged) - set(story))
order = hue_order(df["regime"])


def picker(show, **choices):
    """Display ``show(**values)`` (a figure or HTML, kept when the notebook is saved or exported) under one
    dropdown per choice (name → (options, first value)) that redraws it in place; returns the dropdowns by
    name (set ``.value`` to redraw from code). Without ipywidgets: the first values only, and no dropdowns."""
    values = {k: v for k, (_, v) in choices.items()}
    try:
        import ipywidgets as widgets
    except ImportError:
        print("(pip install ipywidgets for dropdowns; meanwhile change the first cell and re-run this cell)")
        display(show(**values))
        return {}
    boxes = {k: widgets.Dropdown(options=opts, value=values[k], description=k) for k, (opts, _) in choices.items()}
    display(widgets.HBox(list(boxes.values())))
    view = display(show(**values), display_id=True)
    for box in boxes.values():
        box.observe(lambda _: view.update(show(**{k: b.value for k, b in boxes.items()})), names="value")
    return boxes


def t_band(values):
    ci = mean_ci(values)  # NaN bounds, so no band, below 3 seeds
    return ci.lo, ci.hi


def metric_figure(metric):
    fig, (by_gen, by_tokens) = plt.subplots(1, 2, figsize=(7, 2.8), sharey=True)
    sns.lineplot(df, x="generation", y=metric, hue="regime", hue_order=order, palette=colors, errorbar=t_band,
                 marker="o", ax=by_gen)
    sns.lineplot(df, x="tokens_seen", y=metric, hue="regime", hue_order=order, palette=colors, units="run_id",
                 estimator=None, marker="o", lw=0.9, legend=False, ax=by_tokens)
    for ax in (by_gen, by_tokens):
        if f"human.{metric}" in df:
            ax.axhline(df[f"human.{metric}"].mean(), color="0.35", ls="--", lw=0.9, label="human code")
        if key_info(metric).log_scale:
            ax.set_yscale("log")
    by_gen.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_gen.set_ylabel(key_label(metric))
    by_gen.legend(fontsize=7)
    by_tokens.set_xlabel("tokens seen (cumulative train_tokens)")
    by_tokens.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1.5M
    fig.tight_layout()
    plt.close(fig)  # shown once, by picker
    return fig


metric_picker = picker(metric_figure, metric=([(key_label(m), m) for m in metrics], METRIC if METRIC in metrics else metrics[0]))

# %% [markdown]
# ## Browse one generation: what it trained on, what it wrote, what it copied
#
# Each generation's folder in a run directory (`gen_NNN/`) holds its `manifest.json` (the training set: how many
# examples from which pool, and from which generation they came; -1 is human code), its samples (`samples.jsonl`)
# and the metrics' artifacts (`metrics/`): each sample's perplexity under the generation-0 model, and the verbatim
# copies of human code with the file and lines they come from (`collapse.reporting.top_copies`). Generated code is
# only ever displayed here, never run.

# %%
import html
import json

from IPython.display import HTML

from collapse.reporting import top_copies

runs = {r.name: r.run_dir for r in sweep.runs}
done = {name: sorted(int(p.parent.name[4:]) for p in d.glob("gen_[0-9][0-9][0-9]/DONE")) for name, d in runs.items()}


def read_jsonl(path):
    return pd.read_json(path, lines=True) if path.exists() and path.stat().st_size else pd.DataFrame()


def pre(text, chars=500):
    return f"<pre style='font-size:9px;white-space:pre-wrap;margin:0'>{html.escape(str(text)[:chars])}</pre>"


def table(rows, columns):
    """An HTML table of ``rows`` (dicts of HTML strings) that keeps code's line breaks and indentation."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td style='vertical-align:top;text-align:left'>{r[c]}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def generation_view(run, generation):
    d = runs[run] / f"gen_{generation:03d}"
    if generation not in done[run]:
        return HTML(f"<p>{html.escape(run)}: generation {generation} has not finished (finished: {done[run]})</p>")
    man = json.loads((d / "manifest.json").read_text())
    counts = pd.DataFrame(man["counts"]).fillna(0).astype(int).rename_axis("from generation")
    samples = read_jsonl(d / "samples.jsonl").head(SAMPLES)
    ppl = read_jsonl(d / "metrics" / "perplexity_gen0.jsonl")
    ppl = dict(zip(ppl["index"], ppl["ppl"])) if len(ppl) else {}
    rows = [{"sample": str(i), "tokens": str(r["n_tokens"]), "finished": str(r["finished"]),
             "perplexity under generation 0": f"{ppl[i]:.1f}" if i in ppl else "-", "text": pre(r["text"])}
            for i, r in samples.iterrows()]
    copies = [r for r in top_copies({run: runs[run]}, top=10**9) if r["generation"] == generation]
    parts = [f"<h4>{html.escape(run)}, generation {generation}: trained on {man['total']} examples ({man['regime']})</h4>",
             "<b>training set plan</b>", pd.DataFrame(man["plan"]).to_html(index=False),
             "<b>examples by origin and by the generation they came from</b>", counts.to_html(),
             f"<b>the first {len(rows)} of its samples</b>", table(rows, list(rows[0]) if rows else [])]
    if copies:
        rows = [{"sample": str(c["sample"]), "tokens": str(c["length"]),
                 "source": html.escape(f"{c['file']}:{c['line_start']}–{c['line_end']}"), "copied text": pre(c["text"])}
                for c in copies[:10]]
        parts += [f"<b>verbatim copies of human code, longest first ({len(copies)} samples)</b>", table(rows, list(rows[0]))]
    else:
        ref = read_jsonl(runs[run] / "human_reference" / "copies.jsonl")
        parts.append(f"<p><b>verbatim copies of human code</b>: none in this generation's samples (for scale: "
                     f"{len(ref)} held-out human functions share such a span with the train split)</p>")
    return HTML("\n".join(parts))


first = RUN if RUN in runs else next(iter(runs))
last = GENERATION if GENERATION is not None else max(done[first], default=0)
generation_picker = picker(generation_view, run=(list(runs), first),
                           generation=(sorted({g for gens in done.values() for g in gens} | {last}), last))

