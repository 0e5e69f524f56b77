"""On the CPU base: do prompted samples parse as often as unconditional ones?

    python benchmarks/bench_prompted.py [--root runs] [--samples 400] [--temperature 0.8] [--lines 1]

Loads the base of ``experiments/pretrain_cpu.yaml`` built under ``--root``
(``collapse pretrain`` builds it; this script does not), then draws
``--samples`` unconditional samples and as many prompted by the first
``--lines`` lines of functions of the base's human training split, cut as
``sample.prompt: signature`` cuts them (before their trailing whitespace), and
reports how often each parses (``ast.parse`` of prompt + completion), with a
95 % Wilson interval, unconditional parse rates by sample length, and the share of prompted samples whose first generated
line is indented (the body continues) rather than a new top-level statement.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from benchmarks.common import REPO, machine
from collapse.syntax import parses


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(REPO / "runs"))
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--lines", type=int, default=1)
    a = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from collapse.config import SampleConfig
    from collapse.registries import load_config
    from collapse.data import prepare_human_data
    from collapse.lm.generator import prompt_of
    from collapse.lm.sample import sample
    from collapse.lm.tokenizer import load_checkpoint_tokenizer
    from collapse.pretrain import pretrain_key

    cfg = load_config(REPO / "experiments" / "pretrain_cpu.yaml", [f"run.root={a.root}", "run.progress=false"])
    human, info = prepare_human_data(cfg.data, Path(a.root) / "_cache", progress=False)
    ckpt = Path(a.root) / "_pretrained" / f"{cfg.run.experiment}-{pretrain_key(cfg, info['key'])}" / "checkpoint"
    if not (ckpt / "config.json").exists():
        print(f"no base at {ckpt}: build it first with collapse pretrain experiments/pretrain_cpu.yaml "
              f"run.root={a.root}", file=sys.stderr)
        return 2
    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    tok = load_checkpoint_tokenizer(str(ckpt))
    eos = tok.eos_token_id
    scfg = SampleConfig(temperature=a.temperature, max_new_tokens=cfg.sample.max_new_tokens, batch_size=200)
    cpu = torch.device("cpu")

    pool = list(human["train"]["text"])
    step = max(1, len(pool) // a.samples)
    prompts = [prompt_of(t, a.lines) for t in pool[::step][: a.samples]]
    rows = {}
    res = sample(model, [[eos]] * a.samples, scfg, eos, 11, cpu, "fp32", progress=False)
    finished = res.finished
    rows["unconditional"] = tok.batch_decode(res.completion_ids, skip_special_tokens=True)
    ids = [[eos] + tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    res = sample(model, ids, scfg, eos, 11, cpu, "fp32", progress=False)
    completions = tok.batch_decode(res.completion_ids, skip_special_tokens=True)
    rows[f"prompted ({a.lines} line{'s' * (a.lines > 1)})"] = [p + c for p, c in zip(prompts, completions)]
    body = sum(c.startswith("\n") and c[1:2] in (" ", "\t") for c in completions)

    print(f"{machine()}; base {ckpt.parent.name}; T = {a.temperature:g}, {a.samples} samples each, "
          f"at most {scfg.max_new_tokens} new tokens")
    print("| samples | parse | 95 % interval |\n|---|---|---|")
    for name, texts in rows.items():
        k = sum(parses(t) for t in texts)
        lo, hi = wilson(k, len(texts))
        print(f"| {name} | {k / len(texts):.1%} | {lo:.1%} – {hi:.1%} |")
    print(f"\nprompted samples whose completion starts an indented line (the body): {body / len(completions):.1%}")
    texts = rows["unconditional"]
    print(f"unconditional samples that reach the {scfg.max_new_tokens}-token limit: "
          f"{sum(not f for f in finished) / len(finished):.1%}")
    print("\n| unconditional sample length (characters) | samples | parse |\n|---|---|---|")
    for lo in range(0, 400, 100):
        part = [t for t in texts if lo <= len(t) < lo + 100 or (lo == 300 and len(t) >= 400)]
        if part:
            label = f"{lo}–{lo + 99}" if lo < 300 else "300 and more"
            print(f"| {label} | {len(part)} | {sum(parses(t) for t in part) / len(part):.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
