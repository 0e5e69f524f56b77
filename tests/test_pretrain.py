"""collapse pretrain: a content-addressed base, reused, resumable after kill -9, and experiments on top of it."""

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

from collapse.cli import main
from tests.conftest import REPO, TINY, tiny_overrides

pytestmark = pytest.mark.slow


def recipe(tmp_path: Path, epochs: float = 1.0) -> Path:
    """A pretrain recipe over the tiny recipe's corpus (so the prepared data is shared)."""
    tiny = yaml.safe_load(TINY.read_text())
    doc = {"data": tiny["data"], "tokenizer": tiny["tokenizer"], "model": {"preset": "tiny"},
           "train": {"epochs": epochs, "batch_size": 8, "lr": 0.003, "precision": "fp32", "max_steps": 40},
           "sample": {"max_new_tokens": 16, "batch_size": 64},
           "pretrain": {"eval_samples": 8, "eval_temperatures": [0.8], "log_every": 5},
           "run": {"experiment": "base_tiny", "progress": False}}
    path = tmp_path / "base_tiny.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def overrides(root: Path) -> list[str]:
    return [f"run.root={root}", f"tracking.uri=sqlite:///{root}/mlflow.db"]


def weights(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(ckpt / "model.safetensors"))


@pytest.fixture(scope="module")
def built(shared_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    path = recipe(tmp)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "collapse.cli", "pretrain", str(path), *overrides(shared_root)],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return path, Path(out.stdout.strip().splitlines()[-1]), time.perf_counter() - t0


def test_pretrain_writes_a_checkpoint_a_card_and_a_training_curve(built, shared_root):
    from mlflow.tracking import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, ckpt, _ = built
    assert ckpt.is_dir() and ckpt.parent.parent == shared_root / "_pretrained"
    assert ckpt.parent.name.startswith("base_tiny-") and (ckpt.parent / "DONE").exists()
    AutoModelForCausalLM.from_pretrained(ckpt)
    assert AutoTokenizer.from_pretrained(ckpt).eos_token is not None
    marker = json.loads((ckpt / "collapse_pretrain.json").read_text())
    metrics = json.loads((ckpt.parent / "metrics.json").read_text())
    assert marker["metrics"] == metrics and 0.0 <= metrics["parse_rate_t0.8"] <= 1.0
    assert metrics["train_tokens"] == metrics["train_steps"] * 8 * 128 and metrics["test_bpb"] > 0
    card = (ckpt.parent / "README.md").read_text()
    assert "tokens seen" in card and "bits/byte" in card and "collapse pretrain" in card
    assert not (ckpt.parent / "train_state.pt").exists()
    c = MlflowClient(f"sqlite:///{shared_root}/mlflow.db")
    run = c.search_runs([c.get_experiment_by_name("pretrain").experiment_id])[0]
    curve = c.get_metric_history(run.info.run_id, "train_loss")
    assert len(curve) >= 3 and run.info.status == "FINISHED"


def test_running_it_again_reuses_the_checkpoint(built, shared_root, capsys):
    path, ckpt, first_s = built
    done = (ckpt.parent / "DONE").stat().st_mtime
    t0 = time.perf_counter()
    assert main(["pretrain", str(path), *overrides(shared_root)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(ckpt)
    assert (ckpt.parent / "DONE").stat().st_mtime == done


def test_kill_9_then_rerun_ends_with_the_weights_of_an_uninterrupted_run(built, tmp_path):
    """Killed after a training state was saved, then run again: the weights of the uninterrupted
    build (same key: the checkpoint interval does not determine the model)."""
    path, ckpt, _ = built
    root = tmp_path / "killed"
    args = [sys.executable, "-m", "collapse.cli", "pretrain", str(path), f"run.root={root}", "tracking.enabled=false",
            "pretrain.checkpoint_every_s=0.1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.time() + 300
    states = list(root.glob("_pretrained/*/train_state.pt"))
    while not states and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
        states = list(root.glob("_pretrained/*/train_state.pt"))
    assert states, "no training state was saved before the run ended"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    import torch

    assert 0 < torch.load(states[0], weights_only=False)["step"] < 40
    out = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    resumed = Path(out.stdout.strip().splitlines()[-1])
    assert resumed.parent.name == ckpt.parent.name
    a, b = weights(ckpt), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_experiment_starts_from_pretrain_recipe(built, shared_root, tmp_path):
    path, ckpt, _ = built
    run_dir = tmp_path / "on_base"
    ov = {"model.init_from": f"pretrain:{path}", "model.init_mode": "base", "run.generations": 1,
          "train.max_steps": 2, "sample.max_new_tokens": 8, "metrics.names": "[syntax_valid,distinct_n]"}
    assert main(["run", str(TINY), *tiny_overrides(shared_root, run_dir, **ov)]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["init_from"] == str(ckpt.resolve())
    metrics = json.loads((run_dir / "gen_001" / "metrics.json").read_text())
    assert not any(k.startswith("humaneval") for k in metrics)  # auto: off for a CPU base of our own
    assert (ckpt.parent / "DONE").exists()


def test_an_experiment_evaluating_on_buckets_the_base_trained_on_is_refused(built, shared_root, tmp_path, capsys):
    path, _, _ = built
    ov = {"model.init_from": f"pretrain:{path}", "data.test_fraction": 0.2}
    assert main(["run", str(TINY), *tiny_overrides(shared_root, tmp_path / "x", **ov)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.val_fraction + data.test_fraction" in err[0]
    assert not (tmp_path / "x").exists()


def test_pretrain_refuses_a_starting_checkpoint(tmp_path, capsys):
    path = recipe(tmp_path)
    assert main(["pretrain", str(path), f"run.root={tmp_path}", "model.init_from=/nowhere"]) == 2
    assert "model.init_from must be null" in capsys.readouterr().err
