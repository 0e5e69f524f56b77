"""Time of every metric on 1,000 and 10,000 samples, and the default metric set's
share of one quickstart generation.

    python benchmarks/bench_metrics.py                 # sizes 1000 10000, 3 repeats
    python benchmarks/bench_metrics.py --generation    # also one real quickstart generation

Samples are held-out-sized Python functions of the standard library (code of
the length the quickstart samples have); the model is the quickstart's
``small`` preset. Memorization indexes the quickstart's human train split;
its first call builds the index (reported separately: later generations of a
run reuse it).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from common import machine, median, quickstart_inputs

from collapse.config import MetricsConfig
from collapse.data import prepare_human_data
from collapse.lm.generator import LMGenerator
from collapse.lm.model import build_model
from collapse.metrics import REGISTRY, compute


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--generation", action="store_true", help="also time one quickstart generation")
    ap.add_argument("--skip", nargs="*", default=["humaneval", "semantic_diversity"], help="metrics left out")
    ap.add_argument("--only-generation", action="store_true", help="skip the per-metric table")
    args = ap.parse_args()

    cfg, tok, _, human = quickstart_inputs(3000)
    big = dataclasses.replace(cfg.data, max_examples=max(args.sizes) + 500, train_size=None)
    pool, _ = prepare_human_data(big, Path("runs/_cache"), progress=False)
    texts = list(pool["train"]["text"])
    run_dir = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    gen = LMGenerator(cfg, tok, human, run_dir, progress=False)
    gen.model = build_model(cfg.model, len(tok), tok.eos_token_id, seed=0)
    names = [n for n in REGISTRY if n not in args.skip]
    default = MetricsConfig().names
    print(f"# {machine()}; human train split {len(human['train'])} functions; {args.repeats} repeats, medians")
    print("| metric | " + " | ".join(f"{n:,} samples (s)" for n in args.sizes) + " |")
    print("|---|" + "---:|" * len(args.sizes))
    rows: dict[str, list[str]] = {}
    totals = {}
    for n in ([] if args.only_generation else args.sizes):
        samples = texts[:n]
        t = []
        for _ in range(args.repeats):
            ctx = gen.context(1)
            t0 = time.perf_counter()
            ctx.token_ids(samples)
            t.append(time.perf_counter() - t0)
        rows.setdefault("(tokenize the samples, shared by all)", []).append(f"{median(t):.2f}")
        for name in names:
            cold, warm = [], []
            for _ in range(args.repeats):
                ctx = gen.context(1)
                ctx.shared = {}
                ctx.token_ids(samples)
                t0 = time.perf_counter()
                compute([name], samples, ctx)
                cold.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ctx.cache = {k: v for k, v in ctx.cache.items() if k[0] == "ids"}
                compute([name], samples, ctx)
                warm.append(time.perf_counter() - t0)
            cell = f"{median(warm):.2f}"
            if median(cold) > 1.5 * median(warm) + 0.05:
                cell += f" (first call {median(cold):.2f})"
            rows.setdefault(name + (" *" if name in default else ""), []).append(cell)
        ctx = gen.context(1)
        t0 = time.perf_counter()
        compute([m for m in default if m in REGISTRY], samples, ctx)
        cold_total = time.perf_counter() - t0
        ctx.cache = {}
        t0 = time.perf_counter()
        compute([m for m in default if m in REGISTRY], samples, ctx)
        totals[n] = (cold_total, time.perf_counter() - t0)
    for k, v in rows.items():
        print(f"| {k} | " + " | ".join(v) + " |")
    if totals:
        print("| **default set (*), incl. tokenizing** | " + " | ".join(
            f"**{totals[n][1]:.2f}** (first generation {totals[n][0]:.2f})" for n in args.sizes) + " |")

    if args.generation:
        train = human["train"].select(range(1000))
        gen = LMGenerator(cfg, tok, human, run_dir, progress=False)
        t0 = time.perf_counter()
        gen.fit(train, 0)
        samples = gen.sample(1000, 0)
        gen.evaluate(samples, 0)
        wall = time.perf_counter() - t0
        tm = gen.timings
        print(f"\nquickstart generation 0: wall {wall:.1f} s = train {tm['train_s']:.1f} + sample {tm['sample_s']:.1f}"
              f" + metrics {tm['metrics_s']:.1f} (+ human reference metrics, once per run); "
              f"metrics share {tm['metrics_s'] / wall:.1%}")
        # Generation 1 reuses the copy index built at generation 0, like a real run.
        gen.fit(train, 1)
        samples = gen.sample(1000, 1)
        t0 = time.perf_counter()
        gen.evaluate(samples, 1)
        per = sorted(((k[len("metric."):-2], v) for k, v in gen.timings.items() if k.startswith("metric.")), key=lambda kv: -kv[1])
        print("generation 1, seconds per metric: " + ", ".join(f"{k} {v:.2f}" for k, v in per))
        print(f"quickstart generation 1: train {gen.timings['train_s']:.1f} + sample {gen.timings['sample_s']:.1f}"
              f" + metrics {gen.timings['metrics_s']:.1f} s; metrics share "
              f"{gen.timings['metrics_s'] / (gen.timings['train_s'] + gen.timings['sample_s'] + gen.timings['metrics_s']):.1%}")


if __name__ == "__main__":
    main()
