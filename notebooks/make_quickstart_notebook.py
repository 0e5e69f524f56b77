"""Writes notebooks/quickstart.ipynb from the cells below (run it after editing them).

The test suite executes the written notebook with tiny parameters.
"""

from pathlib import Path

import nbformat as nbf

MD, CODE = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell

cells = [
    MD("# Quickstart: one collapse experiment, inline\n\n"
       "Fine-tune the CPU base code LM (`experiments/pretrain_cpu.yaml`: pretrained once on the Python functions of "
       "the standard library and installed packages, about 12 minutes on 2 cores the first time, reused after) on "
       "stdlib functions, sample from it, fine-tune the base again on the samples under two mixing regimes, and look "
       "at what changes. Everything runs offline on a CPU; the run directories, the base and the MLflow database land "
       "under `ROOT`, and re-running a cell reads finished generations back instead of recomputing them."),
    CODE("# Parameters (papermill convention): the test suite runs this notebook with tiny values.\n"
         "CONFIG = \"../experiments/quickstart.yaml\"\n"
         "REGIMES = [\"replace\", \"accumulate\"]\n"
         "GENERATIONS = 5\n"
         "ROOT = \"../runs\"\n"
         "EXPERIMENT = \"notebook_quickstart\"\n"
         "OVERRIDES = {}  # any other config keys, e.g. {\"model.preset\": \"tiny\"}", metadata={"tags": ["parameters"]}),
    CODE("import matplotlib.pyplot as plt\nimport pandas as pd\nimport seaborn as sns\nfrom IPython.display import HTML, display\n\n"
         "import collapse\n\n"
         "res = collapse.run(CONFIG, run={\"root\": ROOT, \"experiment\": EXPERIMENT, \"generations\": GENERATIONS, \"progress\": False},\n"
         "                   mix={\"regime\": REGIMES}, **OVERRIDES)\n"
         "res"),
    MD("## The metrics, one row per regime and generation\n\n"
       "`res.metrics` is a DataFrame; `human.*` columns are the same measurements on held-out human code."),
    CODE("cols = [\"regime\", \"generation\", \"test_ce\", \"syntax_valid\", \"distinct_4\", \"self_bleu\", \"ppl_gen0_q50\", \"copy_rate\"]\n"
         "res.metrics[[c for c in cols if c in res.metrics]].round(3)"),
    MD("## Samples of each generation, side by side\n\n"
       "The same sample index in every generation; generated code is only ever displayed here, never run."),
    CODE("import html\n\n"
         "def side_by_side(regime, n=2, chars=400):\n"
         "    gens = res.generations\n"
         "    head = \"\".join(f\"<th>generation {g}</th>\" for g in gens)\n"
         "    rows = []\n"
         "    for i in range(n):\n"
         "        cells = \"\".join(f\"<td style='vertical-align:top'><pre style='font-size:9px'>{html.escape(res.texts(g, regime, n=n)[i][:chars])}</pre></td>\" for g in gens)\n"
         "        rows.append(f\"<tr>{cells}</tr>\")\n"
         "    return HTML(f\"<h4>{regime}</h4><table><tr>{head}</tr>{''.join(rows)}</table>\")\n\n"
         "for regime in REGIMES:\n"
         "    display(side_by_side(regime))"),
    MD("## Plots\n\n"
       "Held-out cross-entropy (quality), distinct-4 (diversity) and the median perplexity of the samples under the "
       "generation-0 model (the tails), against generation; dashed: human code."),
    CODE("df = res.metrics\n"
         "panels = [m for m in [\"test_ce\", \"distinct_4\", \"ppl_gen0_q50\"] if m in df]\n"
         "fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8))\n"
         "for ax, m in zip(axes, panels):\n"
         "    sns.lineplot(df, x=\"generation\", y=m, hue=\"regime\", marker=\"o\", ax=ax)\n"
         "    if f\"human.{m}\" in df:\n"
         "        ax.axhline(df[f\"human.{m}\"].mean(), color=\"0.4\", ls=\"--\")\n"
         "    ax.set_title(m)\n"
         "fig.tight_layout()"),
    CODE("from collapse.reporting import perplexity_values, plot_perplexity_histograms\n\n"
         "paths = plot_perplexity_histograms({r: perplexity_values(d) for r, d in res.run_dirs.items()}, res.run_dir / \"perplexity_gen0\")\n"
         "from IPython.display import Image\n"
         "Image(filename=str(paths[0]), width=700)"),
    MD("Next: `collapse report` draws the paper figures and tables from MLflow; `analyze_runs.ipynb` loads a whole "
       "sweep with `collapse.load_runs`."),
]

nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, Path(__file__).with_name("quickstart.ipynb"))
