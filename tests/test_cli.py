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
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ------------------------------------------------------------ unwritable folders

@pytest.mark.parametrize("argv", [[], ["run"], ["pretrain"], ["report"], ["sweep"], ["findings"], ["metrics"], ["ls"],
                                  ["show"], ["theory"]])
def test_every_help_page_prints(argv, capsys):
    # argparse formats help strings with %: a stray one breaks --help
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: collapse" in capsys.readouterr().out


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


# ------------------------------------------------------------ read-only commands create nothing

def fake_sweep(tmp_path: Path, *, record: bool = True) -> dict:
    """A sweep whose ``base.overrides`` log to a store outside its run root, filled by hand
    as a launch would (parent run, two child runs with metrics, run directories with a
    config, a dataset card and perplexity artifacts): no model is trained."""
    from mlflow.tracking import MlflowClient

    from collapse.tracking import client

    root, store = tmp_path / "root", tmp_path / "elsewhere"
    uri = f"sqlite:///{store}/mlflow.db"
    name = "fake_grid"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": {"recipe": str(TINY), "overrides": {
        "run.root": str(root), "tracking.uri": uri}}, "axes": {"grid": {"mix.regime": ["replace", "accumulate"]}}}))
    client(uri)  # the store, created as a launch creates it
    c = MlflowClient(uri)
    exp = c.create_experiment(name)
    c.create_run(exp, run_name=name, tags={"sweep.role": "parent"})
    for regime in ("replace", "accumulate"):
        run_dir = root / name / regime
        (run_dir / "gen_000" / "data").mkdir(parents=True)
        (run_dir / "gen_000" / "metrics").mkdir()
        (run_dir / "human_reference").mkdir()
        (run_dir / "config.yaml").write_text("run: {}\n")
        (run_dir / "gen_000" / "data" / "README.md").write_text("# card\n")
        for f in (run_dir / "human_reference" / "perplexity_gen0.jsonl", run_dir / "gen_000" / "metrics" / "perplexity_gen0.jsonl"):
            f.write_text("".join(json.dumps({"ppl": 2.0 + i}) + "\n" for i in range(20)))
        r = c.create_run(exp, run_name=regime, tags={"regime": regime, "seed": "0", "axis.mix.regime": regime,
                                                     "run_dir": str(run_dir)})
        for g in (0, 1):
            c.log_metric(r.info.run_id, "test_ce", 3.0 + g * (0.5 if regime == "replace" else 0.1), step=g)
            c.log_metric(r.info.run_id, "distinct_4", 0.9 - 0.1 * g, step=g)
        c.set_terminated(r.info.run_id)
    if record:  # what a launch records in the sweep folder
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "sweep.json").write_text(json.dumps({"name": name, "tracking_uri": uri}))
    return {"path": path, "root": root, "uri": uri, "name": name, "store": store}


def test_a_report_of_a_sweep_uses_the_store_it_was_launched_with(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --root (runs/) would be here
    fs = fake_sweep(tmp_path)
    for source, extra in ((fs["path"], []), (fs["name"], ["--root", str(fs["root"])])):
        out = tmp_path / "out"
        assert main(["report", str(source), "--out", str(out), *extra]) == 0
        index = (out / fs["name"] / "report.md").read_text()
        assert "config.yaml" in index and "## Dataset cards" in index  # the run directories were found
        assert (out / fs["name"] / "perplexity_gen0.png").exists()
        assert sorted(p.name for p in out.iterdir()) == [fs["name"]]  # no temporary folder left
    assert not (tmp_path / "runs").exists() and not (fs["root"] / "mlflow.db").exists()


def test_a_report_that_fails_writes_nothing(tmp_path, capsys):
    fs = fake_sweep(tmp_path)
    capsys.readouterr()
    out = tmp_path / "new" / "out"
    assert main(["report", str(fs["path"]), "--out", str(out), "--metrics", "no_such_key"]) == 2
    assert "metrics not logged: no_such_key" in one_line(capsys)
    assert not (tmp_path / "new").exists()
    assert main(["report", str(fs["path"]), "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in files_under(out)}
    assert main(["report", str(fs["path"]), "--out", str(out), "--metrics", "no_such_key"]) == 2
    assert {p: p.read_bytes() for p in files_under(out)} == before  # the last good report is kept as it was


def test_read_only_commands_never_create_a_store(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    empty = tmp_path / "empty"
    assert main(["report", "quickstart", "--root", str(empty), "--out", str(tmp_path / "out")]) == 2
    err = one_line(capsys)
    assert f"no MLflow store at {empty / 'mlflow.db'}: nothing has been tracked there" in err
    with pytest.raises(CollapseError, match="no MLflow store at"):
        collapse.load_runs("quickstart", root=empty)
    assert not empty.exists() and not (tmp_path / "out").exists()

    fs = fake_sweep(tmp_path / "s")
    db = fs["store"] / "mlflow.db"
    run_dir = fs["root"] / fs["name"] / "replace"
    (run_dir / "state.json").write_text(json.dumps({"status": "done", "last_completed_generation": 2,
                                                    "mlflow_run_id": "0" * 32, "tracking_uri": fs["uri"]}))
    (fs["root"] / fs["name"] / "sweep.json").write_text(json.dumps({"tracking_uri": fs["uri"], "parent_run_id": "1" * 32}))
    for p in fs["store"].iterdir():
        p.unlink()  # the store is gone (moved, or a copy of the run folders)
    # a fresh process: this one's MLflow keeps the deleted database open
    r = subprocess.run([sys.executable, "-m", "collapse.cli", "sweep", str(fs["path"]), "--status"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "fake_grid: 2 runs: 1 done, 1 pending" in r.stdout, r.stderr
    capsys.readouterr()  # MLflow's own lines from filling the store
    assert main(["report", str(fs["path"]), "--out", str(tmp_path / "out")]) == 2
    assert f"no MLflow store at {db}" in one_line(capsys)
    with pytest.raises(CollapseError, match="no MLflow store at"):
        collapse.load_runs(fs["path"])
    assert list(fs["store"].iterdir()) == [] and not (fs["root"] / "mlflow.db").exists()


def test_a_report_of_an_unknown_experiment_lists_those_there(tmp_path, capsys):
    fs = fake_sweep(tmp_path)
    capsys.readouterr()
    assert main(["report", "fake_gird", "--tracking-uri", fs["uri"], "--root", str(fs["root"])]) == 2
    err = one_line(capsys)
    assert f"no MLflow experiment named 'fake_gird' at {fs['uri']} (experiments there: fake_grid)" in err
    assert f"`collapse ls {fs['root']}` lists the runs on disk" in err


# ------------------------------------------------------------ Ctrl-C

@pytest.mark.slow
def test_ctrl_c_leaves_the_run_interrupted_not_running(shared_root, tmp_path, monkeypatch):
    """Ctrl-C in a terminal signals the whole foreground process group (the API's process and any
    workers it forked): the run says interrupted, its MLflow run is KILLED."""
    run_dir = tmp_path / "ctrl_c"
    code = ("import collapse, sys; from collapse.config import parse_override as p; "
            "collapse.run(sys.argv[1], **{'.'.join(k): v for k, v in map(p, sys.argv[2:])})")
    overrides = tiny_overrides(shared_root, run_dir, **{"run.generations": 1})
    p = subprocess.Popen([sys.executable, "-c", code, str(TINY), *overrides], cwd=REPO, start_new_session=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 300
    state = run_dir / "state.json"
    while p.poll() is None and time.time() < deadline:  # running, with its MLflow run open: mid-generation
        try:
            if json.loads(state.read_text()).get("mlflow_run_id"):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    time.sleep(1.0)
    assert p.poll() is None, p.communicate()[1][-2000:]
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
    st = json.loads(state.read_text())
    assert st["status"] == "interrupted", st
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{shared_root}/mlflow.db")
    assert c.get_run(st["mlflow_run_id"]).info.status == "KILLED"

    # Ctrl-C while the finished run closes its MLflow run: interrupted too, and the next call completes it
    from collapse.tracking import RunMirror

    finish = RunMirror.finish

    def interrupted_finish(self, status="FINISHED", wait_s=None):
        if status == "FINISHED":
            raise KeyboardInterrupt
        return finish(self, status, wait_s)

    args = {k: v for k, v in (o.split("=", 1) for o in overrides)}
    monkeypatch.setattr(RunMirror, "finish", interrupted_finish)
    with pytest.raises(KeyboardInterrupt):
        collapse.run(TINY, **args, run__generations=1)
    assert json.loads(state.read_text())["status"] == "interrupted"
    assert (run_dir / "gen_001" / "DONE").exists()
    assert c.get_run(st["mlflow_run_id"]).info.status == "KILLED"
    monkeypatch.setattr(RunMirror, "finish", finish)
    collapse.run(TINY, **args, run__generations=1)
    assert json.loads(state.read_text())["status"] == "done"
    assert c.get_run(st["mlflow_run_id"]).info.status == "FINISHED"


# ------------------------------------------------------------ sweep overrides

def small_sweep(folder: Path, root: Path, name: str = "over", *, uri: bool = True, **axes) -> Path:
    """A sweep over the tiny recipe made smaller (generations 0..1 on 160 functions); ``uri``:
    its store is named (else it is the default, ``<run.root>/mlflow.db``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    base = {"recipe": str(TINY), "overrides": {"run.root": str(root), "run.generations": 1, "data.train_size": 160,
                                               "sample.max_new_tokens": 32,
                                               "metrics.names": ["test_ce", "syntax_valid", "distinct_n"]}}
    if uri:
        base["overrides"]["tracking.uri"] = f"sqlite:///{root}/mlflow.db"
    path.write_text(yaml.safe_dump({"name": name, "base": base,
                                    "axes": axes or {"grid": {"mix.regime": ["replace", "accumulate"]}}}))
    return path


def test_sweep_overrides_apply_to_every_run(tmp_path, capsys):
    from collapse.sweep import load_sweep

    path = small_sweep(tmp_path, tmp_path / "root")
    other = tmp_path / "elsewhere"
    sweep = load_sweep(path, [f"run.root={other}", "run.generations=4", "train.lr=0.01"])
    assert sweep.overrides == {"run.root": str(other), "run.generations": 4, "train.lr": 0.01}
    assert sweep.root == other and sweep.dir == other / "over"
    for r in sweep.runs:
        assert r.run_dir.parent == other / "over" and r.generations == 4 and r.config["train"]["lr"] == 0.01
        assert r.config["data"]["train_size"] == 160  # the file's own overrides stay
    assert main(["sweep", str(path), f"run.root={other}", "run.generations=4", "--dry-run"]) == 0
    assert str(other / "over" / "replace") in capsys.readouterr().out
    assert not other.exists()  # a dry run writes nothing
    for bad, message in ((["mix.regime=accumulate"], "mix.regime: an axis of sweep over"),
                         (["run.dir=/tmp/x"], "run.dir: set by the sweep for each run"),
                         (["train.lrr=1"], "train.lrr: unknown key"),
                         (["run.generations=-1"], "run.generations"),
                         (["generations"], "expected key=value")):
        assert main(["sweep", str(path), *bad, "--dry-run"]) == 2, bad
        assert message in one_line(capsys), bad
    assert not (tmp_path / "root").exists()


def test_sweep_overrides_are_recorded_and_a_relaunch_with_others_is_refused(tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    from collapse.sweep import launching
    from collapse.sweep.state import LaunchResult

    launched = []

    def fake_local(sweep, specs, parallel, echo):  # no training: what was asked is what matters here
        launched.append({s.name: s.config for s in specs})
        return LaunchResult([s.name for s in specs], {}, {}, {})

    monkeypatch.setattr(launching, "launch_local", fake_local)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = small_sweep(tmp_path, tmp_path / "root", uri=False)
    root = tmp_path / "moved"
    assert main(["sweep", str(path), f"run.root={root}", "train.lr=0.01", "run.generations=3"]) == 1  # runs not done
    assert all(c["train"]["lr"] == 0.01 and c["run"]["generations"] == 3 and c["run"]["root"] == str(root)
               for c in launched[0].values())
    state = json.loads((root / "over" / "sweep.json").read_text())
    assert state["overrides"] == {"run.root": str(root), "train.lr": 0.01, "run.generations": 3}
    c = MlflowClient(state["tracking_uri"])
    parent = c.get_run(state["parent_run_id"])
    assert parent.data.params["override.train.lr"] == "0.01" and parent.data.params["override.run.generations"] == "3"
    assert parent.data.tags["sweep.overrides"] == f"run.generations=3 run.root={root} train.lr=0.01"
    capsys.readouterr()

    # a different config: refused in one line, before anything is launched
    for changed in (["train.lr=0.02"], []):
        assert main(["sweep", str(path), f"run.root={root}", *changed, "run.generations=3"]) == 2
        err = one_line(capsys)
        assert f"sweep over ({root / 'over'}) was launched with overrides run.generations=3 run.root={root} " \
               "train.lr=0.01" in err
        assert ("train.lr=0.01 there, train.lr=0.02 now" if changed else "train.lr=0.01 there, no train.lr now") in err
        assert len(launched) == 1
    assert main(["sweep", str(path), f"run.root={root}", "train.lr=0.02", "--dry-run"]) == 2
    one_line(capsys)

    # what a run may change on resume, a sweep may too (more generations), recorded as the last launch's
    assert main(["sweep", str(path), f"run.root={root}", "train.lr=0.01", "run.generations=5"]) == 1
    assert len(launched) == 2 and all(c["run"]["generations"] == 5 for c in launched[1].values())
    assert json.loads((root / "over" / "sweep.json").read_text())["overrides"]["run.generations"] == 5
    assert c.get_run(state["parent_run_id"]).data.tags["sweep.overrides"].startswith("run.generations=5 ")
    assert state["tracking_uri"] == f"sqlite:///{root}/mlflow.db"  # the default store follows run.root
    assert not (tmp_path / "root").exists()  # the file's run.root was never used


@pytest.mark.slow
def test_a_sweep_launched_with_overrides_runs_them(shared_root, tmp_path, capsys):
    path = small_sweep(tmp_path, shared_root, name="over_real", grid={"mix.regime": ["accumulate"]})
    rc = main(["sweep", str(path), "run.generations=0", "mix.synthetic_size=100", "--parallel", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out[-2000:]
    run_dir = shared_root / "over_real" / "accumulate"
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["run"]["generations"] == 0 and cfg["mix"]["synthetic_size"] == 100
    assert (run_dir / "gen_000" / "DONE").exists() and not (run_dir / "gen_001").exists()
    assert "over_real: 1 runs: 1 done" in out


# ------------------------------------------------------------ collapse ls / collapse show

def fake_run(run_dir: Path, status: str | None, done: int, generations: int = 2, **state) -> Path:
    """A run directory as a run leaves it: state.json, config.yaml, generations 0..done finished."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("run: {}\n")
    if status is not None:
        (run_dir / "state.json").write_text(json.dumps({"status": status, "generations": generations,
                                                        "last_completed_generation": done, "regime": "replace",
                                                        "seed": 0, "experiment": "tiny", **state}))
    for g in range(done + 1):
        d = run_dir / f"gen_{g:03d}"
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({"generation": g, "total": 300, "pools": {"human": 300 - 100 * g, "synthetic": 100 * g},
                                                     "counts": {"human": {"-1": 300 - 100 * g}, "synthetic": {str(h): 100 for h in range(g)}},
                                                     "content_sha256": "ab" * 32}))
        (d / "metrics.json").write_text(json.dumps({"test_ce": 3.0 + g, "distinct_4": 0.9, "human.distinct_4": 0.8}))
        (d / "timings.json").write_text(json.dumps({"train_s": 1.5, "sample_s": 0.5}))
        (d / "samples.jsonl").write_text("".join(json.dumps({"text": f"def gen{g}_sample{i}():\n    return {i}\x07",
                                                             "n_tokens": 12, "finished": True}) + "\n" for i in range(5)))
        (d / "DONE").write_text("")
    return run_dir


def snapshot(root: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


def test_ls_lists_experiments_and_sweeps_with_status_and_last_generation(tmp_path, capsys):
    from collapse.locks import FileLock

    root = tmp_path / "runs"
    fake_run(root / "tiny" / "replace_s0", "done", 2)
    fake_run(root / "tiny" / "accumulate_s0", "interrupted", 0)
    fake_run(root / "tiny" / "fresh_s0", "running", 1)  # killed: nobody holds its lock
    fake_run(root / "tiny" / "augment_s0", "running", -1)
    fake_run(root / "grid" / "replace_s1", "failed", 0, generations=1)
    (root / "grid" / "sweep.json").write_text(json.dumps({"file": "/x/grid.yaml", "runs": {
        "replace_s1": {"run_dir": str(root / "grid" / "replace_s1")},
        "accumulate_s1": {"run_dir": str(root / "grid" / "accumulate_s1")}}}))
    for junk in ("_cache", "mlartifacts"):
        (root / junk / "x").mkdir(parents=True)
    (root / "mlflow.db").write_text("")
    lock = FileLock(root / "tiny" / "augment_s0" / ".lock").acquire()  # a live run
    before = snapshot(root)
    try:
        assert main(["ls", str(root)]) == 0
    finally:
        lock.release()
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["experiment", "kind", "run", "status", "generation"]
    rows = [line.split() for line in out[1:-1]]
    assert rows == [["grid", "sweep", "replace_s1", "failed", "0/1"],
                    ["grid", "sweep", "accumulate_s1", "pending", "-/?"],
                    ["tiny", "experiment", "accumulate_s0", "interrupted", "0/2"],
                    ["tiny", "experiment", "augment_s0", "running", "-/2"],
                    ["tiny", "experiment", "fresh_s0", "stopped", "1/2"],
                    ["tiny", "experiment", "replace_s0", "done", "2/2"]]
    assert out[-1] == f"2 experiments and sweeps, 6 runs under {root}"
    assert snapshot(root) == before  # read only

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ls", str(empty)]) == 0 and "no experiments or sweeps yet" in capsys.readouterr().out
    assert list(empty.iterdir()) == []
    assert main(["ls", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'} does not exist: name the run root" in one_line(capsys)
    assert not (tmp_path / "nope").exists()


def test_ls_defaults_to_the_default_run_root(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_run(tmp_path / "runs" / "tiny" / "replace_s0", "done", 2)
    assert main(["ls"]) == 0
    assert "tiny        experiment  replace_s0  done    2/2" in capsys.readouterr().out


def test_show_prints_a_generations_manifest_metrics_and_samples(tmp_path, capsys):
    run_dir = fake_run(tmp_path / "runs" / "tiny" / "replace_s0", "done", 2)
    (run_dir / "gen_003").mkdir()  # started, not finished
    before = snapshot(tmp_path)
    assert main(["show", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{run_dir}  generation 2 of 0..2\n")  # the last finished by default
    assert "300 examples: human 100, synthetic 200" in out and "synthetic: gen 0 100, gen 1 100" in out
    assert "took: train 1.5s, sample 0.5s" in out
    assert [line.split() for line in out.splitlines() if line.strip().startswith(("test_ce", "distinct_4"))] == \
        [["distinct_4", "0.9", "0.8"], ["test_ce", "5"]]
    assert out.count("--- sample") == 3 and "samples (3 of 5;" in out and "def gen2_sample0():" in out
    assert "return 0\\x07" in out  # control characters escaped
    assert main(["show", str(run_dir), "--generation", "0", "-n", "5"]) == 0
    out = capsys.readouterr().out
    assert "generation 0 of 0..2" in out and out.count("--- sample") == 5 and "def gen0_sample4():" in out
    assert snapshot(tmp_path) == before  # read only

    for args, message in (([str(run_dir), "--generation", "3"], "generation 3 has not finished (finished generations: 0, 1, 2)"),
                          ([str(run_dir.parent)], "holds several runs: name one (replace_s0)"),
                          ([str(tmp_path / "nope")], "does not exist; `collapse ls` lists the runs"),
                          ([str(tmp_path)], "is not a run directory"),
                          ([str(run_dir), "-n", "-1"], "-n: expected >= 0")):
        assert main(["show", *args]) == 2, args
        assert message in one_line(capsys), args
