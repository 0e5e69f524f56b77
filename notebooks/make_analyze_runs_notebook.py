"""Writes notebooks/analyze_runs.ipynb from the cells below (run it after editing them).

The test suite executes the written notebook with a tiny sweep.
"""

from pathlib import Path

import nbformat as nbf

MD, CODE = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell

cells = [
    MD("# Analyze a sweep\n\n"
       "Load every run of a sweep from MLflow with `collapse.load_runs` — one row per (run, generation), a column per "
       "sweep axis and per metric — then draw your own figures with seaborn and compare regimes at the last "
       "generation. Launch the sweep first (`collapse sweep FILE`), or let the parameter `LAUNCH` do it here: "
       "finished runs are skipped, so this is cheap when the sweep is done."),
    CODE("# Parameters (papermill convention): the test suite runs this notebook with a tiny sweep.\n"
         "SWEEP = \"../experiments/sweeps/tiny_grid.yaml\"\n"
         "LAUNCH = True   # run what is missing, locally\n"
         "PARALLEL = 2\n"
         "METRIC = \"test_ce\"\n"
         "DIVERSITY = \"distinct_4\"", metadata={"tags": ["parameters"]}),
    CODE("import matplotlib.pyplot as plt\nimport seaborn as sns\n\nimport collapse\nfrom collapse.sweep import launch, load_sweep, status\n\n"
         "sweep = load_sweep(SWEEP)\n"
         "if LAUNCH:\n"
         "    launch(sweep, \"local\", parallel=PARALLEL, echo=lambda line: None)\n"
         "print(status(sweep)[0])"),
    CODE("df = collapse.load_runs(SWEEP)\n"
         "axes = [c for c in df.columns[: list(df.columns).index(\"generation\")] if c not in (\"run_id\", \"run_name\", \"status\")]\n"
         "print(len(df), \"rows;\", df[\"run_id\"].nunique(), \"runs; axes:\", axes)\n"
         "df[axes + [\"generation\", METRIC, DIVERSITY]].head(8)"),
    MD("## A custom figure\n\n"
       "Quality and diversity against generation, mean and 95 % confidence band over seeds, one line per regime; "
       "the dashed line is held-out human code."),
    CODE("from collapse.reporting import hue_order, metric_label, palette\n\n"
         "sns.set_theme(context=\"paper\", style=\"whitegrid\")\n"
         "colors = palette(df[\"regime\"])  # the colours of every collapse figure: a regime is always the same colour\n"
         "fig, axs = plt.subplots(1, 2, figsize=(7, 2.8))\n"
         "for ax, m in zip(axs, [METRIC, DIVERSITY]):\n"
         "    sns.lineplot(df, x=\"generation\", y=m, hue=\"regime\", hue_order=hue_order(df[\"regime\"]), palette=colors,\n"
         "                 errorbar=(\"ci\", 95), marker=\"o\", ax=ax)\n"
         "    if f\"human.{m}\" in df:\n"
         "        ax.axhline(df[f\"human.{m}\"].mean(), color=\"0.35\", ls=\"--\", lw=0.9)\n"
         "    ax.set_ylabel(metric_label(m))  # display name and unit from the metric registry\n"
         "fig.tight_layout()"),
    MD("## Comparing regimes at the last generation\n\n"
       "Per regime: the mean over seeds at generation 0 and at the last generation, the change, and Welch's t-test "
       "of the last generation's per-seed values against the reference regime (the same table `collapse report` "
       "writes)."),
    CODE("from collapse.reporting import final_effects\n\n"
         "table, reference = final_effects(df, [METRIC, DIVERSITY], hue=\"regime\")\n"
         "print(\"reference:\", reference)\n"
         "table.round(4)"),
    CODE("last = df[df[\"generation\"] == df[\"generation\"].max()]\n"
         "sns.catplot(last, x=\"regime\", y=METRIC, hue=\"regime\", order=hue_order(last[\"regime\"]), palette=colors,\n"
         "            kind=\"strip\", height=2.6, aspect=2.0)\n"
         "plt.ylabel(metric_label(METRIC))\n"
         "plt.title(f\"generation {int(df['generation'].max())}, one dot per seed\");"),
]

nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, Path(__file__).with_name("analyze_runs.ipynb"))
