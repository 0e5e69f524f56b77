#!/usr/bin/env python
"""Regenerate the golden numbers of the seeded tiny run (tests/golden/tiny-<CPU>.json).

    python scripts/regen_golden.py            # runs experiments/tiny.yaml, seed 0, writes the file
    python scripts/regen_golden.py --check    # compares instead of writing (what tests/test_golden.py does)

A run is identical to another only under the same seed, torch thread count,
precision actually used and CPU kind (the vector instructions torch's kernels
use change the order of floating-point sums). The golden run pins seed 0, one
thread and fp32, and the file is named by the CPU capability torch reports
(``AVX2``, ``AVX512``, ...), so each kind of CPU has its own. Run this only on
purpose, when a change is meant to move the numbers, and commit the diff with
the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOLDEN_DIR = REPO / "tests" / "golden"
OVERRIDES = {"run.seed": 0, "run.threads": 1, "train.precision": "fp32", "run.generations": 2}
# Relative tolerance: runs under the same conditions are bit-identical; this only absorbs JSON round trips.
RTOL = 1e-9
SKIP_PREFIXES = ("time.",)  # wall-clock timings differ from run to run


def cpu_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def golden_path() -> Path:
    return GOLDEN_DIR / f"tiny-{cpu_capability()}.json"


def run_tiny(root: Path) -> list[dict[str, float]]:
    from collapse.cli import main

    run_dir = root / "golden"
    args = ["run", str(REPO / "experiments" / "tiny.yaml"), f"run.root={root}", f"run.dir={run_dir}",
            f"tracking.uri=sqlite:///{root}/mlflow.db", *(f"{k}={v}" for k, v in OVERRIDES.items())]
    if main(args) != 0:
        raise SystemExit("the tiny run failed")
    out = []
    for g in range(OVERRIDES["run.generations"] + 1):
        metrics = json.loads((run_dir / f"gen_{g:03d}" / "metrics.json").read_text())
        out.append({k: v for k, v in sorted(metrics.items()) if not k.startswith(SKIP_PREFIXES)})
    return out


def compare(expected: list[dict], actual: list[dict], rtol: float = RTOL) -> list[str]:
    """Differences as lines ``gen G key: expected → actual``; empty when the numbers agree."""
    diffs = []
    if len(expected) != len(actual):
        return [f"{len(expected)} generations expected, {len(actual)} found"]
    for g, (e, a) in enumerate(zip(expected, actual)):
        for k in sorted(set(e) | set(a)):
            ev, av = e.get(k), a.get(k)
            if ev is None or av is None:
                if not (ev is None and av is None):
                    diffs.append(f"gen {g} {k}: {ev!r} → {av!r}")
                continue
            if isinstance(ev, float) and isinstance(av, float) and math.isnan(ev) and math.isnan(av):
                continue
            if not math.isclose(ev, av, rel_tol=rtol, abs_tol=1e-12):
                diffs.append(f"gen {g} {k}: {ev!r} → {av!r}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the golden file instead of writing it")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="collapse-golden-") as tmp:
        actual = run_tiny(Path(tmp))
    path = golden_path()
    if args.check:
        if not path.exists():
            print(f"no golden file for this CPU ({path.name})")
            return 2
        diffs = compare(json.loads(path.read_text())["generations"], actual)
        print("\n".join(diffs) or "golden numbers match")
        return 1 if diffs else 0
    import torch

    import collapse

    doc = {"recipe": "experiments/tiny.yaml", "overrides": OVERRIDES, "cpu_capability": cpu_capability(),
           "torch": torch.__version__, "collapse": collapse.__version__, "rtol": RTOL, "generations": actual}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
