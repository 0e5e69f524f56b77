"""Wall-clock benchmark of the theory models: K trials × N generations per (model, regime).

    python -m collapse.theory.bench [--trials 20000] [--generations 100] [--models ...] [--regimes ...]

Prints a Markdown table for ``BENCHMARKS.md``. Each run goes through the real
generation loop (``collapse.orchestrator.run_generations``) with the default
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

from collapse.theory.config import MODELS, load_theory_config
from collapse.theory.run import run_theory


def bench(model: str, regime: str, trials: int, generations: int, seed: int = 0) -> float:
    cfg = load_theory_config(None, {"run.model": model, "run.regime": regime, "run.trials": trials,
                                    "run.generations": generations, "run.seed": seed})
    return run_theory(cfg).seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m collapse.theory.bench", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20000)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--regimes", nargs="+", default=["replace", "accumulate"])
    args = p.parse_args(argv)
    print(f"{args.trials} trials × {args.generations} generations, default model options; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print()
    print("| model | regime | seconds |")
    print("|---|---|---:|")
    for model in args.models:
        for regime in args.regimes:
            s = bench(model, regime, args.trials, args.generations)
            print(f"| {model} | {regime} | {s:.1f} |", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)
    print(f"\npeak resident memory of the process: {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
