"""Training tokens/s: collapse's loop vs a Hugging Face Trainer, same model, data and settings.

    python benchmarks/bench_train.py [--preset small] [--steps 40] [--repeats 3]

Both train the same freshly initialized Llama on the same packed blocks with
AdamW, warmup + cosine, gradient clipping and the same batch size, in fp32 on
the CPU (see --precision). Runs alternate (ours, Trainer, ours, ...) so machine
noise hits both; medians and their ratio are printed as a Markdown row.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from benchmarks.common import machine, median, quickstart_inputs
from collapse.config import ModelConfig, TrainConfig
from collapse.lm.model import build_model, resolved_dims
from collapse.lm.train import pack, train


def ours(model, docs, eos, seq_len, cfg, precision) -> float:
    res = train(model, docs, eos, seq_len, cfg, torch.device("cpu"), seed=0, progress=False, precision=precision)
    return res.tokens / res.seconds


def hf_trainer(model, blocks, cfg, precision) -> float:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    n = cfg.max_steps * cfg.batch_size
    ds = Dataset.from_dict({"input_ids": blocks[:n].tolist(), "labels": blocks[:n].tolist()})
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=cfg.batch_size, max_steps=cfg.max_steps,
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay, adam_beta2=0.95, warmup_steps=int(cfg.warmup_frac * cfg.max_steps),
            lr_scheduler_type="cosine", max_grad_norm=cfg.grad_clip, logging_strategy="no", save_strategy="no",
            report_to=[], use_cpu=True, dataloader_num_workers=0, bf16=precision == "bf16", disable_tqdm=True, seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=ds)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    return cfg.max_steps * cfg.batch_size * blocks.shape[1] / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--compare-precision", action="store_true", help="our loop in fp32 vs bf16 autocast instead")
    a = ap.parse_args()
    cfg, tok, docs, _ = quickstart_inputs()
    mcfg = ModelConfig(preset=a.preset)
    seq_len = resolved_dims(mcfg)["seq_len"]
    tcfg = TrainConfig(epochs=1, max_steps=a.steps, batch_size=cfg.train.batch_size, lr=cfg.train.lr, precision=a.precision)
    blocks = pack(docs, tok.eos_token_id, seq_len)
    if len(blocks) < a.steps * tcfg.batch_size:
        raise SystemExit(f"need {a.steps * tcfg.batch_size} blocks, have {len(blocks)}: lower --steps")
    if a.compare_precision:
        res = {"fp32": [], "bf16": []}
        for _ in range(a.repeats):
            for p in res:
                res[p].append(ours(build_model(mcfg, len(tok), tok.eos_token_id, 0), docs, tok.eos_token_id, seq_len, tcfg, p))
            print({k: round(v[-1]) for k, v in res.items()}, flush=True)
        f, b = median(res["fp32"]), median(res["bf16"])
        print(f"# {machine()}; CPU capability {torch.backends.cpu.get_cpu_capability()}")
        print(f"| train tokens/s, {a.preset}, batch {tcfg.batch_size}×{seq_len}, {a.steps} steps, median of {a.repeats} "
              f"| bf16 autocast {b:,.0f} | fp32 {f:,.0f} | {b / f:.2f}× |")
        return
    res = {"ours": [], "trainer": []}
    for _ in range(a.repeats):
        res["ours"].append(ours(build_model(mcfg, len(tok), tok.eos_token_id, 0), docs, tok.eos_token_id, seq_len, tcfg, a.precision))
        res["trainer"].append(hf_trainer(build_model(mcfg, len(tok), tok.eos_token_id, 0), blocks, tcfg, a.precision))
        print({k: round(v[-1]) for k, v in res.items()}, flush=True)
    o, t = median(res["ours"]), median(res["trainer"])
    print(f"# {machine()}")
    print(f"| train tokens/s, {a.preset}, {a.precision}, batch {tcfg.batch_size}×{seq_len}, {a.steps} steps, median of {a.repeats} "
          f"| {o:,.0f} | {t:,.0f} (HF Trainer) | {o / t:.2f}× |")


if __name__ == "__main__":
    main()
