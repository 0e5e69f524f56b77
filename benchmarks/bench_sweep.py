"""Overhead of the sweep machinery per run: launch to first training step.

    python -m benchmarks.bench_sweep [--repeats 3] [--no-slurm]

One-run sweeps of the tiny recipe (generation 0 only, not shared, human data
and tokenizer cached beforehand) are launched one after another:

- ``collapse run`` in a fresh process, the baseline: process start to first
  optimizer step (imports, data from the cache, tokenizer, model, MLflow run);
- ``local`` executor: ``launch()`` to first step. The first launch starts the
  fork server (which imports torch & co once); later launches fork from it;
- ``slurm`` executor (when a Slurm answers): submission through submitit to
  first step: sbatch, scheduling, job start, imports, the run's own start.

The first step is seen by a global torch optimizer hook (the worker records it
in ``_logs/<run>.attempts.jsonl``). Prints each sample and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "experiments" / "tiny.yaml"
OVERRIDES = {"run.generations": 0, "run.share_gen0": False, "data.train_size": 160, "sample.max_new_tokens": 32,
             "metrics.names": ["test_ce"], "run.threads": 1}

BASELINE = r'''
import sys, time
t0 = float(sys.argv[1])
from torch.optim.optimizer import register_optimizer_step_pre_hook
first = []
def hook(opt, args, kwargs):
    if not first:
        first.append(time.time())
register_optimizer_step_pre_hook(hook)
from collapse.registries import load_config
from collapse.experiment import run_experiment
run_experiment(load_config(sys.argv[2], sys.argv[3:]))
print(first[0] - t0)
'''


def write_sweep(folder: Path, name: str, root: Path, seed: int) -> Path:
    base = {"recipe": str(TINY), "overrides": {**OVERRIDES, "run.root": str(root), "run.seed": seed,
                                               "tracking.uri": f"sqlite:///{root}/mlflow.db"}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": base, "slurm": {"cpus_per_task": 1, "timeout_min": 20}}))
    return path


def first_step_after_launch(sweep) -> tuple[float, float]:
    """(launch → first step, launch → worker start) of a one-run sweep, from its attempts record."""
    from collapse.sweep.worker import attempts_path

    rec = [json.loads(line) for line in attempts_path(sweep.dir, sweep.runs[0].name).read_text().splitlines()]
    done = [r for r in rec if r.get("t_first_step")][-1]
    return done["t_first_step"], done["t_start"]


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def slurm_up() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return p.returncode == 0 and any(s.startswith(("idle", "mixed")) for s in p.stdout.split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-slurm", action="store_true")
    a = ap.parse_args()
    from collapse.sweep import launch, load_sweep

    work = Path(tempfile.mkdtemp(prefix="bench_sweep-"))
    root = work / "runs"
    print(f"machine: {os.cpu_count()} cores; runs in {root}")
    # Human data and tokenizer into the cache first: not part of any overhead measured.
    from collapse.registries import load_config
    from collapse.experiment import Experiment

    Experiment(load_config(TINY, [f"run.root={root}", "data.train_size=160"]))

    res: dict[str, list[float]] = {"collapse run (fresh process)": [], "local, first launch (starts the fork server)": [],
                                   "local, later launches": [], "slurm": []}
    starts: dict[str, list[float]] = {"local": [], "slurm": []}
    for i in range(a.repeats):
        t0 = time.time()
        out = subprocess.run([sys.executable, "-c", BASELINE, str(t0), str(TINY), f"run.root={root}",
                              f"run.dir={root}/baseline_{i}", f"tracking.uri=sqlite:///{root}/mlflow.db",
                              *(f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in OVERRIDES.items())],
                             capture_output=True, text=True, cwd=REPO, check=True)
        res["collapse run (fresh process)"].append(float(out.stdout.strip().splitlines()[-1]))
        print(f"collapse run          {res['collapse run (fresh process)'][-1]:6.2f}s")
    for i in range(a.repeats + 1):
        sweep = load_sweep(write_sweep(work, f"local_{i}", root, seed=i))
        t0 = time.time()
        launch(sweep, "local", echo=lambda s: None)
        first, start = first_step_after_launch(sweep)
        key = "local, first launch (starts the fork server)" if i == 0 else "local, later launches"
        res[key].append(first - t0)
        starts["local"].append(start - t0)
        print(f"local launch {i}        {first - t0:6.2f}s (worker started after {start - t0:.2f}s)")
    if not a.no_slurm and slurm_up():
        for i in range(a.repeats):
            sweep = load_sweep(write_sweep(work, f"slurm_{i}", root, seed=100 + i))
            t0 = time.time()
            launch(sweep, "slurm", wait=True, poll_s=1, echo=lambda s: None)
            first, start = first_step_after_launch(sweep)
            res["slurm"].append(first - t0)
            starts["slurm"].append(start - t0)
            print(f"slurm launch {i}        {first - t0:6.2f}s (worker started after {start - t0:.2f}s)")
    else:
        print("slurm: skipped (no Slurm answering; scripts/slurm-local.sh start runs one)")
    print("\nlaunch → first training step, medians:")
    for k, v in res.items():
        if v:
            print(f"  {k:48s} {median(v):6.2f}s  (n={len(v)})")
    base = median(res["collapse run (fresh process)"])
    if res["local, later launches"]:
        print(f"  sweep overhead over collapse run, local warm: {median(res['local, later launches']) - base:+.2f}s")
    if res["slurm"]:
        print(f"  sweep overhead over collapse run, slurm:      {median(res['slurm']) - base:+.2f}s")
        print(f"  slurm: submission → worker start, median {median(starts['slurm']):.2f}s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
