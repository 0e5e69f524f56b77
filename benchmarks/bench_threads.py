"""Training and sampling throughput of the quickstart model with 1 vs 2 torch threads.

    python -m benchmarks.bench_threads [--repeats 2]

Each measurement runs in a fresh process with OMP_NUM_THREADS set, alternating
1 and 2 threads; prints medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CODE = r'''
import time, torch
from benchmarks.common import quickstart_inputs
from collapse.config import SampleConfig, TrainConfig
from collapse.lm.model import build_model, resolved_dims
from collapse.lm.sample import sample
from collapse.lm.train import train
cfg, tok, docs, _ = quickstart_inputs()
eos, T = tok.eos_token_id, resolved_dims(cfg.model)["seq_len"]
m = build_model(cfg.model, len(tok), eos, 0)
r = train(m, docs, eos, T, TrainConfig(max_steps=40, batch_size=cfg.train.batch_size, lr=cfg.train.lr, precision="fp32"),
          torch.device("cpu"), 0, progress=False)
t = time.perf_counter()
o = sample(m, [[eos]] * 256, SampleConfig(max_new_tokens=cfg.sample.max_new_tokens, batch_size=256), eos, 0,
           torch.device("cpu"), progress=False)
print(r.tokens_per_s, o.useful_tokens / (time.perf_counter() - t))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    res: dict[str, list[tuple[float, float]]] = {"1": [], "2": []}
    for _ in range(a.repeats):
        for n in res:
            out = subprocess.run([sys.executable, "-c", CODE], env={**os.environ, "OMP_NUM_THREADS": n},
                                 capture_output=True, text=True, check=True).stdout.split()
            res[n].append((float(out[0]), float(out[1])))
            print(n, "threads:", [round(x) for x in res[n][-1]], flush=True)
    for i, what in enumerate(["train tokens/s", "sampling useful tokens/s"]):
        one, two = (statistics.median(x[i] for x in res[n]) for n in ("1", "2"))
        print(f"| {what}, quickstart model, median of {a.repeats} | 2 threads {two:,.0f} | 1 thread {one:,.0f} | {two / one:.2f}× |")


if __name__ == "__main__":
    main()
