"""Notebooks: each ``.ipynb`` agrees with the percent-format script it is paired with (jupytext), and each is
executed papermill-style with tiny parameters and must show what it is for (tables, figures, log lines)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

REPO = NOTEBOOKS.parent
TINY = str(REPO / "experiments" / "tiny.yaml")
# Injected after each notebook's cell tagged `parameters`, as papermill does.
TINY_PARAMETERS = {
    "theory.ipynb": {"TRIALS": 300, "GENERATIONS": 6, "SEED": 0},
    "quickstart.ipynb": {"CONFIG": TINY, "REGIMES": ["replace", "accumulate"], "GENERATIONS": 1, "ROOT": "runs",
                         "EXPERIMENT": "nb_quickstart", "PROGRESS": False,
                         "OVERRIDES": {"metrics.names": ["test_ce", "syntax_valid", "distinct_n", "self_bleu",
                                                         "perplexity_gen0", "verbatim_copy"]}},
    # The tiny sweep below, written into the notebook's working folder.
    "analyze_runs.ipynb": {"SWEEP": "nb_sweep.yaml", "ROOT": ".", "LAUNCH": True, "PARALLEL": 2, "METRIC": "test_ce",
                           "DIVERSITY": "distinct_4", "SAMPLES": 2},
}
# Run after the notebook's own cells, as a person would click: the pickers redraw their view in place.
AFTER = {
    "analyze_runs.ipynb": "metric_picker['metric'].value = 'distinct_4'\n"
                          "generation_picker['run'].value = 'accumulate_s1'\n"
                          "generation_picker['generation'].value = 0",
}

# What each executed notebook must show: substrings of its outputs (text, HTML, log lines on stderr).
EXPECTED_TEXT = {
    "theory.ipynb": ["largest |z| against the closed forms", "'replace':"],
    "quickstart.ipynb": ["Results(nb_quickstart", "replace s0 gen 1/1", "accumulate s0 gen 1/1", "distinct_4",
                         "<th>generation 1</th>", "<h4>accumulate</h4>"],
    "analyze_runs.ipynb": ["nb_sweep: 4 runs: 4 done", "rows;", "reference:", "distinct_4",
                           "Dropdown(description='metric'", "Dropdown(description='run'",
                           # the browsed generation, after the pickers moved to it
                           "accumulate_s1, generation 0: trained on 60 examples", "training set plan", "from generation",
                           "the first 2 of its samples", "perplexity under generation 0", "verbatim copies of human code"],
}

NB_SWEEP = f"""
name: nb_sweep
base:
  recipe: {TINY}
  overrides:
    run.root: runs
    run.generations: 1
    data.max_examples: 300
    data.train_size: 60
    metrics.names: [test_ce, distinct_n, syntax_valid, perplexity_gen0, verbatim_copy]
axes:
  grid:
    mix.regime: [replace, accumulate]
  seeds: [0, 1]
"""

# What must be gone: a picker redraws its view in place, it does not add a second one.
ABSENT_TEXT = {"analyze_runs.ipynb": ["replace_s0, generation 1: trained on"]}

FIGURE_CALLS = ("plt.subplots(", "sns.catplot(", "Image(")


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def _text(outputs) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        for mime in ("text/plain", "text/html", "text/markdown"):
            v = o.get("data", {}).get(mime)
            if v:
                parts.append(v if isinstance(v, str) else "".join(v))
    return "\n".join(parts)


def _has_image(outputs) -> bool:
    return any("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.parametrize("name", sorted(TINY_PARAMETERS))
def test_notebook_matches_its_script(name):
    """The ``.ipynb`` and the ``.py`` it is paired with hold the same cells (``jupytext --sync notebooks/*.py``)."""
    import jupytext

    nb = jupytext.read(NOTEBOOKS / name)
    script = NOTEBOOKS / Path(name).with_suffix(".py").name
    assert script.exists(), f"{name} has no paired script {script.name}: jupytext --set-formats ipynb,py:percent {name}"
    assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"
    py = jupytext.read(script)
    assert _cells(nb) == _cells(py), f"{name} and {script.name} differ: run jupytext --sync notebooks/{script.name}"
    tagged = [[c.source for c in book.cells if "parameters" in c.metadata.get("tags", [])] for book in (nb, py)]
    assert tagged[0] == tagged[1] and len(tagged[0]) == 1, "one cell tagged 'parameters', the same in both"


@pytest.mark.parametrize("name", sorted(TINY_PARAMETERS))
def test_notebook_executes(name, tmp_path, monkeypatch):
    import nbformat
    import papermill

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "one cell tagged 'parameters'"
    # The kernel imports this checkout's package, not whichever one the environment has installed.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the inline backend: figures become image outputs
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nb_sweep.yaml").write_text(NB_SWEEP)
    if name in AFTER:
        nb.cells.append(nbformat.v4.new_code_cell(AFTER[name]))
    source = tmp_path / f"source_{name}"
    nbformat.write(nb, source)
    # A failing cell raises PapermillExecutionError naming the cell and the error.
    out = papermill.execute_notebook(str(source), str(tmp_path / name), parameters=TINY_PARAMETERS[name],
                                     kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                                     execution_timeout=300)
    code = [c for c in out.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "every code cell ran"
    text = "\n".join(_text(c.get("outputs", [])) for c in code)
    missing = [s for s in EXPECTED_TEXT[name] if s not in text]
    assert not missing, f"{name}: the outputs lack {missing}"
    stale = [s for s in ABSENT_TEXT.get(name, []) if s in text]
    assert not stale, f"{name}: the outputs still show {stale}"
    blank = [c.source.splitlines()[0] for c in code
             if any(f in c.source for f in FIGURE_CALLS) and not _has_image(c.get("outputs", []))]
    assert not blank, f"{name}: cells that draw a figure but show none: {blank}"


def test_every_notebook_is_tested_paired_and_listed():
    names = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert names == set(TINY_PARAMETERS)
    assert {p.name for p in NOTEBOOKS.glob("*.py")} == {Path(n).with_suffix(".py").name for n in names}
    readme = (NOTEBOOKS / "README.md").read_text()
    assert [n for n in sorted(names) if f"`{n}`" not in readme] == []


@pytest.mark.parametrize("name", ["quickstart.ipynb", "analyze_runs.ipynb"])
def test_notebooks_write_outside_the_checkout_by_default(name):
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params: dict = {}
    exec(next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", [])), params)  # assignments only
    root = Path(params["ROOT"]).expanduser()
    assert root.is_absolute() and not root.resolve().is_relative_to(REPO), f"{name}: ROOT={params['ROOT']!r}"
