"""End to end on the tiny recipe: run directory, MLflow mirror, resume after kill -9, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collapse.cli import main
from tests.conftest import TINY, tiny_overrides

pytestmark = pytest.mark.slow


def read_metrics(run_dir: Path, g: int) -> dict:
    return json.loads((run_dir / f"gen_{g:03d}" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def tiny_run(shared_root):
    run_dir = shared_root / "tiny_reference"
    assert main(["run", str(TINY), *tiny_overrides(shared_root, run_dir, **{"run.figures": "true"})]) == 0
    return run_dir


def test_run_directory_layout(tiny_run):
    from datasets import load_from_disk

    for g in range(3):
        d = tiny_run / f"gen_{g:03d}"
        assert (d / "DONE").exists()
        for part in ("data", "model", "samples", "samples.jsonl", "metrics.json", "manifest.json"):
            assert (d / part).exists(), part
        assert (d / "model" / "model.safetensors").exists()
        m = read_metrics(tiny_run, g)
        assert all(isinstance(v, (int, float)) for v in m.values())
        for key in ("test_ce", "test_bpb", "syntax_valid", "distinct_1", "distinct_4", "kl_unigram",
                    "js_unigram", "vocab_coverage", "mean_tokens", "human.syntax_valid", "human.distinct_4",
                    "prompt_ce", "compile_ok", "undefined_free", "self_bleu", "gzip_ratio", "ast_shape_distinct",
                    "identifiers_per_1k", "ppl_gen0_q50", "tail_mass", "zipf_exponent", "length_w1", "copy_rate",
                    "copy_rate_k16", "synthetic_copy_rate", "human.copy_rate", "human.ppl_gen0_q50"):
            assert key in m, key
        # Large outputs are artifacts of the generation, moved in when it is committed.
        for art in ("perplexity_gen0.jsonl", "copies.jsonl", "synthetic_copies.jsonl", "ast_nodes.json"):
            assert (d / "metrics" / art).exists(), art
        rows = (d / "metrics" / "perplexity_gen0.jsonl").read_text().splitlines()
        assert len(rows) == min(500, len(load_from_disk(str(d / "samples"))))  # a seeded subsample of metrics.subsample
    assert not list(tiny_run.glob(".metrics_gen_*"))
    assert (tiny_run / "human_reference" / "perplexity_gen0.jsonl").exists()
    assert read_metrics(tiny_run, 0)["synthetic_copy_rate"] == 0.0  # nothing synthetic before generation 0
    manifest = json.loads((tiny_run / "gen_001" / "manifest.json").read_text())
    assert manifest["counts"] == {"synthetic": {"0": manifest["total"]}}  # replace: only generation 0's samples
    samples = load_from_disk(str(tiny_run / "gen_001" / "samples"))
    assert set(samples["origin"]) == {"synthetic"} and set(samples["generation"]) == {1}
    assert samples[0]["source"].endswith("gen_001/model")
    assert json.loads(samples[0]["sampling"])["temperature"] == 1.0
    human = load_from_disk(str(tiny_run / "gen_000" / "data"))
    assert set(human["origin"]) == {"human"} and ":" in human[0]["source"] and len(human[0]["sha256"]) == 64
    state = json.loads((tiny_run / "state.json").read_text())
    assert state["last_completed_generation"] == 2 and state["status"] == "done"
    assert state["data"]["stdlib_version"]
    assert (tiny_run / "config.yaml").exists()


def test_every_metric_of_every_generation_is_in_mlflow(tiny_run, shared_root):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{shared_root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny"])
    state = json.loads((tiny_run / "state.json").read_text())
    row = runs[runs["run_id"] == state["mlflow_run_id"]]
    assert len(row) == 1
    assert row["tags.regime"].iloc[0] == "replace" and row["params.mix.regime"].iloc[0] == "replace"
    client = MlflowClient(uri)
    for g in range(3):
        for key, value in read_metrics(tiny_run, g).items():
            hist = client.get_metric_history(state["mlflow_run_id"], key)
            assert [h.value for h in hist if h.step == g] == [pytest.approx(value)], (key, g)
    assert len(client.get_metric_history(state["mlflow_run_id"], "test_ce")) == 3
    arts = {a.path for a in client.list_artifacts(state["mlflow_run_id"])}
    assert {"config.yaml", "gen_000", "figures"} <= arts
    gen1 = {a.path for a in client.list_artifacts(state["mlflow_run_id"], "gen_001/metrics")}
    assert {"gen_001/metrics/perplexity_gen0.jsonl", "gen_001/metrics/copies.jsonl"} <= gen1


def test_kill_and_resume_equals_an_uninterrupted_run(tiny_run, shared_root, tmp_path):
    """kill -9 twice at different moments, re-run the same command, compare
    every generation's metrics with the uninterrupted run."""
    run_dir = tmp_path / "resumed"
    # Without the shared generation 0, the resumed run recomputes everything itself.
    cmd = [sys.executable, "-m", "collapse.cli", "run", str(TINY),
           *tiny_overrides(shared_root, run_dir, **{"run.share_gen0": "false"})]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def run_until(path: Path, extra_delay: float) -> None:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while not path.exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(extra_delay)
        p.send_signal(signal.SIGKILL)
        p.wait()

    run_until(run_dir / "gen_000" / "model", 0.0)  # in the middle of writing generation 0
    assert not (run_dir / "gen_000" / "DONE").exists()
    run_until(run_dir / "gen_001" / "data", 0.0)  # generation 0 done, generation 1 being written
    assert (run_dir / "gen_000" / "DONE").exists() and not (run_dir / "gen_002" / "DONE").exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for g in range(3):
        assert read_metrics(run_dir, g) == read_metrics(tiny_run, g), g
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / "state.json").read_text())
    steps = [m.step for m in MlflowClient(f"sqlite:///{shared_root}/mlflow.db").get_metric_history(state["mlflow_run_id"], "test_ce")]
    assert sorted(steps) == [0, 1, 2]  # one MLflow run, each generation logged once


def test_generation_zero_is_shared_between_regimes(tiny_run, shared_root, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="collapse")
    out = tmp_path / "two"
    assert main(["run", str(TINY), *tiny_overrides(shared_root, out, **{"mix.regime": "[accumulate,fixed_fraction]",
                                                                         "run.generations": 1})]) == 0
    assert "generation 0 shared" in caplog.text
    for regime in ("accumulate", "fixed_fraction"):
        assert read_metrics(out / regime, 0) == read_metrics(tiny_run, 0)
    acc = json.loads((out / "accumulate" / "gen_001" / "manifest.json").read_text())
    n = acc["counts"]["human"]["-1"]
    assert acc["counts"] == {"human": {"-1": n}, "synthetic": {"0": n}}
    ff = json.loads((out / "fixed_fraction" / "gen_001" / "manifest.json").read_text())
    assert ff["counts"]["human"]["-1"] == round(0.1 * n) and ff["total"] == n


def test_report_draws_figures(tiny_run, shared_root, tmp_path):
    assert main(["report", "tiny", "--root", str(shared_root), "--tracking-uri", f"sqlite:///{shared_root}/mlflow.db",
                 "--out", str(tmp_path)]) == 0
    for name in ("metrics.png", "metrics.pdf", "metrics.csv", "perplexity_gen0.png", "perplexity_gen0.pdf"):
        assert (tmp_path / "tiny" / name).stat().st_size > 1000


def test_resuming_with_a_different_config_is_refused(tiny_run, shared_root, capsys):
    rc = main(["run", str(TINY), *tiny_overrides(shared_root, tiny_run, **{"train.lr": 0.01})])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "different config (train.lr: 0.003 there, 0.01 now)" in err and "\n" not in err


@pytest.mark.parametrize("overrides, message", [
    ({"data.source": "/no/such/corpus"}, "no such file or directory"),
    ({"mix.regime": "sideways"}, "mix.regime: expected one of"),
    ({"model.preset": "huge"}, "model.preset: expected one of"),
    ({"mix.regime": "fresh", "data.train_size": 400, "run.generations": 2}, "fresh: 2 generations need"),
    ({"data.train_size": 100000}, "data.train_size: 100000 requested"),
    ({"mix.synthetic_size": 600}, "the reference split holds"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(overrides, message, shared_root, tmp_path, capsys):
    run_dir = tmp_path / "never"
    rc = main(["run", str(TINY), *tiny_overrides(shared_root, run_dir, **overrides)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not run_dir.exists()


def test_empty_corpus_and_malformed_yaml(shared_root, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.py").write_text("def f():\n    return 1\n")  # shorter than data.min_chars
    rc = main(["run", str(TINY), *tiny_overrides(shared_root, tmp_path / "x", **{"data.source": corpus})])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "empty after filtering" in err and len(err.splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: {generations: 2\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "malformed YAML" in err and len(err.splitlines()) == 1


def test_cli_entry_point_exit_code():
    r = subprocess.run([sys.executable, "-m", "collapse.cli", "run", "/no/such.yaml"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "collapse: error: config file not found: /no/such.yaml"


def _weights(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("mode, same_start", [("continue", True), ("base", True), ("fresh", False)])
def test_init_modes(mode, same_start, shared_root, tmp_path):
    """One optimizer step at a vanishing learning rate: generation 1 ends where
    it started, so its weights reveal the starting point."""
    out = tmp_path / mode
    ov = {"model.init_mode": mode, "run.generations": 1, "train.max_steps": 1, "train.lr": 1e-12,
          "sample.max_new_tokens": 8, "metrics.names": "[syntax_valid]"}
    assert main(["run", str(TINY), *tiny_overrides(shared_root, out, **ov)]) == 0
    w0, w1 = _weights(out / "gen_000" / "model"), _weights(out / "gen_001" / "model")
    close = all(torch_allclose(w0[k], w1[k]) for k in w0)
    assert close == same_start


def torch_allclose(a, b) -> bool:
    import torch

    return bool(torch.allclose(a.float(), b.float(), atol=1e-6))


def test_prompted_sampling_starts_from_held_out_signatures(shared_root, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "prompted"
    # Three epochs and temperature 0.5: enough for the tiny model to have learned what follows a
    # signature (98 % of completions indented; 24 % when the prompt ends with its bare newline).
    ov = {"sample.prompt": "signature", "run.generations": 0, "sample.max_new_tokens": 8, "train.epochs": 3,
          "sample.temperature": 0.5, "metrics.names": "[syntax_valid]"}
    assert main(["run", str(TINY), *tiny_overrides(shared_root, out, **ov)]) == 0
    samples = load_from_disk(str(out / "gen_000" / "samples"))
    human = load_from_disk(str(out / "gen_000" / "data"))
    for row in samples:
        assert row["text"].startswith(row["prompt"]) and row["prompt"] == row["prompt"].rstrip()
        assert row["prompt"].lstrip().startswith(("def ", "async def ", "@"))
    # The model writes the newline and the indentation itself: the body goes on, indented.
    rests = [r["text"][len(r["prompt"]):] for r in samples if r["prompt"].rstrip().endswith(":")]
    indented = sum(bool(re.match(r"[ \t]*\n+[ \t]+\S", t)) for t in rests) / len(rests)
    assert indented >= 0.8, indented
    # Prompts come from the human training pool, never from the validation or test split.
    from collapse.lm.generator import prompt_of

    cache = Path(json.loads((out / "state.json").read_text())["data"]["card"]).parent
    held_out = list(load_from_disk(str(cache / "validation"))["text"]) + list(load_from_disk(str(cache / "test"))["text"])
    prompts = {r["prompt"] for r in samples}
    assert prompts <= {prompt_of(t, 1) for t in human["text"]}
    assert not prompts & ({prompt_of(t, 1) for t in held_out} - {prompt_of(t, 1) for t in human["text"]})


def test_init_from_a_saved_checkpoint_uses_its_tokenizer(tiny_run, shared_root, tmp_path):
    """Every generation's model/ is a standalone checkpoint (weights + tokenizer),
    so a run can fine-tune it: model.init_from with init_mode base."""
    from safetensors.torch import load_file

    ckpt = tiny_run / "gen_002" / "model"
    out = tmp_path / "finetune"
    # A pretrained checkpoint turns HumanEval on (metrics.humaneval: auto); two problems keep it cheap.
    ov = {"model.init_from": ckpt, "model.init_mode": "base", "run.generations": 1, "train.max_steps": 1,
          "train.lr": 1e-12, "sample.max_new_tokens": 8, "metrics.names": "[test_ce]",
          "metrics.humaneval_problems": 2, "metrics.humaneval_n": 2, "metrics.humaneval_k": "[1,2]",
          "metrics.humaneval_max_new_tokens": 16}
    assert main(["run", str(TINY), *tiny_overrides(shared_root, out, **ov)]) == 0
    m = read_metrics(out, 1)
    assert 0.0 <= m["humaneval_pass_at_1"] <= m["humaneval_pass_at_2"] <= 1.0
    assert len((out / "gen_001" / "metrics" / "humaneval.jsonl").read_text().splitlines()) == 2
    start = load_file(str(ckpt / "model.safetensors"))
    for g in range(2):
        w = load_file(str(out / f"gen_{g:03d}" / "model" / "model.safetensors"))
        assert all(torch_allclose(start[k], w[k]) for k in start)  # both generations began at the checkpoint
    assert (out / "gen_000" / "model" / "tokenizer.json").read_text() == (ckpt / "tokenizer.json").read_text()
    rc = main(["run", str(TINY), *tiny_overrides(shared_root, tmp_path / "no", **{"model.init_from": tmp_path})])
    assert rc == 2


def test_a_run_records_what_its_numbers_depend_on(tiny_run, shared_root):
    """Precision actually used, CPU capability and flags, thread count: in state.json and as MLflow tags."""
    import torch
    from mlflow.tracking import MlflowClient

    st = json.loads((tiny_run / "state.json").read_text())
    rt = st["runtime"]
    assert rt["precision"] in ("fp32", "bf16") and rt["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability())
    assert rt["device"] == "cpu" and int(rt["torch_threads"]) >= 1 and "cpu_flags" in rt
    run = MlflowClient(f"sqlite:///{shared_root}/mlflow.db").get_run(st["mlflow_run_id"])
    assert run.data.tags["runtime.precision"] == rt["precision"]
    assert run.data.tags["runtime.cpu_capability"] == rt["cpu_capability"]
