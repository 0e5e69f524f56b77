"""Running a sweep's runs as a pool of local worker processes.

Workers are forked from a fork server that imported torch, transformers,
mlflow and friends once (:mod:`collapse.sweep._preload`), so each starts in
milliseconds. Two steps save repeated work: the human data and tokenizer of
each distinct data config are prepared once before the runs start, and of
the runs that share a generation 0 (same seed and everything but the mix)
one goes first; the others start once its generation 0 is in the shared
cache, and copy it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from multiprocessing.connection import wait as mp_wait
from typing import Any, Callable

from collapse.sweep.spec import Sweep
from collapse.sweep.state import LaunchResult, error_path, first_line_of
from collapse.sweep.worker import EXIT_BUSY, RunSpec, local_main, local_prepare

# Imported once by the fork server, so each worker starts in milliseconds
# instead of paying torch / transformers / mlflow imports again.
PRELOAD = ["collapse.sweep._preload"]


def default_parallel(sweep: Sweep) -> int:
    """What fits the cores: cores // CPUs per run (run.threads, 1 when unset,
    times train.nproc training processes)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    per_run = max((max(1, r.config["run"]["threads"]) * max(1, r.config["train"].get("nproc", 1)) for r in sweep.runs),
                  default=1)
    return max(1, cores // per_run)


def group_key(cfg: dict[str, Any], sections: tuple[str, ...], **extra: Any) -> str:
    """Equal for configs equal in ``sections`` (and ``extra``)."""
    return json.dumps({**{k: cfg[k] for k in sections}, **extra}, sort_keys=True, default=str)


def gen0_key(cfg: dict[str, Any]) -> str | None:
    """Runs with equal keys share generation 0 (the experiment's gen0 cache key, from the config alone)."""
    if not cfg["run"].get("share_gen0", True):
        return None
    return group_key(cfg, ("data", "tokenizer", "model", "train", "sample", "metrics"), seed=cfg["run"]["seed"],
                     synthetic=cfg["mix"].get("synthetic_size"))


def gen0_published(spec: RunSpec) -> bool:
    """The run's generation 0 is committed and copied to the shared cache."""
    d = spec.run_dir / "gen_000"
    if not (d / "DONE").exists():
        return False
    return (d / "MIRRORED").exists() or not spec.config["tracking"]["enabled"]


def launch_local(sweep: Sweep, specs: list[RunSpec], parallel: int, echo: Callable[[str], None]) -> LaunchResult:
    """Run ``specs`` in worker processes, ``parallel`` at a time; returns when all
    have ended. Interrupted, it stops its workers (a later launch resumes them)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    logs = sweep.dir / "_logs"
    logs.mkdir(parents=True, exist_ok=True)
    result = LaunchResult([], {}, {}, {})
    echo(f"{sweep.name}: {len(specs)} runs, {parallel} at a time (logs: {logs})")
    running: dict[Any, tuple[RunSpec | None, float]] = {}

    def stop_all() -> None:
        for p in running:  # interrupted: stop the workers; a later launch resumes them
            if p.is_alive():
                p.terminate()
        for p in running:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()

    try:
        # 1. human data and tokenizer, once per distinct data config
        prep: dict[str, dict[str, Any]] = {}
        for spec in specs:
            prep.setdefault(group_key(spec.config, ("data", "tokenizer"), init_from=spec.config["model"]["init_from"]),
                            spec.config)
        if len(specs) > 1:
            todo_prep = list(prep.values())
            while todo_prep or running:
                while todo_prep and len(running) < parallel:
                    p = ctx.Process(target=local_prepare, args=(todo_prep.pop(0), str(logs / "_prepare.log")),
                                    name="collapse-sweep:prepare")
                    p.start()
                    running[p] = (None, time.time())
                mp_wait([p.sentinel for p in running], timeout=1.0)
                for p in [p for p in running if not p.is_alive()]:
                    running.pop(p)
                    p.join()
            echo(f"{sweep.name}: human data and tokenizer ready ({len(prep)} distinct)")

        # 2. the runs; followers of a generation-0 group wait for their leader's generation 0
        leaders: dict[str, RunSpec] = {}
        for spec in specs:
            key = gen0_key(spec.config)
            if key is not None:
                leaders.setdefault(key, spec)
        leader_of = {spec.name: leaders[k] for spec in specs if (k := gen0_key(spec.config)) is not None}
        ended: set[str] = set()
        queue = list(specs)

        def ready(spec: RunSpec) -> bool:
            lead = leader_of.get(spec.name)
            return lead is None or lead is spec or lead.name in ended or gen0_published(lead)

        while queue or running:
            for spec in [s for s in queue if ready(s)]:
                if len(running) >= parallel:
                    break
                queue.remove(spec)
                t = time.time()
                p = ctx.Process(target=local_main, args=(spec, str(logs / f"{spec.name}.log"), t),
                                name=f"collapse-sweep:{spec.name}")
                p.start()
                running[p] = (spec, t)
                result.launched.append(spec.name)
                echo(f"{spec.name}: started (pid {p.pid})")
            mp_wait([p.sentinel for p in running], timeout=1.0)
            for p in [p for p in running if not p.is_alive()]:
                spec, t = running.pop(p)
                p.join()
                assert spec is not None
                ended.add(spec.name)
                code = p.exitcode
                if code == 0:
                    echo(f"{spec.name}: done ({time.time() - t:.0f}s)")
                elif code == EXIT_BUSY:
                    result.skipped[spec.name] = "running elsewhere"
                    echo(f"{spec.name}: skipped, already running elsewhere")
                else:
                    err = error_path(sweep.dir, spec.name)
                    why = first_line_of(err) if err.exists() else (
                        f"killed by signal {-code}" if code and code < 0 else f"exit code {code}")
                    result.failed[spec.name] = why
                    echo(f"{spec.name}: failed: {why} (log: {logs / (spec.name + '.log')})")
    except BaseException:
        stop_all()
        raise
    return result
