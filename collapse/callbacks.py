"""What happens after each generation of an LM run, as callbacks of the loop.

Each is an object with ``on_generation(record)``
(:class:`collapse.loop.Callback`), called in order after a generation is
committed, or read back when a run resumes (``record.cached``):

- :class:`CollectMetrics`: the run's metrics, for the returned result;
- :class:`MirrorToMLflow`: metrics at ``step=generation``, timings and
  artifacts into the run's MLflow run, once (``MIRRORED`` marks it);
- :class:`LogGeneration`: one log line (times, headline metrics, time left);
- :class:`ReleaseModel`: drop the model when the next generation starts afresh;
- :class:`DrawFigures`: the run's figures after its last generation.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from collapse.generator import GenerationRecord
from collapse.rundir import RunDir, gen_name
from collapse.tracking import RunMirror

log = logging.getLogger("collapse")


class CollectMetrics:
    """Appends each generation's metrics to ``metrics`` (a list the caller owns)."""

    def __init__(self, metrics: list[dict[str, float]]):
        self.metrics = metrics

    def on_generation(self, record: GenerationRecord) -> None:
        self.metrics.append(record.metrics)


class MirrorToMLflow:
    """Logs a generation to ``mirror``: metrics and ``time.*`` at ``step=generation``, its
    samples, manifest and metric artifacts under ``gen_NNN/``; then marks it ``MIRRORED``
    with the store and run it went to. A generation already marked for this run is
    skipped (a marker naming another store or run, e.g. a shared generation 0, is not)."""

    def __init__(self, mirror: RunMirror, rundir: RunDir, prev_target: dict[str, Any]):
        self.mirror = mirror
        self.rundir = rundir
        self.prev_target = prev_target  # the MLflow run state.json named before this process started

    def on_generation(self, record: GenerationRecord) -> None:
        g, rd, mirror = record.generation, self.rundir, self.mirror
        if rd.mirrored_to(g, mirror.uri, mirror.run_id, self.prev_target):
            return
        # Idempotent: steps already in the store are not logged again, artifacts overwrite.
        mirror.log_metrics(record.metrics, step=g)
        mirror.log_metrics({f"time.{k}": v for k, v in record.timings.items()}, step=g)
        mirror.log_artifact(rd.samples_jsonl(g), gen_name(g))
        mirror.log_artifact(rd.manifest_path(g), gen_name(g))
        if rd.metrics_dir(g).is_dir():
            mirror.log_artifacts(rd.metrics_dir(g), f"{gen_name(g)}/metrics")
        rd.mark_mirrored(g, mirror.uri, mirror.run_id)


class GenerationClock:
    """The time left for a run: the mean wall time of the generations computed in this
    process (restored ones cost next to nothing and are left out) times the generations left."""

    def __init__(self, last: int):
        self.last = last
        self.computed: list[float] = []
        self.start()

    def start(self) -> None:
        self.mark = time.monotonic()

    def tick(self, generation: int, cached: bool) -> float | None:
        """Call once per finished generation; returns the seconds left, None for a cached
        generation, before any generation was computed, or after the last one."""
        now = time.monotonic()
        took, self.mark = now - self.mark, now
        if cached:
            return None
        self.computed.append(took)
        left = self.last - generation
        return left * sum(self.computed) / len(self.computed) if left > 0 else None


def duration(seconds: float) -> str:
    """``42s``, ``3m20s``, ``2h05m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    return f"{v:.1f}{unit}" if unit else f"{v:.3f}"


class LogGeneration:
    """One log line per generation: train and sample time, headline metrics, the time left."""

    def __init__(self, label: str, last: int, clock: GenerationClock):
        self.label = label
        self.last = last
        self.clock = clock

    def on_generation(self, record: GenerationRecord) -> None:
        left = self.clock.tick(record.generation, record.cached)
        m, t = record.metrics, record.timings
        log.info(
            "%sgen %d/%d%s | train %s | sample %s | test_ce %s | syntax %s | distinct_4 %s%s",
            self.label, record.generation, self.last, " (cached)" if record.cached else "",
            _fmt(t.get("train_s"), "s"), _fmt(t.get("sample_s"), "s"),
            _fmt(m.get("test_ce")), _fmt(m.get("syntax_valid")), _fmt(m.get("distinct_4")),
            f" | left ~{duration(left)}" if left is not None else "",
        )


class ReleaseModel:
    """Calls ``release()`` after every generation but the last (the generator drops a model
    the next generation does not start from, so two never sit in memory)."""

    def __init__(self, release: Callable[[], Any], last: int):
        self.release = release
        self.last = last

    def on_generation(self, record: GenerationRecord) -> None:
        if record.generation < self.last:
            self.release()


class DrawFigures:
    """After the last generation: the run's figures from the collected metrics frame, in
    ``folder``, and into the MLflow run when there is one."""

    def __init__(self, frame: Callable[[], Any], folder: Path, last: int, mirror: RunMirror | None = None):
        self.frame = frame
        self.folder = folder
        self.last = last
        self.mirror = mirror

    def on_generation(self, record: GenerationRecord) -> None:
        if record.generation != self.last:
            return
        from collapse.figures import plot_run  # deferred: matplotlib is a heavy import

        figs = plot_run(self.frame(), self.folder)
        if self.mirror is not None:
            for fig in figs:
                self.mirror.log_artifact(fig, "figures")
