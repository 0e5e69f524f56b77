"""Faults made on purpose: concurrent first use of a store, a second writer, a kill
at the create-run point, a deleted state, another store, truncation and bit
flips, a full filesystem, a locked store, SIGTERM. Nothing lost, nothing
duplicated, nothing silently wrong."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from collapse.cli import main
from collapse.errors import CollapseError
from tests.conftest import TINY, tiny_overrides

pytestmark = pytest.mark.slow


def metrics_of(run_dir: Path, g: int) -> dict:
    return json.loads((run_dir / f"gen_{g:03d}" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def ref(shared_root) -> Path:
    """A finished tiny run, generations 0..1."""
    run_dir = shared_root / "faults_ref"
    assert main(["run", str(TINY), *tiny_overrides(shared_root, run_dir, **{"run.generations": 1})]) == 0
    return run_dir


def clone(ref: Path, dst: Path, *, same_identity: bool = False) -> Path:
    """A copy of ``ref``; unless ``same_identity``, one with its own MLflow run."""
    shutil.copytree(ref, dst)
    if not same_identity:
        (dst / ".run_key").unlink()
        st = json.loads((dst / "state.json").read_text())
        st.pop("mlflow_run_id", None)
        for g in (0, 1):
            (dst / f"gen_{g:03d}" / "MIRRORED").unlink(missing_ok=True)
        (dst / "state.json").write_text(json.dumps(st))
    return dst


def rerun(shared_root: Path, run_dir: Path, **extra) -> int:
    return main(["run", str(TINY), *tiny_overrides(shared_root, run_dir, **{"run.generations": 1, **extra})])


def mlflow_runs(uri: str, run_dir: Path):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("tiny")
    return c, c.search_runs([exp.experiment_id], f"tags.run_dir = '{run_dir.resolve()}'")


# ----------------------------------------------------------------- 1. store

def _first_use(uri: str, i: int, q, sweep=None) -> None:
    try:
        from collapse.tracking import RunMirror

        if sweep is not None:  # a sweep launcher's first use: its parent run
            from collapse.sweep.parent_run import ensure_parent_run

            ensure_parent_run(sweep, uri)
        else:
            m = RunMirror(uri, "concurrent", f"r{i}", key=f"{i:032x}")
            m.log_metrics({"a": float(i)}, step=0)
            m.finish()
        q.put((i, "ok"))
    except BaseException as e:  # reported to the test, which names it
        q.put((i, f"{type(e).__name__}: {e}"[:300]))


def _sweep_file(folder: Path, name: str, root: Path):
    import yaml

    from collapse.sweep.spec import load_sweep

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": {"recipe": str(TINY), "overrides": {
        "run.root": str(root), "tracking.uri": f"sqlite:///{root}/mlflow.db"}}, "axes": {"seeds": [0]}}))
    return load_sweep(path)


def test_six_processes_on_a_new_store_all_succeed(tmp_path):
    import multiprocessing as mp

    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (imported once, not by each child)
    from mlflow.tracking import MlflowClient

    from collapse.tracking import environment_tags

    environment_tags()
    uri = f"sqlite:///{tmp_path}/new.db"
    sweeps = [_sweep_file(tmp_path, f"first{i}", tmp_path / "root") for i in range(2)]
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    # four runs and two sweep launchers at once, on a database that does not exist yet
    ps = [ctx.Process(target=_first_use, args=(uri, i, q, sweeps[i - 4] if i >= 4 else None)) for i in range(6)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(120)
    results = dict(q.get(timeout=5) for _ in ps)
    assert results == {i: "ok" for i in range(6)}
    c = MlflowClient(uri)  # usable afterwards
    runs = c.search_runs([c.get_experiment_by_name("concurrent").experiment_id])
    assert sorted(r.data.metrics["a"] for r in runs) == [float(i) for i in range(4)]
    for sw in sweeps:
        assert len(c.search_runs([c.get_experiment_by_name(sw.name).experiment_id])) == 1
    assert (tmp_path / "new.db.lock").exists()


# ------------------------------------------------------- 2. one writer only

def test_a_second_writer_of_a_run_directory_is_refused(shared_root, tmp_path, capsys):
    from collapse.locks import FileLock

    run_dir = tmp_path / "busy"
    lock = FileLock(run_dir / ".lock").acquire()
    try:
        assert rerun(shared_root, run_dir) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pid {os.getpid()} on {socket.gethostname()}" in err[0] and str(run_dir) in err[0]
    assert not (run_dir / "config.yaml").exists()


def test_a_second_launcher_of_a_sweep_is_refused_and_the_parent_run_is_one(shared_root, tmp_path, capsys):
    from collapse.locks import FileLock
    from collapse.sweep.parent_run import ensure_parent_run
    from collapse.sweep.state import sweep_json

    sweep = _sweep_file(tmp_path, "lockme", shared_root)
    lock = FileLock(sweep.dir / ".lock").acquire()
    try:
        assert main(["sweep", str(sweep.path)]) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pid {os.getpid()}" in err[0] and "sweep lockme" in err[0]
    assert not any(sweep.dir.glob("*/state.json"))  # nothing launched
    uri = f"sqlite:///{shared_root}/mlflow.db"
    first = ensure_parent_run(sweep, uri)
    sweep_json(sweep).unlink()  # a launcher that never recorded it (killed, or raced)
    assert ensure_parent_run(sweep, uri) == first


# ---------------------------------------- 3, 4. find the MLflow run, log all

def test_a_kill_at_the_create_run_point_leaves_no_orphan(shared_root, tmp_path):
    """The MLflow run is created with the run directory's key in one call, so a
    process killed before state.json records the id is found again, not duplicated."""
    from collapse.tracking import RunMirror

    uri = f"sqlite:///{shared_root}/mlflow.db"
    first = RunMirror(uri, "orphans", "r", key="ab" * 16)  # then killed: no state.json
    again = RunMirror(uri, "orphans", "r", run_id=None, key="ab" * 16)
    assert again.run_id == first.run_id and not again.created
    assert len(again.client.search_runs([again.experiment_id])) == 1


def test_deleted_state_finds_the_same_mlflow_run(ref, shared_root, tmp_path):
    run_dir = clone(ref, tmp_path / "nostate")
    assert rerun(shared_root, run_dir) == 0  # its own MLflow run
    uri = f"sqlite:///{shared_root}/mlflow.db"
    run_id = json.loads((run_dir / "state.json").read_text())["mlflow_run_id"]
    (run_dir / "state.json").unlink()
    assert rerun(shared_root, run_dir) == 0
    st = json.loads((run_dir / "state.json").read_text())
    assert st["mlflow_run_id"] == run_id and st["last_completed_generation"] == 1 and st["status"] == "done"
    c, runs = mlflow_runs(uri, run_dir)
    assert [r.info.run_id for r in runs] == [run_id]
    assert sorted(m.step for m in c.get_metric_history(run_id, "test_ce")) == [0, 1]


def test_resuming_against_another_store_logs_every_step_there_once(ref, shared_root, tmp_path):
    run_dir = clone(ref, tmp_path / "moved", same_identity=True)
    other = f"sqlite:///{tmp_path}/other.db"
    for _ in range(2):
        assert rerun(shared_root, run_dir, **{"tracking.uri": other}) == 0
    c, runs = mlflow_runs(other, run_dir)
    assert len(runs) == 1
    rid = runs[0].info.run_id
    for key, value in metrics_of(ref, 1).items():
        hist = c.get_metric_history(rid, key)
        assert sorted(h.step for h in hist) == [0, 1], key
    assert json.loads((run_dir / "gen_000" / "MIRRORED").read_text()) == {"uri": other, "run_id": rid}
    assert runs[0].data.params["mix.regime"] == "replace"


# ------------------------------------------------------------- 5, 6. integrity

def _flip(path: Path, offset: int, n: int = 4096) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(n))


@pytest.mark.parametrize("damage, names", [
    (lambda d: (d / "samples.jsonl").write_text((d / "samples.jsonl").read_text()[:1000]), "samples.jsonl"),
    (lambda d: _flip(d / "model" / "model.safetensors", 20000), "model.safetensors"),
    (lambda d: (d / "model" / "model.safetensors").unlink(), "model.safetensors: missing"),
    (lambda d: (d / "metrics.json").write_text((d / "metrics.json").read_text().replace("0.", "1.", 1)), "metrics.json"),
    (lambda d: shutil.rmtree(d / "data"), "data/"),
    (lambda d: (d / "manifest.json").write_text("garbage"), "manifest.json"),
])
def test_every_damage_to_a_generation_is_named(ref, tmp_path, damage, names):
    from collapse import integrity

    d = tmp_path / "gen"
    shutil.copytree(ref / "gen_001", d)
    assert integrity.verify(d) is None
    damage(d)
    problem = integrity.verify(d)
    assert problem is not None and names in problem and "\n" not in problem


def test_a_damaged_generation_is_redone_not_used(ref, shared_root, tmp_path, caplog):
    run_dir = clone(ref, tmp_path / "damaged")
    (run_dir / "gen_001" / "samples.jsonl").write_text("{}\n")
    caplog.set_level(logging.INFO, logger="collapse")
    assert rerun(shared_root, run_dir) == 0
    lines = [r.getMessage() for r in caplog.records if "redone" in r.getMessage()]
    assert len(lines) == 1 and "gen_001/samples.jsonl" in lines[0] and "generation 1 is redone" in lines[0]
    for g in (0, 1):
        assert metrics_of(run_dir, g) == metrics_of(ref, g)

    def texts(d: Path) -> list[str]:  # the same samples (their provenance names the run directory)
        return [json.loads(line)["text"] for line in (d / "gen_001" / "samples.jsonl").read_text().splitlines()]

    assert texts(run_dir) == texts(ref)


def test_damaged_weights_of_generation_0_redo_every_generation(ref, tmp_path, caplog):
    from collapse.rundir import RunDir

    run_dir = clone(ref, tmp_path / "flipped")
    _flip(run_dir / "gen_000" / "model" / "model.safetensors", 10000)
    caplog.set_level(logging.WARNING, logger="collapse")
    RunDir(run_dir, "replace", None).check_done(1)
    assert not (run_dir / "gen_000" / "DONE").exists() and not (run_dir / "gen_001" / "DONE").exists()
    assert "gen_000/model/model.safetensors" in caplog.text and "generations 0..1 are redone" in caplog.text
    assert json.loads((run_dir / "state.json").read_text())["last_completed_generation"] == -1


def test_shared_generation_0_is_copied_verified_and_counted(ref, tmp_path, caplog):
    from collapse.rundir import RunDir

    cache = tmp_path / "_cache" / "gen0-x"
    shutil.copytree(ref / "gen_000", cache)
    (cache / "MIRRORED").unlink(missing_ok=True)
    run_dir = tmp_path / "other_regime"
    run_dir.mkdir()
    (run_dir / "state.json").write_text(json.dumps({"last_completed_generation": -1, "status": "running"}))
    store = RunDir(run_dir, "accumulate", cache)
    assert store.restore_shared_gen0()
    a, b = run_dir / "gen_000" / "samples.jsonl", cache / "samples.jsonl"
    assert a.read_bytes() == b.read_bytes() and os.stat(a).st_ino != os.stat(b).st_ino  # a copy, not a link
    # 9. the status counts it: state.json says generation 0 is finished
    assert json.loads((run_dir / "state.json").read_text())["last_completed_generation"] == 0
    # damage to the run's copy does not reach the cache; a damaged cache is not reused
    a.write_text("")
    assert b.stat().st_size > 0
    shutil.rmtree(run_dir / "gen_000")
    b.write_text(b.read_text()[:500])
    caplog.set_level(logging.WARNING, logger="collapse")
    assert not RunDir(run_dir, "accumulate", cache).restore_shared_gen0()
    assert "samples.jsonl" in caplog.text and "not reused" in caplog.text
    assert not cache.exists() and not (run_dir / "gen_000").exists()


def test_status_counts_generations_on_disk(ref, tmp_path):
    from collapse.sweep.state import done_prefix

    run_dir = clone(ref, tmp_path / "st")
    assert done_prefix(run_dir, 1) == 2
    (run_dir / "gen_001" / "DONE").unlink()
    assert done_prefix(run_dir, 1) == 1


def test_unreadable_files_are_one_line(ref, shared_root, tmp_path, caplog):
    from collapse.rundir import RunDir

    # A garbage state.json is rebuilt from the run directory and the store.
    run_dir = clone(ref, tmp_path / "garbage", same_identity=True)
    (run_dir / "state.json").write_text("{not json")
    caplog.set_level(logging.WARNING, logger="collapse")
    assert rerun(shared_root, run_dir) == 0
    assert "state.json: unreadable" in caplog.text
    assert json.loads((run_dir / "state.json").read_text())["mlflow_run_id"] == \
        json.loads((ref / "state.json").read_text())["mlflow_run_id"]
    # A generation written before listings existed, with a garbage manifest: one line naming it.
    (run_dir / "gen_001" / "files.json").unlink()
    (run_dir / "gen_001" / "manifest.json").write_text("garbage")
    with pytest.raises(CollapseError) as e:
        RunDir(run_dir, "replace", None).restore(1, last=True)
    assert "gen_001" in str(e.value) and "\n" not in str(e.value) and "delete" in str(e.value)


def test_nan_metrics_are_flagged():
    from collapse.rundir import nonfinite

    assert nonfinite({"a": float("nan"), "b": None, "c": 1.0, "d": float("inf"), "e": 0}) == ["a", "b", "d"]


# --------------------------------------------------------------- 7. disk, lock

@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_line_and_marks_nothing_done(ref, shared_root, small_fs, capsys):
    run_dir = small_fs / "run"
    code = rerun(shared_root, run_dir)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert str(small_fs) in err[0] and "no space left on device" in err[0].lower()
    assert not (run_dir / "gen_001" / "DONE").exists()


def test_a_locked_store_is_waited_for_with_one_line(shared_root, tmp_path, monkeypatch, caplog, capsys):
    from collapse import tracking

    db = shared_root / "mlflow.db"
    uri = f"sqlite:///{db}"
    caplog.set_level(logging.INFO)
    holder = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        monkeypatch.setattr(tracking, "STORE_WAIT_S", 1.5)
        tracking._READY.discard(uri)
        with pytest.raises(CollapseError) as e:
            tracking.ensure_store(uri)
        assert str(db) in str(e.value) and "still locked" in str(e.value) and "\n" not in str(e.value)
        waits = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(waits) == 1 and "waiting up to" in waits[0].getMessage()
        # Through the command line: one line on stderr, exit non-zero.
        tracking._READY.discard(uri)
        assert rerun(shared_root, tmp_path / "locked") != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "still locked" in err[0]
    finally:
        holder.execute("ROLLBACK")
    # Released while waiting: the run goes on, after one log line.
    caplog.clear()
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(1.0, lambda: holder.execute("ROLLBACK")).start()
    monkeypatch.setattr(tracking, "STORE_WAIT_S", 30)
    tracking._READY.discard(uri)
    tracking.ensure_store(uri)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    holder.close()


# ------------------------------------------------------------------ 8. SIGTERM

def test_sigterm_marks_the_run_interrupted_and_it_resumes_identically(ref, shared_root, tmp_path):
    run_dir = tmp_path / "term"
    cmd = [sys.executable, "-m", "collapse.cli", "run", str(TINY),
           *tiny_overrides(shared_root, run_dir, **{"run.generations": 1})]
    p = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not (run_dir / "gen_000" / "MIRRORED").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # generation 0 restored and mirrored: generation 1 is training
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]
    assert "terminated (SIGTERM); re-run the same command to resume" in err.splitlines()[-1]
    st = json.loads((run_dir / "state.json").read_text())
    assert st["status"] == "interrupted" and not (run_dir / "gen_001" / "DONE").exists()
    c, runs = mlflow_runs(f"sqlite:///{shared_root}/mlflow.db", run_dir)
    assert [r.info.status for r in runs] == ["KILLED"]
    assert rerun(shared_root, run_dir) == 0
    assert metrics_of(run_dir, 1) == metrics_of(ref, 1)
    c, runs = mlflow_runs(f"sqlite:///{shared_root}/mlflow.db", run_dir)
    assert [r.info.status for r in runs] == ["FINISHED"]


def test_sigterm_to_a_sweep_launcher_stops_its_workers_cleanly(shared_root, tmp_path):
    from collapse.locks import is_locked
    from collapse.sweep.state import lock_path

    sweep = _sweep_file(tmp_path, "termsweep", shared_root)
    run = sweep.runs[0]
    p = subprocess.Popen([sys.executable, "-m", "collapse.cli", "sweep", str(sweep.path), "--parallel", "1"],
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 180
    while p.poll() is None and time.time() < deadline:  # the worker's run has its MLflow run: it is working
        try:
            if json.loads((run.run_dir / "state.json").read_text()).get("mlflow_run_id"):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, (out[-1000:], err[-2000:])
    assert "terminated (SIGTERM)" in err.splitlines()[-1]
    assert not is_locked(lock_path(sweep.dir, run.name)) and not is_locked(run.run_dir / ".lock")  # no worker left
    assert json.loads((run.run_dir / "state.json").read_text())["status"] == "interrupted"
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{shared_root}/mlflow.db")
    runs = c.search_runs([c.get_experiment_by_name("termsweep").experiment_id])
    assert sorted((r.data.tags.get("sweep.role", "child"), r.info.status) for r in runs) == \
        [("child", "KILLED"), ("parent", "KILLED")]


def test_a_forked_worker_dies_of_sigterm_silently():
    """A pool worker forked inside terminate_as_interrupt inherits the handler; SIGTERM (how a pool
    stops its workers) must end it as SIGTERM does, not raise Terminated with a traceback in it."""
    import signal as sig

    from collapse.signals import terminate_as_interrupt

    with terminate_as_interrupt():
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(r)
            os.dup2(w, 2)  # its stderr: a traceback would land here
            try:
                time.sleep(30)
            finally:
                os._exit(0)
        os.close(w)
        time.sleep(0.2)
        os.kill(pid, sig.SIGTERM)
        _, status = os.waitpid(pid, 0)
        err = os.read(r, 65536)
        os.close(r)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig.SIGTERM
    assert b"Terminated" not in err and b"Traceback" not in err
