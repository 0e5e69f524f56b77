"""The command line and API talk to people: one line and a next step for ordinary mistakes,
read-only commands that write nothing, sweep overrides, ``collapse ls`` and ``collapse show``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import collapse
from collapse.cli import main
from collapse.errors import CollapseError
from tests.conftest import REPO, TINY, tiny_overrides


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")) if root.exists() else []


# ------------------------------------------------------------ unwritable folders

@pytest.mark.parametrize("key", ["run.root", "run.dir"])
def test_an_unwritable_run_root_or_dir_is_one_line_before_any_work(key, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    import collapse.data

    def no_pipeline(*a, **k):
        raise AssertionError("the data pipeline ran")

    monkeypatch.setattr(collapse.data, "prepare_human_data", no_pipeline)
    other = {"run.root": tmp_path / "root", "run.dir": tmp_path / "dir"}
    other[key] = blocker / "x"
    rc = main(["run", str(TINY), *(f"{k}={v}" for k, v in other.items()), f"tracking.uri=sqlite:///{tmp_path}/m.db"])
    err = one_line(capsys)
    assert rc == 2 and err.startswith(f"collapse: error: {key}: cannot write {blocker / 'x'}")
    assert f"{blocker} is a file, not a folder" in err and f"set {key} to a folder you can write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written


def test_the_api_raises_a_collapse_error_for_an_unwritable_root(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(CollapseError, match=r"run\.root: cannot write .*a_file is a file, not a folder"):
        collapse.run(TINY, run__root=str(blocker / "runs"))
    with pytest.raises(CollapseError, match=r"run\.root: cannot write"):
        from collapse.config import load_config
        from collapse.pretrain import run_pretrain

        run_pretrain(load_config(REPO / "experiments" / "pretrain_cpu.yaml", {"run.root": str(blocker)}))


# ------------------------------------------------------------ mistakes named with a next step

@pytest.mark.parametrize("name, hint", [
    ("distinct_4", "distinct_4 is a key that the metric distinct_n logs: list distinct_n"),
    ("copy_rate_k16", "the metric verbatim_copy logs"),
    ("ppl_gen0_q50", "the metric perplexity_gen0 logs"),
    ("self_blue", "did you mean self_bleu?"),
    ("train_loss", "train_loss is logged every generation without being listed"),
])
def test_an_unknown_metric_name_suggests_the_metric_to_list(name, hint, capsys):
    rc = main(["run", str(TINY), f"metrics.names=[test_ce,{name}]"])
    err = one_line(capsys)
    assert rc == 2 and f"metrics.names: unknown metric {name!r}; " in err and hint in err


def test_every_logged_key_has_the_metric_that_logs_it():
    from collapse.metrics import REGISTRY
    from collapse.metrics.keys import KEY_PATTERNS, is_always_logged, metric_of_key

    assert set(KEY_PATTERNS) == set(REGISTRY)
    golden = json.loads((REPO / "tests" / "golden" / "tiny-AVX2.json").read_text())
    keys = {k for g in golden["generations"] for k in g}
    unknown = sorted(k for k in keys if metric_of_key(k) is None and not is_always_logged(k))
    assert not unknown, unknown
    assert metric_of_key("human.distinct_4") == "distinct_n" and metric_of_key("distinct_n") is None


def test_a_sweep_file_given_to_run_and_a_recipe_given_to_sweep_name_the_command(tmp_path, capsys):
    sweep = REPO / "experiments" / "sweeps" / "tiny_grid.yaml"
    assert main(["run", str(sweep)]) == 2
    assert f"{sweep} is a sweep file (it has axes:); launch it with `collapse sweep {sweep}`" in one_line(capsys)
    with pytest.raises(CollapseError, match="collapse sweep"):
        collapse.run(sweep)
    assert main(["sweep", str(TINY)]) == 2
    err = one_line(capsys)
    assert f"{TINY} is an experiment recipe, not a sweep file" in err and f"`collapse run {TINY}`" in err
    assert main(["sweep", str(TINY), "--status"]) == 2
    assert "is an experiment recipe" in one_line(capsys)


def test_texts_of_a_generation_that_does_not_exist_names_those_that_do(tmp_path):
    import datasets

    from collapse.api import Results
    from collapse.config import load_config
    from collapse.experiment import RunResult

    run_dir = tmp_path / "replace_s0"
    for g in (0, 1):
        d = run_dir / f"gen_{g:03d}"
        datasets.Dataset.from_dict({"text": [f"def f{g}(): pass", "x = 1"]}).save_to_disk(str(d / "samples"))
        (d / "DONE").write_text("")
    (run_dir / "gen_002" / "samples").mkdir(parents=True)  # started, never finished
    res = Results(load_config(TINY), {"replace": RunResult(run_dir, "replace", 0)})
    assert res.texts(1, n=1) == ["def f1(): pass"]
    for g in (2, 7, -1):
        with pytest.raises(CollapseError, match=rf"generation {g} of .*replace_s0 does not exist \(finished generations: 0, 1\)"):
            res.texts(g)
