"""The MLflow mirror of a run directory, on a temporary sqlite store: what a generation logs, once."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from collapse.callbacks import MirrorToMLflow
from collapse.generator import GenerationRecord
from collapse.mixing import HUMAN, Take
from collapse.rundir import RunDir
from collapse.tracking import RunMirror


def rows(origin: str, gen: int, n: int) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": [f"x = {i}" for i in range(n)], "origin": [origin] * n,
                                       "generation": [gen] * n, "source": ["t"] * n,
                                       "sha256": [f"{gen + 1:02x}{i:062x}" for i in range(n)]})


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def rundir(tmp_path) -> RunDir:
    datasets.disable_progress_bars()
    rd = RunDir(tmp_path / "exp" / "replace_s0", "replace")
    rd.claim("run: {}\n")
    for g in range(2):
        rd.staging(g).mkdir()
        (rd.staging(g) / "values.jsonl").write_text("{}\n")
        rd.commit(GenerationRecord(g, [Take(HUMAN, 2)], {"loss": 1.0 + g, "acc": 0.5}, rows("synthetic", g, 2),
                                   rows("human", -1, 2), timings={"train_s": 2.0 + g}))
    return rd


def mirror_for(uri: str, rundir: RunDir, tmp_path: Path) -> RunMirror:
    return RunMirror(uri, "tracking_test", rundir.name, artifact_root=tmp_path / "mlartifacts", key=rundir.run_key())


def history(mirror: RunMirror, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in mirror.client.get_metric_history(mirror.run_id, key))


def test_a_generation_is_mirrored_once_with_its_metrics_timings_and_artifacts(uri, rundir, tmp_path):
    mirror = mirror_for(uri, rundir, tmp_path)
    cb = MirrorToMLflow(mirror, rundir, prev_target={})
    for g in range(2):
        cb.on_generation(rundir.restore(g))
    assert history(mirror, "loss") == [(0, 1.0), (1, 2.0)]
    assert history(mirror, "time.train_s") == [(0, 2.0), (1, 3.0)]
    arts = {a.path for a in mirror.client.list_artifacts(mirror.run_id, "gen_001")}
    assert arts == {"gen_001/samples.jsonl", "gen_001/manifest.json", "gen_001/metrics"}
    assert rundir.mirrored_to(1, uri, mirror.run_id, {})
    # Again (a resumed run): nothing is logged twice.
    for g in range(2):
        cb.on_generation(rundir.restore(g))
    assert history(mirror, "loss") == [(0, 1.0), (1, 2.0)]
    mirror.finish()


def test_a_marker_for_another_run_does_not_skip_mirroring(uri, rundir, tmp_path):
    rundir.mark_mirrored(0, uri, "some-other-run")  # e.g. a generation 0 shared from another regime
    mirror = mirror_for(uri, rundir, tmp_path)
    MirrorToMLflow(mirror, rundir, prev_target={}).on_generation(rundir.restore(0))
    assert history(mirror, "loss") == [(0, 1.0)]
    assert rundir.mirrored_to(0, uri, mirror.run_id, {})
    mirror.finish()


def test_a_marked_generation_is_skipped(uri, rundir, tmp_path):
    mirror = mirror_for(uri, rundir, tmp_path)
    rundir.mark_mirrored(0, uri, mirror.run_id)
    MirrorToMLflow(mirror, rundir, prev_target={}).on_generation(rundir.restore(0))
    assert history(mirror, "loss") == []
    mirror.finish()


def test_the_run_is_found_again_by_its_key(uri, rundir, tmp_path):
    first = mirror_for(uri, rundir, tmp_path)
    first.finish()
    again = mirror_for(uri, rundir, tmp_path)  # state.json lost its run id: found by the run key tag
    assert again.run_id == first.run_id and not again.created
    again.finish()
