"""The filter protocol and its runner: keep or drop each row, with a reason.

Both filter stacks of the toolkit are lists of :class:`Filter` objects run
by :class:`FilterRunner`: the row steps of the human-corpus pipeline
(:mod:`collapse.data.pipeline`) and the gates on synthetic samples
(:mod:`collapse.gates`). The shape follows datatrove's ``BaseFilter``: a
filter says, per row, None (keep) or why it drops it, from a fixed list of
reasons; the runner applies the filters in order (a row dropped by one is
not shown to the next), counts what each saw, kept and dropped per reason,
times each, and, when asked, writes every dropped row with its reason (the
exclusions).

A batch is the texts plus, optionally, other columns of the same rows
(``{"source": [...], "tests": [...]}``). Two optional hooks serve filters
that do more than keep or drop:

- a filter may rewrite rows in place (redaction replaces secrets): the
  texts and columns it gets are the runner's, and what it writes there is
  what later filters see, what the runner returns and what an exclusion
  records;
- after :meth:`Filter.check`, ``details`` (row index in the batch -> extra
  fields) adds fields to the exclusion records of dropped rows (a
  duplicate's ``duplicate_of``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

__all__ = ["Columns", "Filter", "FilterCounts", "FilterRunner"]

#: Other fields of the rows of a batch: column name -> one value per row.
Columns = dict[str, list[Any]]


@runtime_checkable
class Filter(Protocol):
    """Keeps or drops rows. ``reasons`` lists every drop reason the filter can give."""

    name: str
    reasons: tuple[str, ...]

    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        """Per row: None (keep) or the reason it is dropped."""
        ...


@dataclass
class FilterCounts:
    """What one filter saw, kept and dropped (per reason, every listed reason present), and its time."""

    seen: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    seconds: float = 0.0


class FilterRunner:
    """Applies ``filters`` in order to batches, accumulating :class:`FilterCounts` over every call.

    ``exclusions``: a list that receives one record per dropped row,
    ``{"step": filter name, "reason": ..., <the columns named in record>...,
    <the filter's details>..., "text": ...}``; None writes nothing.
    ``before(filter, rows)`` is called as each filter starts (progress bars).
    """

    def __init__(self, filters: Sequence[Filter], exclusions: list[dict[str, Any]] | None = None,
                 record: Sequence[str] = ("source",), before: Callable[[Filter, int], None] | None = None):
        names = [f.name for f in filters]
        if len(set(names)) != len(names):
            raise ValueError(f"filters: expected distinct names, got {names}")
        self.filters = list(filters)
        self.exclusions = exclusions
        self.record = tuple(record)
        self.before = before
        self.counts = {f.name: FilterCounts(dropped=Counter(dict.fromkeys(f.reasons, 0))) for f in self.filters}
        self.rows_in = 0
        self.rows_kept = 0

    def __call__(self, texts: Sequence[str], columns: Columns | None = None) -> list[str | None]:
        """Per row: None when every filter kept it, else ``"<filter>:<reason>"`` of the one that dropped it.

        ``texts`` and ``columns`` are not changed; a rewriting filter's output is in :attr:`texts` and
        :attr:`columns` (the whole batch, dropped rows included) until the next call."""
        self.texts = texts = list(texts)
        self.columns = columns = {k: list(v) for k, v in columns.items()} if columns else {}
        verdict: list[str | None] = [None] * len(texts)
        alive = list(range(len(texts)))
        for f in self.filters:
            if not alive:
                break
            if self.before is not None:
                self.before(f, len(alive))
            t0 = time.perf_counter()
            # The filter gets the surviving rows only; whatever it rewrites there is copied back.
            sub = [texts[i] for i in alive]
            cols = {k: [v[i] for i in alive] for k, v in columns.items()} if columns else None
            reasons = f.check(sub, cols)
            if len(reasons) != len(sub):
                raise ValueError(f"filter {f.name}: {len(reasons)} verdicts for {len(sub)} rows")
            for j, i in enumerate(alive):
                texts[i] = sub[j]
                for k in columns:
                    columns[k][i] = cols[k][j]
            details = getattr(f, "details", None) or {}
            c = self.counts[f.name]
            c.seen += len(sub)
            survivors = []
            for j, (i, why) in enumerate(zip(alive, reasons)):
                if why is None:
                    survivors.append(i)
                    continue
                verdict[i] = f"{f.name}:{why}"
                c.dropped[why] += 1
                if self.exclusions is not None:
                    self.exclusions.append({"step": f.name, "reason": why,
                                            **{k: columns[k][i] for k in self.record if k in columns},
                                            **details.get(j, {}), "text": texts[i]})
            c.kept += len(survivors)
            c.seconds += time.perf_counter() - t0
            alive = survivors
        self.rows_in += len(texts)
        self.rows_kept += len(alive)
        return verdict
