"""The training loop: one plain PyTorch loop, short enough to read top to bottom.

Packed sequences (documents joined by ``<|endoftext|>`` and cut into blocks of
``seq_len`` tokens, so no compute goes to padding), AdamW with weight decay on
matrices only, linear warmup then cosine decay, gradient clipping, autocast
(bf16) when asked, and a validation loss every ``eval_every`` steps (the one at the end of
training is measured by the ``val_loss`` metric).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from collapse.config import TrainConfig


def tokenize_texts(tokenizer, texts: list[str], batch: int = 1000) -> list[list[int]]:
    """Token ids of each text (no special tokens)."""
    out: list[list[int]] = []
    for i in range(0, len(texts), batch):
        out.extend(tokenizer(texts[i:i + batch], add_special_tokens=False)["input_ids"])
    return out


def pack(docs: list[list[int]], eos_id: int, seq_len: int, order: np.ndarray | None = None) -> torch.Tensor:
    """Join documents (each followed by EOS, in ``order``) into one stream and
    cut it into full blocks: (N, seq_len). The ragged tail is dropped."""
    order = np.arange(len(docs)) if order is None else order
    total = sum(len(docs[i]) + 1 for i in order)
    stream = np.empty(total, dtype=np.int64)
    pos = 0
    for i in order:
        d = docs[i]
        stream[pos:pos + len(d)] = d
        stream[pos + len(d)] = eos_id
        pos += len(d) + 1
    n = total // seq_len
    return torch.from_numpy(stream[: n * seq_len].reshape(n, seq_len))


def autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token NLL (nats) of ``targets`` (B, T-1) under ``logits`` (B, T, V), in fp32."""
    lg = logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), targets.reshape(-1),
                                             reduction="none").view(targets.shape)


@torch.no_grad()
def block_losses(model, blocks: torch.Tensor, device: torch.device, precision: str, batch_size: int = 32,
                 token_bytes: torch.Tensor | None = None) -> dict[str, float]:
    """Summed next-token NLL (nats) over packed blocks, the number of predicted
    tokens and, with ``token_bytes``, the UTF-8 bytes those tokens stand for."""
    was_training = model.training
    model.eval()
    nll, ntok, nbytes = 0.0, 0, 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i:i + batch_size].to(device)
        with autocast(device, precision):
            logits = model(input_ids=x, use_cache=False).logits  # (B, T, V)
        tgt = x[:, 1:]
        tok_nll = _token_nll(logits, tgt)  # (B, T-1)
        nll += float(tok_nll.sum())
        ntok += tgt.numel()
        if token_bytes is not None:
            nbytes += int(token_bytes.to(device)[tgt].sum())
    model.train(was_training)
    return {"nll": nll, "tokens": ntok, "bytes": nbytes}


@torch.no_grad()
def sequence_nll(model, seqs: list[list[int]], eos_id: int, device: torch.device, precision: str = "fp32",
                 batch_size: int = 32, max_len: int | None = None,
                 score_from: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence summed next-token NLL (nats) and number of scored tokens.

    Each sequence is scored as ``[eos] + seq`` (the document boundary is the
    context of its first token), cut to ``max_len`` tokens. With
    ``score_from[i] = j``, only tokens ``seq[j:]`` count (a completion given
    its prompt). Sequences are batched by length with right padding, so a
    sequence's score does not depend on its batch mates."""
    was_training = model.training
    model.eval()
    n = len(seqs)
    nll, cnt = np.zeros(n), np.zeros(n, dtype=np.int64)
    full = [([eos_id] + list(s))[:max_len] if max_len else [eos_id] + list(s) for s in seqs]
    order = sorted(range(n), key=lambda i: len(full[i]))
    for b in range(0, n, batch_size):
        idx = [i for i in order[b:b + batch_size] if len(full[i]) > 1]
        if not idx:
            continue
        T = max(len(full[i]) for i in idx)
        x = torch.full((len(idx), T), eos_id, dtype=torch.long)
        mask = torch.zeros((len(idx), T - 1), dtype=torch.bool)
        for r, i in enumerate(idx):
            L = len(full[i])
            x[r, :L] = torch.tensor(full[i])
            start = score_from[i] if score_from is not None else 0  # index into seq = target index into x[1:]
            mask[r, start:L - 1] = True
        x = x.to(device)
        with autocast(device, precision):
            logits = model(input_ids=x, use_cache=False).logits
        tok = _token_nll(logits, x[:, 1:]).cpu()
        tok = tok.masked_fill(~mask, 0.0)
        nll[idx] = tok.sum(1).double().numpy()
        cnt[idx] = mask.sum(1).numpy()
    model.train(was_training)
    return nll, cnt


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    train_loss: float
    val_history: list[tuple[int, float]]  # (step, validation loss) of periodic evaluations

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def as_metrics(self) -> dict[str, float]:
        return {"train_loss": self.train_loss, "train_steps": self.steps, "train_tokens": self.tokens}


def train_flops(n_params: int, tokens: int) -> float:
    """Training compute by the usual estimate: 6 FLOPs per parameter and token
    (2 for the forward pass, 4 for the backward; Kaplan et al. 2020), with
    ``n_params`` every parameter of the model, embeddings included."""
    return 6.0 * float(n_params) * float(tokens)


def plan_steps(n_blocks: int, cfg: TrainConfig, seq_len: int | None = None) -> int:
    """Optimizer steps of one training: ``epochs`` passes over ``n_blocks`` packed
    sequences, or with ``train.tokens_per_generation`` (needs ``seq_len``)
    ceil(tokens / (batch_size · seq_len)) whatever ``n_blocks`` is; ``max_steps`` caps either."""
    if cfg.tokens_per_generation is not None:
        if seq_len is None:
            raise ValueError("plan_steps: train.tokens_per_generation needs seq_len")
        steps = max(1, math.ceil(cfg.tokens_per_generation / (cfg.batch_size * seq_len)))
    else:
        steps = max(1, math.ceil(cfg.epochs * n_blocks / cfg.batch_size))
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def _save_state(path: Path, state: dict) -> None:
    """Write a training state so that a reader never sees half of it (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(model, docs: list[list[int]], eos_id: int, seq_len: int, cfg: TrainConfig, device: torch.device,
          seed: int, val_blocks: torch.Tensor | None = None, progress: bool = True, desc: str = "train",
          precision: str = "fp32", rank: int = 0, world: int = 1, state_path: Path | None = None,
          save_every_s: float = 120.0, on_log: Callable[[int, dict[str, float]], None] | None = None,
          log_every: int = 50) -> TrainResult:
    """Train ``model`` in place on token-id documents ``docs``.

    With ``world > 1`` (inside an initialized process group, see
    :mod:`collapse.lm.ddp`) the model is wrapped in DistributedDataParallel and
    rank ``r`` trains on rows ``r::world`` of every global batch: the same
    batches, the same averaged gradient, so the same model as one process up to
    float summation order.

    With ``state_path`` (one process) the loop is resumable: every
    ``save_every_s`` seconds it saves the model, optimizer and schedule with
    the step reached; called again with the same arguments after a kill, it
    loads that state and goes on from that step. Batches depend on the seed
    and the step alone, so the result equals an uninterrupted run's.
    ``on_log(step, {"train_loss": ..., "val_loss": ...})`` is called every
    ``log_every`` steps (the training curve, e.g. for MLflow)."""
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    # One packing per epoch, each with its own document order.
    n_epochs = max(1, math.ceil(cfg.epochs)) if cfg.tokens_per_generation is None else 1
    epoch_blocks = [pack(docs, eos_id, seq_len, rng.permutation(len(docs))) for _ in range(n_epochs)]
    if len(epoch_blocks[0]) == 0:
        raise ValueError("training set holds fewer tokens than one sequence")
    steps = plan_steps(len(epoch_blocks[0]), cfg, seq_len)
    if cfg.tokens_per_generation is not None:
        # A fixed token budget: as many passes (each in a new order) as its steps need, so no batch wraps around.
        while sum(len(b) for b in epoch_blocks) < steps * cfg.batch_size:
            epoch_blocks.append(pack(docs, eos_id, seq_len, rng.permutation(len(docs))))
    blocks = torch.cat(epoch_blocks)
    # Each epoch's blocks are shuffled too, so a batch mixes distant documents.
    perm = torch.cat([torch.randperm(len(b), generator=torch.Generator().manual_seed(seed + i)) + sum(len(e) for e in epoch_blocks[:i])
                      for i, b in enumerate(epoch_blocks)])

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    sched = get_cosine_schedule_with_warmup(opt, int(cfg.warmup_frac * steps), steps)
    model.to(device)
    model.train()
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    elif cfg.compile:
        from torch import _dynamo as dynamo

        # Where compiling fails (e.g. no C++ compiler for inductor on a CPU), train eagerly, with torch's warning.
        dynamo.config.suppress_errors = True
        net = torch.compile(model)  # same parameters: model.state_dict() and evaluation stay eager
    losses: list[float] = []
    val_history: list[tuple[int, float]] = []
    start, elapsed = 0, 0.0
    if state_path is not None and Path(state_path).exists():
        st = torch.load(state_path, map_location=device, weights_only=False)
        if st.get("steps") != steps:
            raise ValueError(f"{state_path}: saved for a run of {st.get('steps')} steps, this one has {steps}")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start, elapsed, losses, val_history = st["step"], st["seconds"], st["losses"], st["val_history"]
    tokens_per_step = cfg.batch_size * seq_len
    t0 = time.perf_counter() - elapsed
    saved_at = time.perf_counter()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=desc, disable=not progress or rank != 0,
               leave=False, dynamic_ncols=True, unit="step")
    for step in bar:
        lo = (step * cfg.batch_size) % len(blocks)
        idx = perm[lo:lo + cfg.batch_size]
        if world > 1:
            idx = idx[rank::world]
        x = blocks[idx].to(device)  # (B, T)
        with autocast(device, precision):
            loss = net(input_ids=x, labels=x).loss
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if world > 1:  # the global batch's loss, as one process would report it
            loss = loss.detach().clone()
            torch.distributed.all_reduce(loss)
            loss /= world
        losses.append(float(loss.detach()))
        if cfg.eval_every and val_blocks is not None and (step + 1) % cfg.eval_every == 0 and step + 1 < steps:
            r = block_losses(model, val_blocks, device, precision)
            val_history.append((step + 1, r["nll"] / r["tokens"]))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", val=f"{val_history[-1][1]:.3f}")
        elif step % 10 == 0:
            rate = (step + 1 - start) * tokens_per_step / max(time.perf_counter() - t0 - elapsed, 1e-9)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", tok_s=f"{rate:,.0f}")
        if on_log is not None and ((step + 1) % log_every == 0 or step + 1 == steps):
            logged = {"train_loss": float(np.mean(losses[-log_every:]))}
            if val_history and val_history[-1][0] == step + 1:
                logged["val_loss"] = val_history[-1][1]
            on_log(step + 1, logged)
        if state_path is not None and step + 1 < steps and time.perf_counter() - saved_at >= save_every_s:
            _save_state(Path(state_path), {
                "steps": steps, "step": step + 1, "seconds": time.perf_counter() - t0, "losses": losses,
                "val_history": val_history, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict()})
            saved_at = time.perf_counter()
    bar.close()
    seconds = time.perf_counter() - t0
    tail = losses[-max(1, min(20, len(losses) // 5)):]
    return TrainResult(steps=steps, tokens=steps * cfg.batch_size * seq_len, seconds=seconds,
                       train_loss=float(np.mean(tail)), val_history=val_history)
