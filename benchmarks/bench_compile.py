"""Does ``train.compile`` pay for pretraining? Eager against ``torch.compile``, side by side.

    python benchmarks/bench_compile.py [--steps 150] [--repeats 3] [--layers 3]

Trains the CPU base's model (the ``small`` preset, vocabulary 4,096, 256-token
blocks of 16, AdamW) from the same initialization on the same random blocks,
alternating eager and compiled runs so machine noise hits both. Prints the
compile time (the first steps of a compiled run less the same steps eager),
the steady tokens/s of each (medians over repeats, first 5 steps left out) and
their ratio, and the break-even: the training seconds after which the compiled
run is ahead.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import machine, median
from collapse.config import ModelConfig
from collapse.lm.model import build_model


def run(compiled: bool, steps: int, layers: int, vocab: int, batch: int, seq: int) -> tuple[float, float]:
    """(seconds of the first 5 steps, steady tokens/s over the rest)."""
    torch._dynamo.reset()
    model = build_model(ModelConfig(preset="small", num_layers=layers), vocab, 0, seed=0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    net = torch.compile(model) if compiled else model
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (steps, batch, seq), generator=g)
    t0 = time.perf_counter()
    for i in range(steps):
        if i == 5:
            warm, t1 = time.perf_counter() - t0, time.perf_counter()
        loss = net(input_ids=x[i], labels=x[i]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return warm, (steps - 5) * batch * seq / (time.perf_counter() - t1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=4096)
    a = ap.parse_args()
    res = {False: [], True: []}
    for _ in range(a.repeats):
        for compiled in (False, True):
            res[compiled].append(run(compiled, a.steps, a.layers, a.vocab, 16, 256))
            print(f"  compile={compiled}: first 5 steps {res[compiled][-1][0]:.1f} s, "
                  f"{res[compiled][-1][1]:,.0f} tokens/s", flush=True)
    e_warm, e_rate = median([w for w, _ in res[False]]), median([r for _, r in res[False]])
    c_warm, c_rate = median([w for w, _ in res[True]]), median([r for _, r in res[True]])
    # Inductor keeps compiled kernels in an on-disk cache: only the first compiled run pays the whole compile.
    compile_s = res[True][0][0] - res[False][0][0]
    tokens_per_s_gain = 1 / e_rate - 1 / c_rate  # seconds saved per token
    breakeven = compile_s / (tokens_per_s_gain * c_rate) if tokens_per_s_gain > 0 else float("inf")
    print(f"\n{machine()}, CPU capability {torch.backends.cpu.get_cpu_capability()}; {a.layers} layers, "
          f"vocabulary {a.vocab}; medians of {a.repeats}")
    print("| | eager | torch.compile | ratio |\n|---|---|---|---|")
    print(f"| steady tokens/s | {e_rate:,.0f} | {c_rate:,.0f} | {c_rate / e_rate:.2f}× |")
    print(f"| first 5 steps (s), median | {e_warm:.1f} | {c_warm:.1f} | |")
    print(f"| first 5 steps (s), first run (cold compile cache) | {res[False][0][0]:.1f} | {res[True][0][0]:.1f} "
          f"| compile ≈ {compile_s:.0f} s |")
    print(f"| break-even | | after ≈ {breakeven:.0f} s of compiled training | |")


if __name__ == "__main__":
    main()
