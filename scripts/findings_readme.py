"""Regenerate the README's "Findings" block from the committed replication results.

    python scripts/findings_readme.py [--root runs] [--check]

Reads ``reports/replications/findings.csv`` (written by ``collapse findings``
in ``scripts/replicate.sh``) and rewrites the README between
``<!-- findings:begin -->`` and ``<!-- findings:end -->``: the machine the
suite ran on, one row per claim (effect with its 95 % interval, Welch's p,
seeds per group, verdict), the sweeps' wall times, and one figure. The
machine (CPU, torch capability, precision, threads per run) is read from the
runs' ``state.json`` under ``--root`` and kept in
``reports/replications/machine.json``, so ``--check`` needs no run
directories: it rebuilds the block from the committed files and exits 1 if the
README differs.

Nothing in the block is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_block import write_block  # noqa: E402 - the scripts folder is not a package

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "reports" / "replications"
#: The sweeps in the order of the suite (scripts/replicate.sh).
SWEEPS = ("shumailov", "gerstgrasser", "kazdan", "bertrand", "feng", "dohmatob")
#: The one figure of the block: Gerstgrasser et al.'s claim, test cross-entropy against generations.
FIGURE = "gerstgrasser/metrics.png"


def machine(root: Path) -> dict[str, str]:
    """The runtime every run of the suite recorded (they must agree), from their state.json."""
    seen: dict[str, dict[str, str]] = {}
    for s in SWEEPS:
        for state in sorted((root / s).glob("*/state.json")):
            rt = json.loads(state.read_text()).get("runtime") or {}
            seen[json.dumps(rt, sort_keys=True)] = rt
    if not seen:
        raise SystemExit(f"findings_readme: no runs of the suite under {root} (run scripts/replicate.sh first)")
    if len(seen) > 1:
        raise SystemExit(f"findings_readme: the suite's runs ran under {len(seen)} different runtimes: "
                         + "; ".join(seen))
    return next(iter(seen.values()))


def _num(v: float, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def _duration(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "–"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m else f"{sec} s"


def block(csv: Path, rt: dict[str, str]) -> str:
    rows = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    counts = rows["verdict"].value_counts()
    summary = ", ".join(f"{counts[v]} {v}" for v in ("reproduced", "not reproduced", "opposite", "insufficient seeds")
                        if v in counts)
    walls = rows.groupby("sweep", sort=False)["wall_s"].first()
    found = {m.group(1) for c in rows["command"].dropna() for m in [re.search(r"--parallel (\d+)", str(c))] if m}
    parallel = found.pop() if len(found) == 1 else "?"
    total = float(walls.sum())
    lines = [
        f"{len(rows)} claims from six papers, each judged over seeds from the tracked runs: **{summary}**. "
        f"The whole suite ran on {rt.get('cpu_model', '?')} ({rt.get('machine', '?')}, torch CPU capability "
        f"{rt.get('cpu_capability', '?')}, precision {rt.get('precision', '?')}, {rt.get('torch_threads', '?')} "
        f"thread per run, {parallel} runs at a time) in {_duration(total)} of sweeps "
        f"({', '.join(f'{s} {_duration(w)}' for s, w in walls.items())}), after the CPU base was built.",
        "",
        "| paper | claim | metric (generation) | comparison | effect [95 % CI] | p | seeds | verdict |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for _, r in rows.iterrows():
        op = ">" if r["direction"] == "greater" else "<"
        ci = "" if not math.isfinite(r["ci_lo"]) else f" [{_num(r['ci_lo'])}, {_num(r['ci_hi'])}]"
        gen = "" if pd.isna(r["generation"]) else f" ({int(r['generation'])})"
        verdict = f"**{r['verdict']}**" if r["verdict"] == "reproduced" else r["verdict"]
        axis = "" if r["axis"] == "mix.regime" else f"{r['axis']}: "
        lines.append(f"| {r['paper']} | {r['claim']} | `{r['metric']}`{gen} | {axis}{r['first']} {op} {r['second']} | "
                     f"{_num(r['effect'])}{ci} | {_num(r['p_value'], 2)} | {int(r['n_first'])} / {int(r['n_second'])} "
                     f"| {verdict} |")
    lines += ["", f"![Gerstgrasser et al.'s loop on code: replace against accumulate, 3 seeds, 95 % bands]"
                  f"(reports/replications/{FIGURE})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(REPO / "runs"), help="run root of the suite (for the machine it ran on)")
    ap.add_argument("--check", action="store_true", help="compare the README block with the committed results")
    a = ap.parse_args(argv)
    csv, mfile = OUT / "findings.csv", OUT / "machine.json"
    if not csv.exists():
        print(f"findings_readme: no {csv.relative_to(REPO)} (run scripts/replicate.sh first)", file=sys.stderr)
        return 2
    if a.check:
        rt = json.loads(mfile.read_text())
    else:
        rt = machine(Path(a.root))
        mfile.write_text(json.dumps(rt, indent=1, sort_keys=True) + "\n")
    return write_block("findings", block(csv, rt), a.check, "reports/replications/findings.csv")


if __name__ == "__main__":
    sys.exit(main())
