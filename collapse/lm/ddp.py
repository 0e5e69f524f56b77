"""Data-parallel training of one generation under ``torchrun``.

The experiment stays one process: it samples, measures, logs and writes.
When ``train.nproc > 1``, :func:`fit_distributed` hands the training step to
``torchrun --standalone --nproc_per_node N -m collapse.lm.ddp JOB`` with the
model and tokenized documents in a job folder; every rank trains its share of
each global batch under DistributedDataParallel (nccl on GPUs, one per rank;
gloo on CPU), and only rank 0 writes the trained model and its statistics
back. On a Slurm node the same call uses the node's GPUs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from collapse.config import TrainConfig
from collapse.errors import CollapseError
from collapse.lm.model import load_model
from collapse.lm.train import TrainResult, train


def fit_distributed(model, docs: list[list[int]], eos_id: int, seq_len: int, cfg: TrainConfig, device: torch.device,
                    seed: int, precision: str, nproc: int, val_blocks: torch.Tensor | None = None,
                    progress: bool = True, desc: str = "train", workdir: str | Path | None = None):
    """Train under ``torchrun`` with ``nproc`` processes; returns (trained model, TrainResult)."""
    with tempfile.TemporaryDirectory(prefix="ddp-", dir=workdir) as tmp:
        job = Path(tmp)
        model.save_pretrained(str(job / "init"), safe_serialization=True)
        torch.save({"docs": docs, "val_blocks": val_blocks}, job / "inputs.pt")
        (job / "job.json").write_text(json.dumps({
            "eos_id": eos_id, "seq_len": seq_len, "train": dataclasses.asdict(cfg), "device": device.type,
            "seed": seed, "precision": precision, "progress": progress, "desc": desc}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "collapse.lm.ddp", str(job)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0 or not (job / "result.json").exists():
            tail = " | ".join(r.stdout.strip().splitlines()[-3:])
            raise CollapseError(f"distributed training with {nproc} processes failed (exit {r.returncode}): {tail}")
        res = TrainResult(**json.loads((job / "result.json").read_text()))
        trained = load_model(job / "out").to(device)
    return trained, res


def _worker(job: Path) -> None:
    import torch.distributed as dist

    spec = json.loads((job / "job.json").read_text())
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if spec["device"] == "cuda":
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend=backend)
    try:
        inputs = torch.load(job / "inputs.pt", weights_only=False)
        model = load_model(job / "init")
        res = train(model, inputs["docs"], spec["eos_id"], spec["seq_len"], TrainConfig(**spec["train"]), device,
                    seed=spec["seed"], val_blocks=inputs["val_blocks"], progress=spec["progress"], desc=spec["desc"],
                    precision=spec["precision"], rank=rank, world=world)
        if rank == 0:
            model.save_pretrained(str(job / "out"), safe_serialization=True)
            (job / "result.json").write_text(json.dumps(dataclasses.asdict(res)))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
