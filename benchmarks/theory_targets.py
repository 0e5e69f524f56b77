"""One theory run at the issue's size (20,000 trials), timed after a one-generation warm-up.

    python benchmarks/theory_targets.py MODEL REGIME GENERATIONS [reference]

Prints one JSON line: wall and CPU seconds of ``run_theory`` (CPU seconds sum
every thread of the process). The rows of BENCHMARKS.md's idle
re-measurement; run each line in a fresh interpreter. ``reference`` times
``run_theory(reference=True)``: the numpy reference paths the compiled and
sufficient-statistics paths are tested against (the baseline of the table).
"""
import sys, time, json
from collapse.theory.config import load_theory_config
from collapse.theory.run import run_theory
model, regime, gens = sys.argv[1], sys.argv[2], int(sys.argv[3])
reference = sys.argv[4:] == ["reference"]
warm = load_theory_config(None, {"run.model": model, "run.regime": regime, "run.generations": 1, "run.trials": 100})
run_theory(warm)  # numba compiles (or loads its cache) here, outside the timing
cfg = load_theory_config(None, {"run.model": model, "run.regime": regime, "run.generations": gens, "run.trials": 20000})
t = time.perf_counter(); c = time.process_time()
r = run_theory(cfg, reference=reference)
print(json.dumps({"model": model, "regime": regime, "path": "reference" if reference else "default", "wall_s": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - c, 2)}))
