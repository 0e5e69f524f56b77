"""The run directory on its own (no model, no training): paths, commit order, resume points, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from collapse.errors import CollapseError
from collapse.generator import GenerationRecord
from collapse.mixing import HUMAN, Take
from collapse.rundir import RunDir, RunDirReader, gen_name, nonfinite


def rows(origin: str, gen: int, n: int) -> datasets.Dataset:
    texts = [f"def f_{origin}_{gen}_{i}():\n    return {i}" for i in range(n)]
    return datasets.Dataset.from_dict({"text": texts, "origin": [origin] * n, "generation": [gen] * n,
                                       "source": ["t"] * n, "sha256": [f"{gen + 1:02x}{i:062x}" for i in range(n)]})


class Saver:
    """Stands in for a Checkpointable generator: records where it saved."""

    def __init__(self):
        self.saved: list[Path] = []

    def save(self, path: Path) -> None:
        path.mkdir(parents=True)
        (path / "weights.bin").write_bytes(b"w" * 8)
        self.saved.append(path)


def record(g: int, metrics: dict | None = None) -> GenerationRecord:
    plan = [Take(HUMAN, 4)]
    return GenerationRecord(g, plan, metrics if metrics is not None else {"loss": 1.0 + g}, samples=rows("synthetic", g, 3),
                            train=rows("human", -1, 4), timings={"train_s": 0.5})


@pytest.fixture(autouse=True)
def _quiet():
    datasets.disable_progress_bars()


@pytest.fixture
def rd(tmp_path) -> RunDir:
    d = RunDir(tmp_path / "exp" / "replace_s0", "replace")
    d.claim("run:\n  seed: 0\n", experiment="exp", regime="replace", seed=0, generations=2, data={"key": "k"})
    return d


def test_paths_follow_the_layout(tmp_path):
    r = RunDirReader(tmp_path / "run")
    assert gen_name(7) == "gen_007"
    assert r.gen_dir(3) == tmp_path / "run" / "gen_003"
    assert r.model_path(0) == tmp_path / "run" / "gen_000" / "model"
    assert r.samples_path(2) == tmp_path / "run" / "gen_002" / "samples"
    assert r.samples_jsonl(2).name == "samples.jsonl" and r.manifest_path(2).name == "manifest.json"
    assert r.staging(1) == tmp_path / "run" / ".metrics_gen_001"
    assert r.state_path.name == "state.json" and r.config_path.name == "config.yaml"
    assert r.reference_dir.name == "human_reference" and r.lock_path.name == ".lock"
    assert r.model_ref(4) == "run/gen_004/model"
    assert r.card_path(0) == tmp_path / "run" / "gen_000" / "data" / "README.md"


def test_claim_writes_config_key_and_state(rd):
    assert rd.config_path.read_text() == "run:\n  seed: 0\n"
    key = rd.run_key()
    assert len(key) == 32
    st = rd.state()
    assert st["status"] == "running" and st["last_completed_generation"] == -1 and st["data"] == {"key": "k"}
    rd.claim("run:\n  seed: 0\n")  # claiming again keeps the run's identity
    assert rd.run_key() == key


def test_commit_writes_every_file_and_done_last(rd, monkeypatch):
    order: list[str] = []
    import collapse.rundir as mod

    real_record = mod.integrity.record

    def spy(d):
        order.append("files.json")
        assert not (d / "DONE").exists()  # the listing comes before the marker
        for f in ("metrics.json", "timings.json", "manifest.json", "samples.jsonl", "data", "samples", "model"):
            assert (d / f).exists(), f
        return real_record(d)

    monkeypatch.setattr(mod.integrity, "record", spy)
    rd.staging(0).mkdir()
    (rd.staging(0) / "values.jsonl").write_text("{}\n")
    saver = Saver()
    rd.commit(record(0), saver)
    d = rd.gen_dir(0)
    assert order == ["files.json"] and (d / "DONE").exists()
    assert saver.saved == [rd.model_path(0)]
    assert (d / "metrics" / "values.jsonl").exists() and not rd.staging(0).exists()  # staged artifacts moved in
    assert rd.metrics(0) == {"loss": 1.0} and rd.timings(0) == {"train_s": 0.5}
    assert [json.loads(line)["text"] for line in rd.samples_jsonl(0).read_text().splitlines()] == rows("synthetic", 0, 3)["text"]
    m = rd.manifest(0)
    assert m["total"] == 4 and m["pools"] == {HUMAN: 4} and m["counts"] == {"human": {"-1": 4}}
    assert "Training set of generation 0" in rd.card_path(0).read_text()
    assert rd.state()["last_completed_generation"] == 0
    assert rd.checkpoint(0) == rd.model_path(0) and rd.checkpoint(1) is None


def test_a_failed_commit_leaves_no_done_and_is_redone(rd):
    class Broken:
        def save(self, path: Path) -> None:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        rd.commit(record(0), Broken())
    assert rd.gen_dir(0).exists() and not rd.is_done(0)  # half-written, unmarked
    assert rd.state()["last_completed_generation"] == -1
    rd.commit(record(0), Saver())  # the next attempt clears the leftovers first
    assert rd.is_done(0) and sorted(p.name for p in rd.model_path(0).iterdir()) == ["weights.bin"]


def test_resume_points_count_only_an_unbroken_prefix_with_done(rd):
    for g in range(3):
        rd.commit(record(g), Saver())
    assert rd.finished_generations() == [0, 1, 2] and rd.done_prefix() == 2
    (rd.gen_dir(1) / "DONE").unlink()  # generation 1 without its marker: redone, and what follows it
    assert rd.finished_generations() == [0, 2] and rd.done_prefix() == 0 and not rd.is_done(1)
    assert rd.checkpoint(1) is None
    # claiming again records what the folders say, not what state.json said
    rd.claim("run:\n  seed: 0\n")
    assert rd.state()["last_completed_generation"] == 0


def test_restore_reads_a_generation_back(rd):
    rd.commit(record(0, {"loss": 0.25}), Saver())
    rec = rd.restore(0, last=True)
    assert rec.cached and rec.generation == 0 and rec.metrics == {"loss": 0.25} and rec.timings == {"train_s": 0.5}
    assert rec.plan == [Take(HUMAN, 4)] and rec.samples["text"] == rows("synthetic", 0, 3)["text"]
    (rd.manifest_path(0)).write_text("garbage")
    with pytest.raises(CollapseError, match="gen_000.*unreadable.*delete"):
        rd.restore(0, last=True)


def test_check_done_redoes_a_damaged_generation_and_those_after_it(rd):
    for g in range(3):
        rd.commit(record(g), Saver())
    (rd.model_path(1) / "weights.bin").write_bytes(b"x" * 8)  # same size, other content
    rd.check_done(2)
    assert rd.finished_generations() == [0]
    assert rd.state()["last_completed_generation"] == 0


def test_samples_and_samples_before(rd):
    rd.commit(record(0), Saver())
    rd.commit(record(1), Saver())
    assert rd.samples(1)["text"] == rows("synthetic", 1, 3)["text"]
    assert rd.samples_before(2) == {0: rows("synthetic", 0, 3)["text"], 1: rows("synthetic", 1, 3)["text"]}
    assert rd.samples_before(0) == {}
    with pytest.raises(CollapseError, match="generation 5 .* does not exist .*finished generations: 0, 1"):
        rd.samples(5)


def test_nonfinite_metrics_are_flagged_in_the_committed_metrics(rd):
    rd.commit(record(0, {"a": float("nan"), "b": 1.0}), Saver())
    assert rd.metrics(0)["nonfinite_metrics"] == 1.0
    assert nonfinite({"a": float("inf"), "b": None, "c": 2}) == ["a", "b"]


def test_state_updates_are_atomic_and_mirrored_markers_name_their_target(rd):
    rd.update_state(status="done")
    assert rd.state()["status"] == "done" and not list(rd.path.glob("*.tmp"))
    rd.commit(record(0), Saver())
    assert not rd.mirrored_to(0, "sqlite:///a", "r1", {})
    rd.mark_mirrored(0, "sqlite:///a", "r1")
    assert rd.mirrored_to(0, "sqlite:///a", "r1", {}) and not rd.mirrored_to(0, "sqlite:///a", "r2", {})
    (rd.gen_dir(0) / "MIRRORED").write_text("")  # a marker from before markers named their target
    assert rd.mirrored_to(0, "u", "r", {"uri": "u", "run_id": "r"})


def test_mark_stopped_only_replaces_running(rd):
    rd.mark_stopped("failed")
    assert rd.state()["status"] == "failed"
    rd.update_state(status="done")
    rd.mark_stopped("interrupted")
    assert rd.state()["status"] == "done"
