"""The row steps of the human-corpus pipeline, run in the order ``data.pipeline`` gives.

=============  ==============================================  =====================================
step           what it does                                    drop reasons
=============  ==============================================  =====================================
redact         replaces secrets and personal data by           ``redaction_broke_syntax`` (a row
               placeholders (:mod:`collapse.data.redact`),     that parsed before and not after)
               in the text and in the ``source`` column
exact_dedup    drops exact duplicates (whitespace-normalized    ``duplicate``
               text), first occurrence kept
length         ``data.min_chars`` / ``data.max_chars``          ``too_short``, ``too_long``
autogen        generated-code markers                          ``autogen``
               (:func:`collapse.data.filters.autogen_reason`)
quality        line length, mean line length, alphanumeric     ``long_line``, ``mean_line_length``,
               share (:func:`collapse.data.filters.quality_...  ``low_alnum``
near_dedup     MinHash LSH near duplicates                     ``near_duplicate``
               (:mod:`collapse.data.neardup`), first kept
=============  ==============================================  =====================================

File-level steps come before these and are not in the list: opt-out (always
first) and the license allow-list (see :mod:`collapse.data.corpus`). After
the row steps, ``data.max_examples`` caps the corpus (reason
``max_examples``). Each step is a filter (:mod:`collapse.filtering`; the
registry is :data:`STEPS`) and :func:`run_pipeline` runs them with
:class:`collapse.filtering.FilterRunner`, as the gates on synthetic samples
are run: it logs what each step dropped, returns the counts per step and
reason (and times each step), and, when asked, every dropped row with its
reason (``duplicate_of`` names the kept row for duplicates).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from collapse.config import DataConfig
from collapse.data.filters import autogen_reason, length_reason, normalize_text, quality_reason
from collapse.data.neardup import NearDupIndex
from collapse.data.redact import KINDS, Redactor, redact_source
from collapse.filtering import Columns, Filter, FilterRunner
from collapse.syntax import parses

__all__ = ["STEPS", "STEP_REASONS", "StepReport", "run_pipeline", "content_hash"]

log = logging.getLogger("collapse")

#: Every row step and the reasons it drops for (``data.pipeline`` names a subset, in order).
STEP_REASONS: dict[str, tuple[str, ...]] = {
    "redact": ("redaction_broke_syntax",),
    "exact_dedup": ("duplicate",),
    "length": ("too_short", "too_long"),
    "autogen": ("autogen",),
    "quality": ("long_line", "mean_line_length", "low_alnum"),
    "near_dedup": ("near_duplicate",),
}


#: Below this many files (or texts) a process pool costs more than it saves.
POOL_MIN_FILES = 64


def _pool_workers(n_files: int) -> int:
    """How many worker processes to parse with; 0 means parse in this process.

    Parsing the stdlib is ~6 s in one process and ~3.5 s with two forked
    workers on the 2-core reference machine, so a pool is used when it is
    safe: ``fork`` is available (workers must not re-import the caller's
    ``__main__``, as spawn would) and this process runs no other Python
    thread whose locks a forked child could inherit held. tqdm's monitor
    thread is the exception: it outlives every bar, and it only ever holds
    tqdm's own lock, which the workers never take.
    """
    import multiprocessing
    import threading

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    if (
        n_files < POOL_MIN_FILES
        or cpus < 2
        or "fork" not in multiprocessing.get_all_start_methods()
        or any(t is not threading.current_thread() and t.name != "tqdm_monitor" for t in threading.enumerate())
    ):
        return 0
    return min(cpus, 8)


def content_hash(text: str) -> str:
    """sha256 of the whitespace-normalized text: the key of exact deduplication."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


@dataclass
class StepReport:
    name: str
    seen: int
    kept: int
    dropped: dict[str, int]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The report without its timing (what a corpus's ``info`` records must not vary between builds)."""
        d = asdict(self)
        d.pop("seconds")
        return d


Row = dict[str, Any]


class Redact:
    """``redact``: secrets and personal data → placeholders, in the text and the ``source`` column
    (rewritten in place); drops a row that parsed before and not after."""

    name = "redact"
    reasons = ("redaction_broke_syntax",)

    def __init__(self, cfg: DataConfig):
        self.counts: Counter[str] = Counter()
        self.info: dict[str, Any] = {"rows_changed": 0, "replacements": {}, "source_replacements": {}}

    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        sources = Redactor(scanner=False)  # file names: counted apart from the texts
        if columns and "source" in columns:
            src = columns["source"]
            for j, name in enumerate(src):
                src[j] = redact_source(name, sources)
        results, counts = _redact_texts(texts)
        self.counts.update(counts)
        out: list[str | None] = []
        changed = 0
        for j, (new, bad) in enumerate(results):
            if new is not None:
                # Only the redacted text is kept anywhere, the exclusions included.
                texts[j] = new
                if bad:
                    out.append("redaction_broke_syntax")
                    continue
                changed += 1
            out.append(None)
        self.info = {"rows_changed": changed, "replacements": {k: v for k, v in self.counts.items() if v},
                     "source_replacements": {k: v for k, v in sources.counts.items() if v}}
        return out


class ExactDedup:
    """``exact_dedup``: exact duplicates (whitespace-normalized text, :func:`content_hash`), first kept."""

    name = "exact_dedup"
    reasons = ("duplicate",)

    def __init__(self, cfg: DataConfig):
        self.details: dict[int, dict[str, Any]] = {}

    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        labels = columns["source"] if columns and "source" in columns else list(range(len(texts)))
        first: dict[str, Any] = {}
        self.details = {}
        out: list[str | None] = []
        for j, (t, label) in enumerate(zip(texts, labels)):
            h = content_hash(t)
            if h in first:
                out.append("duplicate")
                self.details[j] = {"duplicate_of": first[h]}
            else:
                first[h] = label
                out.append(None)
        return out


class Length:
    """``length``: ``data.min_chars`` / ``data.max_chars``."""

    name = "length"
    reasons = ("too_short", "too_long")

    def __init__(self, cfg: DataConfig):
        self.lo, self.hi = cfg.min_chars, cfg.max_chars

    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        return [length_reason(t, self.lo, self.hi) for t in texts]


class Autogen:
    """``autogen``: generated-code markers in the function, or its file's header (``file_autogen`` column)."""

    name = "autogen"
    reasons = ("autogen",)

    def __init__(self, cfg: DataConfig):
        pass

    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        marked = columns.get("file_autogen") if columns else None
        return [autogen_reason(t, bool(marked[j]) if marked else False) for j, t in enumerate(texts)]


class Quality:
    """``quality``: line length, mean line length and alphanumeric share (:func:`quality_reason`)."""

    name = "quality"
    reasons = ("long_line", "mean_line_length", "low_alnum")

    def __init__(self, cfg: DataConfig):
        self.args = (cfg.max_line_length, cfg.max_mean_line_length, cfg.min_alnum_fraction)

    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        return [quality_reason(t, *self.args) for t in texts]


class NearDedup:
    """``near_dedup``: MinHash LSH near duplicates (:mod:`collapse.data.neardup`), first in order kept."""

    name = "near_dedup"
    reasons = ("near_duplicate",)

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.details: dict[int, dict[str, Any]] = {}
        self.info = {"threshold": cfg.near_dedup_threshold, "num_perm": cfg.near_dedup_num_perm,
                     "ngram": cfg.near_dedup_ngram}

    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        cfg = self.cfg
        labels = columns["source"] if columns and "source" in columns else list(range(len(texts)))
        index = NearDupIndex(cfg.near_dedup_threshold, cfg.near_dedup_num_perm, cfg.near_dedup_ngram)
        dup_of = index.add(list(texts), labels=list(labels))
        self.details = {j: {"duplicate_of": d} for j, d in enumerate(dup_of) if d is not None}
        return [None if d is None else "near_duplicate" for d in dup_of]


#: The pipeline-step registry: every row step ``data.pipeline`` may name, in the order the docs list
#: them; each is built from the data config and follows :class:`collapse.filtering.Filter`.
STEPS: dict[str, Callable[[DataConfig], Filter]] = {
    c.name: c for c in (Redact, ExactDedup, Length, Autogen, Quality, NearDedup)}

#: Every row step and the reasons it drops for (``data.pipeline`` names a subset, in order).
STEP_REASONS: dict[str, tuple[str, ...]] = {name: cls.reasons for name, cls in STEPS.items()}


#: Texts per task of the redaction pool, and the fewest texts worth a pool.
REDACT_CHUNK = 500
REDACT_POOL_MIN = 4000


def _redact_chunk(texts: list[str]) -> tuple[list[tuple[str | None, bool]], Counter[str]]:
    """Per text ``(redacted text or None when unchanged, whether redaction broke its syntax)``,
    and the replacements per kind."""
    r = Redactor()
    out: list[tuple[str | None, bool]] = []
    for text in texts:
        new = r.redact(text)
        out.append((None, False) if new == text else (new, parses(text) and not parses(new)))
    return out, r.counts


def _redact_texts(texts: list[str]) -> tuple[list[tuple[str | None, bool]], Counter[str]]:
    """:func:`_redact_chunk` over all texts, in forked workers when the corpus is large (the same
    result, in the same order, as in one process)."""
    import multiprocessing

    from collapse.data.scanner import get_scanner  # detect-secrets: imported when used

    get_scanner()  # built once here; forked workers inherit it
    chunks = [texts[i:i + REDACT_CHUNK] for i in range(0, len(texts), REDACT_CHUNK)]
    workers = _pool_workers(len(texts)) if len(texts) >= REDACT_POOL_MIN else 0
    out: list[tuple[str | None, bool]] = []
    counts: Counter[str] = Counter()
    if workers:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_redact_chunk, chunks, chunksize=1)
    else:
        parts = [_redact_chunk(c) for c in chunks]
    for res, c in parts:
        out.extend(res)
        counts.update(c)
    return out, counts


def run_pipeline(rows: list[Row], cfg: DataConfig, dropped_rows: list[Row] | None = None, *, progress: bool = False
                 ) -> tuple[list[Row], list[StepReport], dict[str, int]]:
    """Run ``cfg.pipeline`` over ``rows`` (dicts with ``text``, ``source``; ``file_autogen`` optional).

    Returns the kept rows (``redact`` rewrites ``text`` and ``source`` in place), one
    report per step, and the redaction counts per kind (zeros without
    ``redact``). Dropped rows are appended to ``dropped_rows`` when it is a list.
    ``progress``: a bar over the steps, naming the one running and the rows it got.
    """
    from tqdm.auto import tqdm

    unknown = [s for s in cfg.pipeline if s not in STEPS]
    if unknown:  # the config check rejects unknown names; this guards direct callers
        raise ValueError(f"unknown pipeline step {unknown[0]!r} (known: {', '.join(STEPS)})")
    steps = [STEPS[name](cfg) for name in cfg.pipeline]
    # Created before any step forks workers; tqdm's monitor thread is allowed by _pool_workers.
    bar = tqdm(total=len(steps), desc="data pipeline", unit="step", disable=not progress, leave=False, dynamic_ncols=True)

    started: list[str] = []

    def before(step: Filter, n: int) -> None:
        if started:
            bar.update(1)
        started.append(step.name)
        bar.set_postfix_str(f"{step.name} ({n} rows)", refresh=True)

    runner = FilterRunner(steps, dropped_rows, before=before)
    columns: Columns = {"source": [r["source"] for r in rows],
                        "file_autogen": [r.get("file_autogen", False) for r in rows]}
    verdict = runner([r["text"] for r in rows], columns)
    bar.close()
    kept = []
    for i, (r, why) in enumerate(zip(rows, verdict)):
        if why is None:
            r["text"], r["source"] = runner.texts[i], runner.columns["source"][i]
            kept.append(r)
    reports: list[StepReport] = []
    for step in steps:
        c = runner.counts[step.name]
        counts = dict(c.dropped)
        extra = dict(getattr(step, "info", {}))
        rep = StepReport(step.name, c.seen, c.kept, counts, c.seconds, extra)
        reports.append(rep)
        what = ", ".join(f"{k}={v}" for k, v in counts.items()) or ", ".join(
            f"{k}={v}" for k, v in extra.get("replacements", {}).items()) or "nothing"
        log.info("data: %s: %d → %d (%s) in %.1fs", step.name, c.seen, c.kept, what, rep.seconds)
    redactions = Counter({k: 0 for k in KINDS})
    for step in steps:
        if isinstance(step, Redact):
            redactions.update(step.counts)
    return kept, reports, dict(redactions)
