"""The theory models' fast paths against the paths they replaced, side by side in one run.

    python benchmarks/bench_theory.py [--trials 20000] [--generations 100] [--subsample-generations 40]
                                      [--repeats 1] [--cases gmm subsample categorical] [--baseline DIR]

Cases (each run goes through ``collapse.theory.run_theory``, the real
generation loop, in a fresh interpreter so its peak resident memory is its own):

- ``gmm``: the 1-D two-component mixture under ``replace``, EM in the logistic
  form (default) against the general EM (``run_theory(reference=True)``).
- ``subsample``: ``accumulate_subsample`` for the gaussian and categorical
  models, positions drawn per trial (a buffer gather; counts for the
  categorical model) against a pass over every pool
  (``run_theory(pool_based=True)``). The reference's generation g costs O(g),
  so this case runs ``--subsample-generations`` generations.
- ``categorical``: ``accumulate`` for the categorical model, at a quarter of
  the generations and at all of them, to show whether memory grows with the
  generations. In-tree the reference is the pool-based one (the training set
  rebuilt every generation); with ``--baseline DIR`` (a checkout of an older
  commit, e.g. ``git archive <commit> | tar -x -C DIR``) every case also runs
  that checkout's default path, the before of a before/after.

Per run: wall seconds, CPU seconds of the process (``time.process_time``: on a
shared machine the CPU seconds move less with the load than the wall
seconds), the median wall seconds per generation, the median of the last five
generations, and the peak resident set (MiB). With ``--repeats`` > 1 the
paths alternate and the table shows medians over repeats. The last column is
old/new of the CPU seconds (and of the peak memory in the categorical case).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs in the child interpreter: one theory run, measured.
CHILD = r"""
import inspect, json, resource, sys, time
import numpy as np
from collapse.theory import load_theory_config, run_theory
args = json.loads(sys.argv[1])
cfg = load_theory_config(None, args["overrides"])
kw = {k: v for k, v in args["kwargs"].items() if k in inspect.signature(run_theory).parameters}
if len(kw) != len(args["kwargs"]):
    print(json.dumps({"missing": sorted(set(args["kwargs"]) - set(kw))}))
    sys.exit(0)
wall, cpu = [time.perf_counter()], [time.process_time()]
def tick(g, m):
    wall.append(time.perf_counter()); cpu.append(time.process_time())
run_theory(cfg, on_generation=tick, **kw)
d = np.diff(wall)
print(json.dumps({"wall": wall[-1] - wall[0], "cpu": cpu[-1] - cpu[0], "per_gen": float(np.median(d)),
                  "last5": float(np.median(d[-5:])), "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(code_dir: Path, overrides: dict, kwargs: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code_dir), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"overrides": overrides, "kwargs": kwargs})],
                         env=env, cwd=code_dir, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cases(args) -> list[tuple[str, dict, list[tuple[str, dict]]]]:
    """(case label, overrides, [(path label, run_theory kwargs), ...]) with the reference first."""
    base = {"run.trials": args.trials, "run.seed": 0}
    out = []
    if "gmm" in args.cases:
        out.append(("gmm replace", {**base, "run.model": "gmm", "run.regime": "replace", "run.generations": args.generations},
                    [("general EM", {"reference": True}), ("two-component EM", {})]))
    if "subsample" in args.cases:
        for model in ("gaussian", "categorical"):
            out.append((f"{model} accumulate_subsample",
                        {**base, "run.model": model, "run.regime": "accumulate_subsample",
                         "run.generations": args.subsample_generations},
                        [("pass over the pools", {"pool_based": True}), ("positions per trial", {})]))
    if "categorical" in args.cases:
        for gens in (max(1, args.generations // 4), args.generations):
            out.append((f"categorical accumulate, {gens} generations",
                        {**base, "run.model": "categorical", "run.regime": "accumulate", "run.generations": gens},
                        [("pool rebuilt", {"pool_based": True}), ("counts", {})]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--generations", type=int, default=100)
    ap.add_argument("--subsample-generations", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--cases", nargs="+", default=["gmm", "subsample", "categorical"],
                    choices=["gmm", "subsample", "categorical"])
    ap.add_argument("--baseline", type=Path, help="a checkout of an older commit: also run its default path")
    ap.add_argument("--skip-reference", nargs="*", default=[], metavar="CASE",
                    help="case labels (substrings) whose in-tree reference is not run (e.g. the slow pool rebuild)")
    args = ap.parse_args(argv)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"{args.trials} trials; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, "
          f"load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print()
    print("| case | path | wall s | CPU s | s/gen (median) | s/gen (last 5) | peak RSS MiB | old/new CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, overrides, paths in cases(args):
        runs = []
        if args.baseline is not None:
            runs.append((f"baseline {args.baseline.name}", args.baseline, {}))
        for i, (name, kwargs) in enumerate(paths):
            if i == 0 and any(s in label for s in args.skip_reference):
                continue
            runs.append((name, REPO, kwargs))
        results: dict[str, list[dict]] = {name: [] for name, _, _ in runs}
        for _ in range(args.repeats):
            for name, code_dir, kwargs in runs:
                results[name].append(measure(code_dir, overrides, kwargs))
        new = results[runs[-1][0]]
        for name, _, _ in runs:
            rs = results[name]
            if "missing" in rs[0]:
                print(f"| {label} | {name} | (no {', '.join(rs[0]['missing'])} in this checkout) | | | | | |")
                continue
            med = {key: statistics.median(r[key] for r in rs) for key in ("wall", "cpu", "per_gen", "last5", "rss")}
            ratio = med["cpu"] / statistics.median(r["cpu"] for r in new)
            mem = med["rss"] / statistics.median(r["rss"] for r in new)
            note = "" if rs is new else f"{ratio:.1f}×" + (f" (memory {mem:.1f}×)" if "categorical accumulate" in label else "")
            print(f"| {label} | {name} | {med['wall']:.1f} | {med['cpu']:.1f} | {med['per_gen']:.3f} | {med['last5']:.3f} "
                  f"| {med['rss']:.0f} | {note} |", flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nload average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
