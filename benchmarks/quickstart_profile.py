"""Wall time of the quickstart (run + report) and the share spent in training, sampling and metrics.

    python benchmarks/quickstart_profile.py [--root /tmp/qs-bench] [extra overrides...]

Runs ``collapse run experiments/quickstart.yaml`` and ``collapse report
quickstart`` from an empty runs folder (so the corpus, tokenizer and every
generation are computed), then adds up each generation's ``timings.json``.
Generation 0 is computed once and shared, so it is counted once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/qs-bench")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    root = Path(a.root)
    shutil.rmtree(root, ignore_errors=True)
    exe = Path(sys.executable).parent / "collapse"
    t0 = time.perf_counter()
    subprocess.run([str(exe), "run", str(REPO / "experiments" / "quickstart.yaml"), f"run.root={root}", *a.overrides],
                   check=True)
    t_run = time.perf_counter() - t0
    subprocess.run([str(exe), "report", "quickstart", "--root", str(root), "--out", str(root / "reports")], check=True)
    wall = time.perf_counter() - t0
    parts = {"train_s": 0.0, "sample_s": 0.0, "metrics_s": 0.0}
    seen_gen0 = False
    for t in sorted((root / "quickstart").glob("*/gen_*/timings.json")):
        if t.parent.name == "gen_000":
            if seen_gen0:
                continue
            seen_gen0 = True
        for k, v in json.loads(t.read_text()).items():
            if k in parts:
                parts[k] += v
    other = wall - sum(parts.values())
    print(f"quickstart wall time {wall:.0f} s (run {t_run:.0f} s, report {wall - t_run:.0f} s)")
    for k, v in {**parts, "other_s": other}.items():
        print(f"  {k[:-2]:8s} {v:7.1f} s  {100 * v / wall:5.1f} %")


if __name__ == "__main__":
    main()
