"""Notebooks run as tests: each is executed with tiny parameters; any cell error fails."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

REPO = NOTEBOOKS.parent
TINY_PARAMETERS = {
    "theory.ipynb": "TRIALS = 300\nGENERATIONS = 6\nSEED = 0",
    "quickstart.ipynb": (f"CONFIG = {str(REPO / 'experiments' / 'tiny.yaml')!r}\nREGIMES = ['replace', 'accumulate']\n"
                         "GENERATIONS = 1\nROOT = 'runs'\nEXPERIMENT = 'nb_quickstart'\n"
                         "OVERRIDES = {'metrics.names': ['test_ce', 'syntax_valid', 'distinct_n', 'self_bleu', 'perplexity_gen0', 'verbatim_copy']}"),
    # The tiny sweep below, written into the notebook's working folder.
    "analyze_runs.ipynb": "SWEEP = 'nb_sweep.yaml'\nLAUNCH = True\nPARALLEL = 2\nMETRIC = 'test_ce'\nDIVERSITY = 'distinct_4'",
}

NB_SWEEP = f"""
name: nb_sweep
base:
  recipe: {REPO / 'experiments' / 'tiny.yaml'}
  overrides:
    run.root: runs
    run.generations: 1
    data.max_examples: 300
    data.train_size: 60
    metrics.names: [test_ce, distinct_n, syntax_valid]
axes:
  grid:
    mix.regime: [replace, accumulate]
  seeds: [0, 1]
"""


@pytest.mark.parametrize("name", sorted(TINY_PARAMETERS))
def test_notebook_executes(name, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "one cell tagged 'parameters'"
    params[0].source = TINY_PARAMETERS[name]
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nb_sweep.yaml").write_text(NB_SWEEP)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_every_notebook_is_tested():
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == set(TINY_PARAMETERS)
