"""Wall-clock benchmark of the theory models: K trials × N generations per (model, regime).

    python -m collapse.theory.bench [--trials 20000] [--generations 100] [--models ...] [--regimes ...] [--compare]

Prints a Markdown table for ``BENCHMARKS.md``. ``--compare`` also runs the
pool-based reference (the accumulated training set rebuilt every generation,
``run_theory(pool_based=True)``) beside the default path, each in a fresh
interpreter, and reports the ratio, the median seconds per generation and
the peak resident memory of each process. Each run goes through the real
generation loop (``collapse.loop.run_generations``) with the default
model options, so the numbers include planning, plan application and
measurement. The models follow Shumailov et al. 2024, Gerstgrasser et al.
2024, Dohmatob et al. 2024 and Bertrand et al. 2024 (see ``collapse.theory``).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys

from collapse.theory.config import load_theory_config
from collapse.theory.models import MODELS
from collapse.theory.run import run_theory


def bench(model: str, regime: str, trials: int, generations: int, seed: int = 0,
          pool_based: bool = False) -> tuple[float, float]:
    """(seconds, median seconds per generation) of one run."""
    import time

    import numpy as np

    cfg = load_theory_config(None, {"run.model": model, "run.regime": regime, "run.trials": trials,
                                    "run.generations": generations, "run.seed": seed})
    stamps = [time.perf_counter()]
    seconds = run_theory(cfg, pool_based=pool_based, on_generation=lambda g, m: stamps.append(time.perf_counter())).seconds
    return seconds, float(np.median(np.diff(stamps)))


def bench_isolated(model: str, regime: str, trials: int, generations: int, pool_based: bool) -> tuple[float, float, float]:
    """``bench`` in a fresh interpreter: (seconds, median s/generation, peak resident MiB of that process)."""
    import json
    import subprocess

    code = ("import json, resource; from collapse.theory.bench import bench; "
            f"s, med = bench({model!r}, {regime!r}, {trials}, {generations}, pool_based={pool_based}); "
            "print(json.dumps([s, med, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m collapse.theory.bench", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20000)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--regimes", nargs="+", default=["replace", "accumulate"])
    p.add_argument("--compare", action="store_true", help="also run the pool-based reference and report ratios")
    args = p.parse_args(argv)
    print(f"{args.trials} trials × {args.generations} generations, default model options; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print()
    if args.compare:
        print("| model | regime | pool-based s | s/gen (median) | peak RSS MiB | sufficient stats s | s/gen (median) | peak RSS MiB | speed-up |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    else:
        print("| model | regime | seconds |")
        print("|---|---|---:|")
    for model in args.models:
        for regime in args.regimes:
            if args.compare:
                old = bench_isolated(model, regime, args.trials, args.generations, pool_based=True)
                new = bench_isolated(model, regime, args.trials, args.generations, pool_based=False)
                print(f"| {model} | {regime} | {old[0]:.1f} | {old[1]:.3f} | {old[2]:.0f} | {new[0]:.1f} | {new[1]:.3f} "
                      f"| {new[2]:.0f} | {old[0] / new[0]:.1f}× |", flush=True)
            else:
                s = bench(model, regime, args.trials, args.generations)[0]
                print(f"| {model} | {regime} | {s:.1f} |", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)
    print(f"\npeak resident memory of the process: {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
