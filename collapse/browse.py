"""Looking at runs on disk: ``collapse ls [ROOT]`` and ``collapse show RUN_DIR``.

Both read run directories only, through :class:`collapse.rundir.RunDirReader`
(state, finished generations, manifest, metrics, samples), and a sweep's
``sweep.json``: no MLflow store is opened and nothing is written. ::

    collapse ls                         # experiments and sweeps under runs/, their runs, status, last generation
    collapse ls /scratch/runs
    collapse show runs/tiny/replace_s0                  # the last finished generation: manifest, metrics, 3 samples
    collapse show runs/tiny/replace_s0 --generation 0 -n 10
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collapse.errors import CollapseError
from collapse.locks import is_locked
from collapse.rundir import RunDirReader

# Folders of a run root that hold no experiment.
_NOT_EXPERIMENTS = {"mlartifacts", "mlruns"}


@dataclass
class RunInfo:
    name: str
    path: Path | None
    status: str  # done | running | interrupted | failed | stopped | pending | unknown
    last: int  # last finished generation (-1: none)
    generations: int | None  # N of generations 0..N, when known

    @property
    def progress(self) -> str:
        """``k/N`` as the run's log lines say it (``-/N``: none finished yet)."""
        n = "?" if self.generations is None else str(self.generations)
        return f"{self.last if self.last >= 0 else '-'}/{n}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_run_dir(path: Path) -> bool:
    return RunDirReader(path).is_run_dir()


def finished_generations(run_dir: Path) -> list[int]:
    """Generations with ``DONE``, in order."""
    return RunDirReader(run_dir).finished_generations()


def run_info(run_dir: Path, name: str | None = None) -> RunInfo:
    """Status and progress of one run directory from its files."""
    rd = RunDirReader(run_dir)
    st = _read_json(rd.state_path)
    st = st if isinstance(st, dict) else {}
    status = str(st.get("status") or ("pending" if not st else "unknown"))
    if status == "running" and not is_locked(rd.lock_path):
        status = "stopped"  # it said running but no process holds it: killed (resume by running it again)
    gens = st.get("generations")
    return RunInfo(name or run_dir.name, run_dir, status, rd.done_prefix(),
                   int(gens) if isinstance(gens, int) else None)


def list_root(root: str | Path) -> list[tuple[str, str, list[RunInfo]]]:
    """``[(name, kind, runs)]`` of the experiments (``experiment``) and sweeps (``sweep <file>``) under ``root``."""
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise CollapseError(f"{root} {what}: name the run root, e.g. `collapse ls runs` "
                            "(run.root of the runs; default runs/)")
    out = []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith(("_", ".")) or d.name in _NOT_EXPERIMENTS:
            continue
        sweep = _read_json(d / "sweep.json") if (d / "sweep.json").is_file() else None
        if isinstance(sweep, dict):
            runs = []
            recorded = sweep.get("runs") if isinstance(sweep.get("runs"), dict) else {}
            names = list(recorded) + sorted(p.name for p in d.iterdir() if p.name not in recorded and is_run_dir(p))
            for n in names:
                rd = Path(recorded.get(n, {}).get("run_dir") or d / n) if isinstance(recorded.get(n), dict) else d / n
                runs.append(run_info(rd, n) if rd.is_dir() else RunInfo(n, None, "pending", -1, None))
            out.append((d.name, "sweep", runs))
        elif is_run_dir(d):  # a run directory right under the root (run.dir=<root>/<name>)
            out.append((d.name, "run", [run_info(d)]))
        else:
            runs = [run_info(p) for p in sorted(d.iterdir()) if is_run_dir(p)]
            if runs:
                out.append((d.name, "experiment", runs))
    return out


def format_ls(root: str | Path) -> str:
    entries = list_root(root)
    if not entries:
        return f"{root}: no experiments or sweeps yet"
    head = ("experiment", "kind", "run", "status", "generation")
    rows = [(name, kind, r.name, r.status, r.progress) for name, kind, runs in entries for r in runs]
    return _table(head, rows) + f"\n{len(entries)} experiments and sweeps, {len(rows)} runs under {root}"


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _printable(text: str) -> str:
    """Control characters (a sample may hold any) written as escapes, so the terminal shows them."""
    return "".join(c if c in "\n\t" or c.isprintable() else repr(c)[1:-1] for c in text)


def show(run_dir: str | Path, generation: int | None = None, n: int = 3, max_lines: int = 40) -> str:
    """A generation's manifest, metrics (beside the human reference) and ``n`` samples, as text."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CollapseError(f"{run_dir} does not exist; `collapse ls` lists the runs under a run root")
    if not is_run_dir(run_dir):
        inside = [p.name for p in sorted(run_dir.iterdir()) if is_run_dir(p)] if run_dir.is_dir() else []
        if inside:
            raise CollapseError(f"{run_dir} holds several runs: name one ({', '.join(inside)})")
        raise CollapseError(f"{run_dir} is not a run directory (no state.json or gen_000/); "
                            "`collapse ls` lists the runs under a run root")
    if n < 0:
        raise CollapseError(f"-n: expected >= 0, got {n}")
    done = finished_generations(run_dir)
    if generation is None:
        if not done:
            raise CollapseError(f"{run_dir}: no generation has finished yet")
        generation = done[-1]
    elif generation not in done:
        have = f"finished generations: {', '.join(map(str, done))}" if done else "no generation has finished yet"
        raise CollapseError(f"{run_dir}: generation {generation} has not finished ({have})")
    info = run_info(run_dir)
    rd = RunDirReader(run_dir)
    st = _read_json(rd.state_path) or {}
    lines = [f"{run_dir}  generation {generation} of 0..{_fmt(info.generations)}",
             f"experiment {_fmt(st.get('experiment'))}, regime {_fmt(st.get('regime'))}, seed {_fmt(st.get('seed'))}; "
             f"{info.status}, finished: {', '.join(map(str, done))}"]

    timings = rd.timings(generation)
    if isinstance(timings, dict):
        took = [f"{k[:-2]} {timings[k]:.1f}s" for k in ("train_s", "sample_s", "metrics_s")
                if isinstance(timings.get(k), (int, float))]
        if took:
            lines.append(f"took: {', '.join(took)}")

    manifest = rd.manifest(generation)
    lines += ["", "manifest (the training set of this generation's model)"]
    if isinstance(manifest, dict):
        pools = manifest.get("pools") or {}
        lines.append(f"  {manifest.get('total', '?')} examples: "
                     + ", ".join(f"{k} {v}" for k, v in pools.items()))
        counts = manifest.get("counts") or {}
        for origin, by_gen in counts.items():
            if isinstance(by_gen, dict) and set(map(str, by_gen)) == {"-1"}:
                lines.append(f"  {origin}: {sum(by_gen.values())}")
            elif isinstance(by_gen, dict):
                parts = ", ".join(f"{'human' if str(g) == '-1' else 'gen ' + str(g)} {c}" for g, c in by_gen.items())
                lines.append(f"  {origin}: {parts}")
        if manifest.get("content_sha256"):
            lines.append(f"  content sha256 {manifest['content_sha256'][:16]}…")
    else:
        lines.append("  (no manifest.json)")

    metrics = rd.metrics(generation)
    lines += ["", "metrics (human: the same metric on held-out human code)"]
    if isinstance(metrics, dict) and metrics:
        keys = sorted(k for k in metrics if not k.startswith("human."))
        rows = [(k, _fmt(metrics[k]), _fmt(metrics.get(f"human.{k}")) if f"human.{k}" in metrics else "")
                for k in keys]
        lines.append(_indent(_table(("metric", "value", "human"), rows), "  "))
    else:
        lines.append("  (no metrics.json)")

    samples = []
    path = rd.samples_jsonl(generation)
    if n and path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                if len(samples) >= n:
                    break
                try:
                    samples.append(json.loads(line))
                except ValueError:
                    continue
    total = sum(1 for _ in open(path, encoding="utf-8")) if path.is_file() else 0
    lines += ["", f"samples ({len(samples)} of {total}; all in {path})"]
    for i, s in enumerate(samples):
        text = _printable(str(s.get("text", "")))
        body = text.splitlines() or [""]
        if len(body) > max_lines:
            body = body[:max_lines] + [f"… ({len(text.splitlines()) - max_lines} more lines)"]
        meta = ", ".join(f"{k} {s[k]}" for k in ("n_tokens", "finished") if k in s)
        lines.append(f"--- sample {i}" + (f" ({meta})" if meta else ""))
        if s.get("prompt"):
            lines.append(f"    prompt: {_printable(str(s['prompt']))!r}")
        lines.append(_indent("\n".join(body)))
    return "\n".join(lines)
