"""``collapse sweep FILE``: the plan, the status table, and the launch, as the command line shows them."""

from __future__ import annotations

from typing import Any, Callable

from collapse.claims import format_claims
from collapse.sweep.launching import check_overrides, launch, tag_value, to_launch
from collapse.sweep.parent_run import finish_parent_run
from collapse.sweep.spec import Sweep, load_sweep
from collapse.sweep.state import RunStatus, run_statuses


def status(sweep: Sweep) -> tuple[str, list[RunStatus]]:
    """``(table text, [RunStatus])`` of the sweep's runs; closes the MLflow parent run
    when none is left to go."""
    statuses = run_statuses(sweep)
    finish_parent_run(sweep, statuses)
    return format_status(sweep, statuses), statuses


def format_status(sweep: Sweep, statuses: list[RunStatus]) -> str:
    rows = [(s.name, s.progress, s.job or "-", s.describe()) for s in statuses]
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    head = ("run", "gens", "job", "state")
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return _table(head, rows) + f"\n{sweep.name}: {len(statuses)} runs: {summary}"


def format_plan(sweep: Sweep) -> str:
    """The expansion: run name, axis values, run directory."""
    head = ("run", *sweep.axis_keys, "run dir")
    rows = [(r.name, *(tag_value(r.axes[k]) for k in sweep.axis_keys), str(r.run_dir)) for r in sweep.runs]
    return _table(head, rows)


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def main_sweep(path: str, executor: str = "local", *, parallel: int | None = None, dry_run: bool = False,
               show_status: bool = False, wait: bool = False, slurm_flags: dict[str, Any] | None = None,
               echo: Callable[[str], None] = print, command: str | None = None,
               overrides: list[str] | None = None) -> int:
    """``collapse sweep FILE [key=value ...]``: returns the exit code. ``command``: the command line,
    recorded in ``sweep.json``; ``overrides``: for every run (:func:`collapse.sweep.spec.load_sweep`)."""
    sweep = load_sweep(path, overrides)
    if show_status:
        text, _ = status(sweep)
        echo(text)
        return 0
    echo(format_plan(sweep))
    if sweep.claims:
        echo(format_claims(sweep.claims))
    if dry_run:
        check_overrides(sweep)  # what a launch would refuse, a dry run refuses too
        statuses = run_statuses(sweep)
        todo, skipped = to_launch(sweep, statuses)
        echo(f"{sweep.name}: {len(sweep.runs)} runs ({len(skipped)} done or in progress, {len(todo)} to launch); "
             f"dry run: nothing launched")
        return 0
    settings = sweep.slurm.updated(**(slurm_flags or {}))
    res = launch(sweep, executor, parallel=parallel, slurm=settings, wait=wait, echo=echo, command=command)
    if executor == "local" or wait:
        text, statuses = status(sweep)
        echo(text)
        return 0 if all(s.state == "done" for s in statuses) else 1
    return 0 if res.ok else 1
