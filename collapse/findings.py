"""``collapse findings``: the claims of sweep files checked against their tracked runs.

A sweep file's ``claims:`` (:mod:`collapse.claims`) name a metric, the
generation it is judged at, two groups of runs (two values of one axis, the
other axes fixed by ``where``) and the expected sign of mean(first) −
mean(second)::

    claims:
      - name: accumulate stays bounded
        paper: Gerstgrasser et al. 2024
        metric: test_ce
        generation: last
        groups: {mix.regime: [replace, accumulate]}
        direction: greater
        min_effect: 0.05

``collapse findings SWEEP... [--out FINDINGS.md]`` evaluates every claim from
the tracked runs (:func:`evaluate_claims`, a pure function of the runs table):

- the effect, mean(first) − mean(second) over seeds at the judged generation
  (``last``: the last generation the groups' runs reached), with Welch's 95 %
  interval (Welch–Satterthwaite degrees of freedom) and two-sided p-value
  (:func:`collapse.stats.compare`);
- the verdict: ``reproduced`` (the interval excludes 0 on the expected side,
  and |effect| ≥ ``min_effect`` when given), ``opposite`` (the interval
  excludes 0 on the other side), ``not reproduced`` (anything else), or
  ``insufficient seeds`` (fewer than :data:`collapse.stats.MIN_SEEDS` per
  group: no interval, no test);
- the sweep's launch command and wall time, from its ``sweep.json`` (else the
  MLflow parent run; else blank, and the table says so).

Everything in the table is computed; nothing is typed by hand. The output is
written atomically (temporary files renamed into place) and only once every
claim of every sweep has been evaluated, so a failing call writes nothing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from collapse.claims import SEED_AXIS, Claim, _label, canon, check_claims, format_claims, parse_claims
from collapse.errors import CollapseError
from collapse.stats import MIN_SEEDS, compare
from collapse.sweep.load import load_runs, sweep_tracking_uri
from collapse.sweep.spec import Sweep, load_sweep
from collapse.sweep.state import read_sweep_state
from collapse.tracking import client

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

VERDICTS = ("reproduced", "not reproduced", "opposite", "insufficient seeds")
# Axis keys whose value load_runs also gives under a short column name (runs of `collapse run`, not a sweep).
_FALLBACK_COLUMNS = {"mix.regime": "regime", "run.seed": "seed"}
RESULT_COLUMNS = ["claim", "paper", "metric", "generation", "axis", "first", "second", "direction", "min_effect",
                  "n_first", "n_second", "mean_first", "mean_second", "effect", "ci_lo", "ci_hi", "welch_df",
                  "p_value", "verdict", "note"]


# ---------------------------------------------------------------- evaluation

def _column(frame: "pd.DataFrame", key: str, label: str) -> str:
    if key in frame.columns:
        return key
    alt = _FALLBACK_COLUMNS.get(key)
    if alt is not None and alt in frame.columns:
        return alt
    raise CollapseError(f"{label}: the runs table has no column {key!r} (the sweep's axes are columns of "
                        f"collapse.load_runs)")


def _seed_column(frame: "pd.DataFrame") -> str | None:
    for c in (SEED_AXIS, "seed"):
        if c in frame.columns and frame[c].notna().any():
            return c
    return None


def _matches(series: "pd.Series", value: Any) -> "pd.Series":
    target = canon(value)
    return series.map(lambda x: canon(x) == target).astype(bool)


def verdict(effect: float, lo: float, hi: float, direction: str, min_effect: float | None,
            enough_seeds: bool) -> tuple[str, str]:
    """(verdict, note) from an effect and its interval. See the module docstring."""
    if not enough_seeds:
        return "insufficient seeds", ""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "not reproduced", "no interval"
    sign = 1.0 if direction == "greater" else -1.0
    if lo == hi:  # Welch's interval is a point: the seeds agree exactly, there is no test (collapse.stats)
        return "not reproduced", "no variance across seeds: no test"
    if (lo > 0 and sign > 0) or (hi < 0 and sign < 0):
        if min_effect is not None and abs(effect) < min_effect:
            return "not reproduced", f"|effect| {abs(effect):.3g} below min_effect {min_effect:g}"
        return "reproduced", ""
    if (lo > 0 and sign < 0) or (hi < 0 and sign > 0):
        return "opposite", ""
    return "not reproduced", ""


def evaluate_claims(frame: "pd.DataFrame", claims: Iterable[Claim]) -> "pd.DataFrame":
    """One row per claim, computed from a runs table.

    ``frame`` has one row per (run, generation), like :func:`collapse.load_runs`:
    a ``generation`` column, a column per axis (named by its key; ``regime``
    and ``seed`` stand in for ``mix.regime`` and ``run.seed``), a ``run_id``
    (else ``run_name``) per run, and a column per metric. Columns of the result:
    :data:`RESULT_COLUMNS` (the generation column holds the judged generation;
    ``note`` says why a value is missing or what to know)."""
    import numpy as np
    import pandas as pd

    run_col = "run_id" if "run_id" in frame.columns else ("run_name" if "run_name" in frame.columns else None)
    seed_col = _seed_column(frame)
    rows = []
    for c in claims:
        label = c.label
        if c.metric not in frame.columns:
            logged = [m for m in frame.columns if frame[m].dtype.kind == "f"]
            raise CollapseError(f"{label}: metric {c.metric!r} is not logged by these runs "
                                f"(e.g. {', '.join(sorted(logged)[:12])})")
        axis = _column(frame, c.axis, label)
        keep = pd.Series(True, index=frame.index)
        for k, v in c.where.items():
            keep &= _matches(frame[_column(frame, k, label)], v)
        groups = [frame[keep & _matches(frame[axis], v)] for v in (c.first, c.second)]
        if c.generation == "last":
            gens = pd.concat([g["generation"] for g in groups])
            gen = int(gens.max()) if len(gens) else None
        else:
            gen = int(c.generation)
        notes: list[str] = []
        samples = []
        for value, g in zip((c.first, c.second), groups):
            at = g[g["generation"] == gen] if gen is not None else g.iloc[0:0]
            if seed_col is not None and at[seed_col].dropna().duplicated().any():
                raise CollapseError(f"{label}: the runs with {c.axis} = {_label(value)} hold several runs per seed at "
                                    f"generation {gen}; fix the sweep's other axes with where: so that each group "
                                    "varies only in the seed")
            if run_col is not None:
                behind = g[run_col].nunique() - at[run_col].nunique()
                if behind:
                    notes.append(f"{behind} run(s) with {c.axis} = {_label(value)} have not reached generation {gen}")
            v = at[c.metric].to_numpy(dtype=float)
            if np.isnan(v).any():
                notes.append(f"{int(np.isnan(v).sum())} run(s) with {c.axis} = {_label(value)} did not log "
                             f"{c.metric} at generation {gen}")
            samples.append(v[np.isfinite(v)])
        a, b = samples
        enough = len(a) >= MIN_SEEDS and len(b) >= MIN_SEEDS
        cmp = compare(a, b)
        effect = cmp.diff
        lo, hi, p, df = (cmp.lo, cmp.hi, cmp.p, cmp.df) if enough else (np.nan, np.nan, np.nan, np.nan)
        v_text, v_note = verdict(effect, lo, hi, c.direction, c.min_effect, enough)
        if not enough:
            notes.insert(0, f"fewer than {MIN_SEEDS} seeds per group ({len(a)} and {len(b)}): no interval, no test")
        elif v_note:
            notes.insert(0, v_note)
        rows.append({"claim": c.name or f"claims[{c.index}]", "paper": c.paper, "metric": c.metric,
                     "generation": gen, "axis": c.axis, "first": _label(c.first), "second": _label(c.second),
                     "direction": c.direction, "min_effect": c.min_effect, "n_first": len(a), "n_second": len(b),
                     "mean_first": float(a.mean()) if len(a) else np.nan,
                     "mean_second": float(b.mean()) if len(b) else np.nan,
                     "effect": effect, "ci_lo": lo, "ci_hi": hi, "welch_df": df, "p_value": p,
                     "verdict": v_text, "note": "; ".join(notes)})
    out = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    out["generation"] = out["generation"].astype("Int64")
    return out


# ------------------------------------------------------------------ a sweep

@dataclass
class SweepFindings:
    """A sweep's evaluated claims and how the sweep was run."""

    name: str
    path: str
    table: "pd.DataFrame"
    command: str  # "" when not recorded
    wall_s: float | None
    runs: int  # runs of the sweep file
    tracked: int  # runs with metrics in the store
    train_flops: float | None  # summed over every run and generation, when logged
    notes: list[str] = field(default_factory=list)


def _fmt_duration(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return ""
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {sec:02d} s" if m else f"{sec} s")


def sweep_provenance(sweep: "Sweep", state: dict[str, Any], uri: str | None) -> tuple[str, float | None, list[str]]:
    """(command, wall seconds, notes) of a sweep: its ``sweep.json`` launches, else its
    MLflow parent run's start and end, else nothing (and a note saying so)."""
    notes: list[str] = []
    launches = [x for x in state.get("launches", []) if isinstance(x, dict)]
    working = [x for x in launches if x.get("launched")]
    commands: list[str] = []
    for x in working or launches:
        if x.get("command") and x["command"] not in commands:
            commands.append(x["command"])
    command = " && ".join(commands)
    wall: float | None = None
    if working and all(isinstance(x.get("wall_s"), (int, float)) for x in working):
        wall = float(sum(x["wall_s"] for x in working))
        if len(working) > 1:
            notes.append(f"wall time summed over {len(working)} launches that ran runs")
    if wall is None and uri is not None and state.get("parent_run_id"):
        try:
            info = client(uri).get_run(state["parent_run_id"]).info
            if info.start_time and info.end_time:
                wall = (info.end_time - info.start_time) / 1000.0
                notes.append("wall time from the MLflow parent run (first launch to last finish)")
        except Exception:  # the table matters more than this one cell
            pass
    if not command:
        notes.append("launch command not recorded (launched before collapse recorded it)")
    if wall is None:
        notes.append("wall time not recorded" + (" (submitted to Slurm without --wait)"
                                                 if any(x.get("executor") == "slurm" for x in working) else ""))
    return command, wall, notes


def sweep_findings(path: str | Path, tracking_uri: str | None = None) -> SweepFindings:
    """Evaluate every claim of one sweep file from its tracked runs (read-only)."""
    sweep = load_sweep(path)
    if not sweep.claims:
        raise CollapseError(f"{path}: no claims: to evaluate (add a claims: list to the sweep file)")
    state = read_sweep_state(sweep)
    frame = load_runs(path, tracking_uri=tracking_uri)
    if not len(frame):
        raise CollapseError(f"{path}: no run of sweep {sweep.name} has logged metrics yet")
    table = evaluate_claims(frame, sweep.claims)
    uri = tracking_uri or sweep_tracking_uri(sweep)
    command, wall, notes = sweep_provenance(sweep, state, uri)
    flops = float(frame["train_flops"].sum()) if "train_flops" in frame and frame["train_flops"].notna().any() else None
    return SweepFindings(name=sweep.name, path=str(path), table=table, command=command, wall_s=wall,
                         runs=len(sweep.runs), tracked=int(frame["run_id"].nunique()), train_flops=flops, notes=notes)


# ------------------------------------------------------------------- output

def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return str(v)
    v = float(v)
    return f"{v:.{digits}g}" if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5) else f"{v:.{digits}f}"


def _p(v: Any) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return "< 0.001" if v < 1e-3 else f"{v:.3f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_rows(results: list[SweepFindings]) -> "pd.DataFrame":
    """Every claim of every sweep, one row each: the CSV (and what the Markdown shows)."""
    import pandas as pd

    parts = []
    for r in results:
        t = r.table.copy()
        t.insert(0, "sweep", r.name)
        t["command"] = r.command
        t["wall_s"] = r.wall_s
        parts.append(t)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["sweep", *RESULT_COLUMNS])


def findings_markdown(results: list[SweepFindings]) -> str:
    """The FINDINGS.md text: one table of claims, one of sweeps, the notes."""
    lines = ["# Findings", "",
             "Computed by `collapse findings` from the tracked runs; nothing here is typed by hand. The effect is "
             "mean(first) − mean(second) over seeds at the judged generation, with Welch's 95 % confidence "
             "interval (Welch–Satterthwaite degrees of freedom) and two-sided p-value. Verdicts: **reproduced** "
             "(the interval excludes 0 on the expected side, and |effect| reaches min_effect when one is given), "
             "**opposite** (it excludes 0 on the other side), **not reproduced** (otherwise), **insufficient "
             f"seeds** (fewer than {MIN_SEEDS} per group: no interval, no test).", "",
             "| sweep | claim | paper | metric | gen | comparison | expected | effect [95 % CI] | p (Welch) | seeds "
             "| verdict |",
             "|---|---|---|---|---:|---|---|---:|---:|---:|---|"]
    notes: list[str] = []
    for r in results:
        for _, row in r.table.iterrows():
            ci = "" if not math.isfinite(row["ci_lo"]) else f" [{_num(row['ci_lo'])}, {_num(row['ci_hi'])}]"
            op = ">" if row["direction"] == "greater" else "<"
            expected = f"{row['first']} {op} {row['second']}"
            if row["min_effect"] is not None and math.isfinite(row["min_effect"]) and row["min_effect"] > 0:
                expected += f" by ≥ {row['min_effect']:g}"
            gen = "–" if row["generation"] is None or str(row["generation"]) == "<NA>" else str(row["generation"])
            lines.append(f"| {_cell(r.name)} | {_cell(row['claim'])} | {_cell(row['paper'])} | `{row['metric']}` | "
                         f"{gen} | {_cell(row['axis'])}: {_cell(row['first'])} − {_cell(row['second'])} | "
                         f"{_cell(expected)} | {_num(row['effect'])}{ci} | {_p(row['p_value'])} | "
                         f"{row['n_first']} / {row['n_second']} | {row['verdict']} |")
            if row["note"]:
                notes.append(f"{r.name}, {row['claim']}: {row['note']}")
    lines += ["", "## Sweeps", "", "| sweep | file | runs tracked | command | wall time | training compute |",
              "|---|---|---:|---|---:|---:|"]
    for r in results:
        flops = f"{r.train_flops:.3g} FLOPs" if r.train_flops else "–"
        lines.append(f"| {_cell(r.name)} | `{_cell(r.path)}` | {r.tracked} of {r.runs} | "
                     f"{('`' + _cell(r.command) + '`') if r.command else '–'} | {_fmt_duration(r.wall_s) or '–'} | "
                     f"{flops} |")
        notes += [f"{r.name}: {n}" for n in r.notes]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {_cell(n)}" for n in notes]
    return "\n".join(lines) + "\n"


def write_atomic(files: dict[Path, str]) -> None:
    """Write every file to a temporary sibling first, then rename them all into place."""
    tmps: list[tuple[Path, Path]] = []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text(text)
            tmps.append((tmp, path))
        for tmp, path in tmps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)


def csv_path(out: Path) -> Path:
    """The CSV beside a findings table: its stem in lower case (``FINDINGS.md`` → ``findings.csv``)."""
    return out.with_name(out.stem.lower() + ".csv")


def findings(sweeps: list[str | Path], out: str | Path | None = None, tracking_uri: str | None = None,
             echo=print) -> list[SweepFindings]:
    """``collapse findings``: evaluate every claim of ``sweeps``; the Markdown table to
    ``out`` (with the same rows as CSV beside it, ``.csv``) or to ``echo``."""
    if out is not None and Path(out).suffix.lower() != ".md":
        raise CollapseError(f"collapse findings: --out: expected a .md file (a .csv with the same rows is written "
                            f"beside it), got {out}")
    if not sweeps:
        raise CollapseError("collapse findings: expected one or more sweep files")
    for s in sweeps:
        p = Path(s)
        if not p.is_file():
            raise CollapseError(f"collapse findings: {s}: no such sweep file")
        if p.suffix not in (".yaml", ".yml"):
            raise CollapseError(f"collapse findings: {s}: expected a sweep file (.yaml)")
    results = [sweep_findings(s, tracking_uri) for s in sweeps]
    md = findings_markdown(results)
    if out is None:
        echo(md.rstrip("\n"))
        return results
    out = Path(out)
    csv = findings_rows(results).to_csv(index=False)
    write_atomic({out: md, csv_path(out): csv})
    echo(str(out))
    echo(str(csv_path(out)))
    return results


__all__ = ["Claim", "parse_claims", "check_claims", "format_claims", "evaluate_claims", "verdict", "findings",
           "sweep_findings", "findings_markdown", "findings_rows", "VERDICTS"]
