"""Human-corpus pipeline: seconds per step of a cold build, and near-dedup scaling.

    python benchmarks/bench_pipeline.py [--corpus stdlib-all|stdlib] [--repeats 3] [--sizes 12000,24000,48000]

``--corpus stdlib-all`` (default) is the full standard library, test suites
included (about 59,000 functions in 1,800 files): the interpreter's stdlib
directory read as a directory source with ``site-packages`` opted out, so it
also goes through opt-out and license-file detection (its ``LICENSE.txt``
says PSF-2.0). ``--corpus stdlib`` is the default ``data.source: stdlib``
(no test suites, about 16,500 functions).

Each repeat builds the corpus from scratch into a fresh cache with every
pipeline step on (``prepare_human_data``: list files and opt-out, extract
functions in a process pool, license check, redact, exact dedup, length,
autogen, quality, MinHash near dedup, split, save with the card). Medians
over repeats are printed per phase and in total. The MinHash near-dedup
step is then timed alone at three corpus sizes (prefixes of the same
corpus, texts repeated with a renamed first token when a size exceeds it),
to show it grows linearly: seconds per 1,000 texts should stay flat.

The machine may be shared: the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from collapse.config import DataConfig  # noqa: E402
from collapse.data import prepare_human_data  # noqa: E402
from collapse.data.neardup import NearDupIndex  # noqa: E402
from collapse.data.sources import stdlib_root  # noqa: E402

PHASES = ["files", "extract", "license", "step.redact", "step.exact_dedup", "step.length", "step.autogen",
          "step.quality", "step.near_dedup", "dataset", "split", "save"]


def corpus_config(name: str) -> DataConfig:
    if name == "stdlib":
        return DataConfig()
    return DataConfig(source=str(stdlib_root()), opt_out=["site-packages/*", "dist-packages/*"])


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build(cfg: DataConfig) -> tuple[dict[str, float], float, dict]:
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as cache:
        t0 = time.perf_counter()
        _, info = prepare_human_data(cfg, Path(cache), progress=False, timings=timings)
        total = time.perf_counter() - t0
    return timings, total, info


def neardup_scaling(texts: list[str], sizes: list[int], repeats: int) -> list[tuple[int, float]]:
    out = []
    for n in sizes:
        corpus = [texts[i % len(texts)] if i < len(texts) else "renamed_" + texts[i % len(texts)] for i in range(n)]
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            NearDupIndex().add(corpus)
            runs.append(time.perf_counter() - t0)
        out.append((n, statistics.median(runs)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", choices=["stdlib-all", "stdlib"], default="stdlib-all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="12000,24000,48000", help="corpus sizes for the near-dedup scaling")
    a = ap.parse_args()
    print(f"cpus {os.cpu_count()} (affinity {len(os.sched_getaffinity(0))}); load average before: {load()}")
    cfg = corpus_config(a.corpus)
    per_phase: dict[str, list[float]] = {p: [] for p in PHASES}
    totals = []
    info: dict = {}
    for r in range(a.repeats):
        timings, total, info = build(cfg)
        totals.append(total)
        for p in PHASES:
            per_phase[p].append(timings.get(p, 0.0))
        print(f"  repeat {r + 1}: {total:.1f}s (load {load()})")
    print(f"\ncorpus {a.corpus}: {info['files']:,} files read, {info['files_dropped']['opt_out']:,} opted out, "
          f"{info['extracted']:,} functions extracted, {info['kept']:,} kept")
    print(f"drops: {', '.join(f'{k}={v:,}' for k, v in info['dropped'].items() if v)}; "
          f"redactions: {info.get('redactions')}")
    print(f"\n{'phase':<20}{'median s':>10}")
    for p in PHASES:
        print(f"{p:<20}{statistics.median(per_phase[p]):>10.2f}")
    print(f"{'total (wall)':<20}{statistics.median(totals):>10.2f}")

    # Near-dedup scaling on the corpus's own functions.
    from collapse.data.corpus import load_human_corpus

    texts = list(load_human_corpus(DataConfig(source=cfg.source, opt_out=cfg.opt_out, pipeline=["exact_dedup"],
                                              min_chars=0, max_chars=10**9), progress=False)[0]["text"][:])
    sizes = [int(s) for s in a.sizes.split(",")]
    print(f"\nnear dedup alone (MinHash LSH, 128 permutations, threshold 0.85), median of {a.repeats}:")
    print(f"{'texts':>10}{'seconds':>10}{'s / 1k texts':>14}")
    for n, secs in neardup_scaling(texts, sizes, a.repeats):
        print(f"{n:>10,}{secs:>10.2f}{1000 * secs / n:>14.3f}")
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
