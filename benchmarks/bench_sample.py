"""Sampling throughput: collapse's sampler vs ``model.generate``, same model, settings and batch size.

    python benchmarks/bench_sample.py [--samples 512] [--batch 256] [--train-steps 150] [--repeats 3]

Counts useful tokens only: generated tokens before each sample's EOS, no
padding. The model is first trained briefly on the stdlib corpus so that it
ends samples the way real generations do (an untrained model never emits EOS).
Runs alternate so noise hits both; medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import machine, median, quickstart_inputs
from collapse.config import SampleConfig, TrainConfig
from collapse.lm.model import build_model, resolved_dims
from collapse.lm.sample import sample
from collapse.lm.train import train


def ours(model, n, cfg, eos) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = sample(model, [[eos]] * n, cfg, eos, seed=0, device=torch.device("cpu"), progress=False)
    return out.useful_tokens / (time.perf_counter() - t0), out.useful_tokens


@torch.no_grad()
def generate(model, n, cfg, eos) -> tuple[float, int]:
    torch.manual_seed(0)
    useful = 0
    t0 = time.perf_counter()
    for lo in range(0, n, cfg.batch_size):
        b = min(cfg.batch_size, n - lo)
        x = torch.full((b, 1), eos)
        out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=True, temperature=cfg.temperature,
                             top_k=0, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, eos_token_id=eos,
                             pad_token_id=eos)[:, 1:]
        for row in out.tolist():
            useful += row.index(eos) if eos in row else len(row)
    return useful / (time.perf_counter() - t0), useful


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cfg, tok, docs, _ = quickstart_inputs()
    eos = tok.eos_token_id
    seq_len = resolved_dims(cfg.model)["seq_len"]
    model = build_model(cfg.model, len(tok), eos, 0)
    train(model, docs, eos, seq_len, TrainConfig(max_steps=a.train_steps, batch_size=cfg.train.batch_size, lr=cfg.train.lr,
                                                 precision="fp32"), torch.device("cpu"), 0, progress=False)
    model.eval()
    scfg = SampleConfig(temperature=cfg.sample.temperature, top_p=cfg.sample.top_p, max_new_tokens=cfg.sample.max_new_tokens,
                        batch_size=a.batch)
    res = {"ours": [], "generate": []}
    for _ in range(a.repeats):
        r, n1 = ours(model, a.samples, scfg, eos)
        res["ours"].append(r)
        r, n2 = generate(model, a.samples, scfg, eos)
        res["generate"].append(r)
        print({k: round(v[-1]) for k, v in res.items()}, "useful tokens", n1, n2, flush=True)
    o, g = median(res["ours"]), median(res["generate"])
    print(f"# {machine()}")
    print(f"| sampling useful tokens/s, {cfg.model.preset}, {a.samples} samples, batch {a.batch}, max_new_tokens "
          f"{scfg.max_new_tokens}, median of {a.repeats} | {o:,.0f} | {g:,.0f} (model.generate) | {o / g:.2f}× |")


if __name__ == "__main__":
    main()
