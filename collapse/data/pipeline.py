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
``max_examples``). Each step logs what it dropped; :func:`run_pipeline`
returns the counts per step and reason (and times each step), and, when asked, every dropped row
with its reason (``duplicate_of`` names the kept row for duplicates).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from collapse.config import DataConfig
from collapse.data.filters import autogen_reason, length_reason, normalize_text, quality_reason
from collapse.data.redact import Redactor, redact_source
from collapse.syntax import parses

__all__ = ["STEP_REASONS", "StepReport", "run_pipeline", "content_hash"]

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


def _per_row(rows: list[Row], check: Callable[[Row], str | None], reasons: tuple[str, ...],
             dropped_rows: list[Row] | None, step: str) -> tuple[list[Row], dict[str, int]]:
    counts = dict.fromkeys(reasons, 0)
    kept = []
    for r in rows:
        why = check(r)
        if why is None:
            kept.append(r)
        else:
            counts[why] += 1
            if dropped_rows is not None:
                dropped_rows.append({"step": step, "reason": why, "source": r["source"], "text": r["text"]})
    return kept, counts


def _exact_dedup(rows: list[Row], dropped_rows: list[Row] | None) -> tuple[list[Row], dict[str, int]]:
    first: dict[str, str] = {}
    kept, n = [], 0
    for r in rows:
        h = content_hash(r["text"])
        if h in first:
            n += 1
            if dropped_rows is not None:
                dropped_rows.append({"step": "exact_dedup", "reason": "duplicate", "source": r["source"],
                                     "duplicate_of": first[h], "text": r["text"]})
            continue
        first[h] = r["source"]
        kept.append(r)
    return kept, {"duplicate": n}


def _near_dedup(rows: list[Row], cfg: DataConfig, dropped_rows: list[Row] | None) -> tuple[list[Row], dict[str, int]]:
    from collapse.data.neardup import NearDupIndex

    index = NearDupIndex(cfg.near_dedup_threshold, cfg.near_dedup_num_perm, cfg.near_dedup_ngram)
    dup_of = index.add([r["text"] for r in rows], labels=[r["source"] for r in rows])
    kept, n = [], 0
    for r, d in zip(rows, dup_of):
        if d is None:
            kept.append(r)
            continue
        n += 1
        if dropped_rows is not None:
            dropped_rows.append({"step": "near_dedup", "reason": "near_duplicate", "source": r["source"],
                                 "duplicate_of": d, "text": r["text"]})
    return kept, {"near_duplicate": n}


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

    from collapse.data.scanner import get_scanner

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

    Returns the kept rows (``redact`` rewrites ``text`` in place), one
    report per step, and the redaction counts per kind (empty without
    ``redact``). Dropped rows are appended to ``dropped_rows`` when it is a list.
    ``progress``: a bar over the steps, naming the one running and the rows it got.
    """
    from tqdm.auto import tqdm

    reports: list[StepReport] = []
    redactor = Redactor()
    # Created before any step forks workers; tqdm's monitor thread is allowed by _pool_workers.
    bar = tqdm(cfg.pipeline, desc="data pipeline", unit="step", disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        bar.set_postfix_str(f"{step} ({len(rows)} rows)", refresh=True)
        t0 = time.perf_counter()
        seen = len(rows)
        extra: dict[str, Any] = {}
        if step == "redact":
            changed = broke = 0
            kept_rows = []
            sources = Redactor(scanner=False)  # file names: counted apart from the texts
            for r in rows:
                r["source"] = redact_source(r["source"], sources)
            results, counts_red = _redact_texts([r["text"] for r in rows])
            redactor.counts.update(counts_red)
            for r, (new, bad) in zip(rows, results):
                if new is not None:
                    if bad:
                        # Only the redacted text is kept anywhere, the dropped-rows file included.
                        broke += 1
                        if dropped_rows is not None:
                            dropped_rows.append({"step": step, "reason": "redaction_broke_syntax",
                                                 "source": r["source"], "text": new})
                        continue
                    changed += 1
                    r["text"] = new
                kept_rows.append(r)
            rows = kept_rows
            counts: dict[str, int] = {"redaction_broke_syntax": broke}
            extra = {"rows_changed": changed, "replacements": {k: v for k, v in redactor.counts.items() if v},
                     "source_replacements": {k: v for k, v in sources.counts.items() if v}}
        elif step == "exact_dedup":
            rows, counts = _exact_dedup(rows, dropped_rows)
        elif step == "length":
            lo, hi = cfg.min_chars, cfg.max_chars
            rows, counts = _per_row(rows, lambda r: length_reason(r["text"], lo, hi), STEP_REASONS[step], dropped_rows, step)
        elif step == "autogen":
            rows, counts = _per_row(rows, lambda r: autogen_reason(r["text"], r.get("file_autogen", False)),
                                    STEP_REASONS[step], dropped_rows, step)
        elif step == "quality":
            args = (cfg.max_line_length, cfg.max_mean_line_length, cfg.min_alnum_fraction)
            rows, counts = _per_row(rows, lambda r: quality_reason(r["text"], *args), STEP_REASONS[step], dropped_rows, step)
        elif step == "near_dedup":
            rows, counts = _near_dedup(rows, cfg, dropped_rows)
            extra = {"threshold": cfg.near_dedup_threshold, "num_perm": cfg.near_dedup_num_perm,
                     "ngram": cfg.near_dedup_ngram}
        else:  # the config rejects unknown names; this guards direct callers
            raise ValueError(f"unknown pipeline step {step!r} (known: {', '.join(STEP_REASONS)})")
        rep = StepReport(step, seen, len(rows), counts, time.perf_counter() - t0, extra)
        reports.append(rep)
        what = ", ".join(f"{k}={v}" for k, v in counts.items()) or ", ".join(
            f"{k}={v}" for k, v in extra.get("replacements", {}).items()) or "nothing"
        log.info("data: %s: %d → %d (%s) in %.1fs", step, seen, len(rows), what, rep.seconds)
    return rows, reports, {k: v for k, v in redactor.counts.items()}
