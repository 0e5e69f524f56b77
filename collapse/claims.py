"""Claims as data: what a sweep's runs should show, stated in its sweep file.

A sweep file may carry a ``claims:`` list. Each claim names a metric, the
generation it is judged at, two groups of runs (two values of one sweep axis)
and the sign the difference of their means should have::

    claims:
      - name: accumulate stays bounded          # optional
        paper: Gerstgrasser et al. 2024         # optional
        metric: test_ce                         # a metric key as logged (a column of collapse.load_runs)
        generation: last                        # or a generation number
        groups: {mix.regime: [replace, accumulate]}   # effect = mean(replace) − mean(accumulate)
        direction: greater                      # the expected sign of the effect: greater | less
        min_effect: 0.05                        # optional: |effect| must reach this too
        where: {sample.temperature: 1.0}        # optional: fix the sweep's other axes

The two groups are the runs whose axis takes each value (and that match
``where``); they must differ in nothing but the seed, so each seed is one
observation. :func:`parse_claims` checks the format and :func:`check_claims`
the claims against the expanded sweep, when the sweep file is loaded: a bad
claim is one error line naming ``claims[i]`` and the key. This module imports
nothing heavy and nothing of :mod:`collapse.sweep`; the evaluation is
:mod:`collapse.findings`.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from collapse.errors import CollapseError

CLAIM_KEYS = ("name", "paper", "metric", "generation", "groups", "direction", "min_effect", "where")
DIRECTIONS = ("greater", "less")
SEED_AXIS = "run.seed"


@dataclass(frozen=True)
class Claim:
    """One expected finding: ``mean(first) − mean(second)`` of ``metric`` has the sign ``direction``."""

    metric: str
    axis: str  # the sweep axis whose two values make the groups
    first: Any
    second: Any
    direction: str  # greater | less
    generation: int | str = "last"
    min_effect: float | None = None
    name: str = ""
    paper: str = ""
    where: dict[str, Any] = field(default_factory=dict)
    index: int = 0  # position in the sweep file's claims list

    @property
    def label(self) -> str:
        return f"claims[{self.index}]" + (f" ({self.name})" if self.name else "")

    @property
    def expected(self) -> str:
        """``replace > accumulate`` (with ``by ≥ m`` when there is a minimum effect)."""
        op = ">" if self.direction == "greater" else "<"
        text = f"{_label(self.first)} {op} {_label(self.second)}"
        if self.min_effect:
            text += f" by ≥ {self.min_effect:g}"
        return text

    def describe(self) -> str:
        """One line for ``collapse sweep --dry-run``."""
        where = "".join(f", {k}={_label(v)}" for k, v in self.where.items())
        gen = "the last generation" if self.generation == "last" else f"generation {self.generation}"
        text = f"{self.label}: {self.metric} at {gen}: {self.axis} {self.expected}{where}"
        return text + (f" [{self.paper}]" if self.paper else "")


def _label(v: Any) -> str:
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    if v is None:
        return "null"
    return str(v)


def canon(v: Any) -> Any:
    """A value as compared between a claim, a sweep's runs and a runs table: numbers as
    floats (``1`` = ``1.0``), lists and mappings (and their JSON text, as axis tags hold
    them) as canonical JSON."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, numbers.Real):
        return float(v)
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, str) and v.strip()[:1] in ("[", "{"):
        try:
            return json.dumps(json.loads(v), sort_keys=True)
        except ValueError:
            return v
    return v


# ------------------------------------------------------------------ parsing

def parse_claims(raw: Any, where: str) -> list[Claim]:
    """The ``claims:`` list of a sweep file (``where`` prefixes errors: the file name)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise CollapseError(f"{where}: claims: expected a list of claims (metric, generation, groups, direction ...), "
                            f"got {raw!r}")
    return [_parse_claim(item, i, where) for i, item in enumerate(raw)]


def _parse_claim(item: Any, i: int, where: str) -> Claim:
    head = f"{where}: claims[{i}]"
    if not isinstance(item, dict):
        raise CollapseError(f"{head}: expected a mapping with metric, generation, groups and direction, got {item!r}")
    name = item.get("name", "")
    if not isinstance(name, str):
        raise CollapseError(f"{head}.name: expected text, got {name!r}")
    if name:
        head += f" ({name})"
    for k in item:
        if k not in CLAIM_KEYS:
            raise CollapseError(f"{head}: unknown key {k!r} (known: {', '.join(CLAIM_KEYS)})")
    for k in ("metric", "groups", "direction"):
        if k not in item:
            raise CollapseError(f"{head}: {k}: missing (a claim needs metric, groups and direction)")
    paper = item.get("paper", "")
    if not isinstance(paper, str):
        raise CollapseError(f"{head}.paper: expected text, got {paper!r}")
    metric = item["metric"]
    if not isinstance(metric, str) or not metric.strip():
        raise CollapseError(f"{head}.metric: expected a metric key as logged (e.g. test_ce), got {metric!r}")
    generation = item.get("generation", "last")
    if not (generation == "last" or (isinstance(generation, int) and not isinstance(generation, bool)
                                      and generation >= 0)):
        raise CollapseError(f"{head}.generation: expected last or a generation number >= 0, got {generation!r}")
    groups = item["groups"]
    if not isinstance(groups, dict) or len(groups) != 1:
        raise CollapseError(f"{head}.groups: expected one axis with two values, e.g. "
                            f"{{mix.regime: [replace, accumulate]}}, got {groups!r}")
    (axis, values), = groups.items()
    if not isinstance(axis, str) or not axis:
        raise CollapseError(f"{head}.groups: expected a dotted axis key, got {axis!r}")
    if not isinstance(values, list) or len(values) != 2:
        raise CollapseError(f"{head}.groups.{axis}: expected exactly two values [first, second] "
                            f"(the effect is first − second), got {values!r}")
    if canon(values[0]) == canon(values[1]):
        raise CollapseError(f"{head}.groups.{axis}: expected two different values, got {values!r}")
    direction = item["direction"]
    if direction not in DIRECTIONS:
        raise CollapseError(f"{head}.direction: expected greater or less (the sign of first − second), "
                            f"got {direction!r}")
    min_effect = item.get("min_effect")
    if min_effect is not None:
        if isinstance(min_effect, bool) or not isinstance(min_effect, numbers.Real) or not math.isfinite(min_effect) \
                or min_effect < 0:
            raise CollapseError(f"{head}.min_effect: expected a number >= 0, got {min_effect!r}")
        min_effect = float(min_effect)
    fixed = item.get("where") or {}
    if not isinstance(fixed, dict) or any(not isinstance(k, str) for k in fixed):
        raise CollapseError(f"{head}.where: expected a mapping of axis key -> value, got {fixed!r}")
    for k, v in fixed.items():
        if k == axis:
            raise CollapseError(f"{head}.where: {k} is the axis the groups compare")
        if isinstance(v, dict):
            raise CollapseError(f"{head}.where.{k}: expected one value, got {v!r}")
    return Claim(metric=metric.strip(), axis=axis, first=values[0], second=values[1], direction=direction,
                 generation=generation, min_effect=min_effect, name=name, paper=paper, where=dict(fixed), index=i)


def check_claims(claims: list[Claim], runs: list[Any], axis_keys: list[str], where: str) -> None:
    """Each claim against the expanded sweep (``runs``: its ``SweepRun``s, with ``axes``
    and ``generations``): its axes exist, its values occur, and each group is a set of
    runs that differ only in the seed. Raises one CollapseError line."""
    values: dict[str, list[Any]] = {}
    for k in axis_keys:
        seen: list[Any] = []
        for r in runs:
            if canon(r.axes[k]) not in [canon(s) for s in seen]:
                seen.append(r.axes[k])
        values[k] = seen
    axes_text = ", ".join(k for k in axis_keys if k != SEED_AXIS) or "none besides the seed"
    for c in claims:
        head = f"{where}: claims[{c.index}]" + (f" ({c.name})" if c.name else "")
        for key, what in [(c.axis, "groups"), *((k, "where") for k in c.where)]:
            if key == SEED_AXIS:
                raise CollapseError(f"{head}.{what}: {key} is the seed axis, which a claim averages over; "
                                    f"name another axis (this sweep's: {axes_text})")
            if key not in values:
                raise CollapseError(f"{head}.{what}: {key} is not an axis of this sweep (its axes: {axes_text})")
        for key, v in [(c.axis, c.first), (c.axis, c.second), *c.where.items()]:
            if canon(v) not in [canon(x) for x in values[key]]:
                what = "groups" if key == c.axis else "where"
                raise CollapseError(f"{head}.{what}.{key}: no run of this sweep has {key} = {_label(v)} "
                                    f"(its values: {', '.join(_label(x) for x in values[key])})")
        for v in (c.first, c.second):
            group = [r for r in runs if canon(r.axes[c.axis]) == canon(v)
                     and all(canon(r.axes[k]) == canon(w) for k, w in c.where.items())]
            if not group:
                raise CollapseError(f"{head}: no run has {c.axis} = {_label(v)} together with "
                                    f"{', '.join(f'{k} = {_label(w)}' for k, w in c.where.items())}")
            for k in axis_keys:
                if k in (c.axis, SEED_AXIS) or k in c.where:
                    continue
                distinct = {canon(r.axes[k]) for r in group}
                if len(distinct) > 1:
                    shown = ", ".join(_label(x) for x in values[k] if canon(x) in distinct)
                    raise CollapseError(f"{head}: the runs with {c.axis} = {_label(v)} also differ in {k} ({shown}); "
                                        f"fix it with where: {{{k}: ...}} so that each group varies only in the seed")
            if c.generation != "last":
                reach = min(r.generations for r in group)
                if c.generation > reach:
                    raise CollapseError(f"{head}.generation: {c.generation} is beyond the last generation of the "
                                        f"runs with {c.axis} = {_label(v)} ({reach})")


def format_claims(claims: list[Claim]) -> str:
    """The claims of a sweep, one line each (``collapse sweep --dry-run``)."""
    return "\n".join([f"claims ({len(claims)}):"] + [f"  {c.describe()}" for c in claims])


__all__ = ["Claim", "canon", "parse_claims", "check_claims", "format_claims", "CLAIM_KEYS", "DIRECTIONS",
           "SEED_AXIS"]
