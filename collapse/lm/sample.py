"""Batched sampling with a KV cache, written for throughput on small models.

Small code LMs are dominated by per-step overhead, not arithmetic, so the
sampler (1) decodes large batches, (2) drops finished sequences from the batch
and from the KV cache as soon as they emit ``<|endoftext|>`` — the batch
shrinks instead of carrying dead rows to ``max_new_tokens`` — (3) computes
logits for the last position only, and (4) orders prompts by length so left
padding stays short. Temperature, top-k and top-p follow the usual
definitions; a fixed ``torch.Generator`` seed makes the output deterministic
on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from collapse.config import SampleConfig


def _cache_kwarg() -> str:
    """Recent transformers name the KV-cache argument ``cache``; older ones ``past_key_values``."""
    import inspect

    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


_CACHE_KW = _cache_kwarg()


@dataclass
class SampleOutput:
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # generated tokens, EOS excluded
    finished: list[bool]  # True when the sample ended with EOS

    @property
    def useful_tokens(self) -> int:
        return sum(len(c) for c in self.completion_ids)


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """(B, V) logits → (B, V) logits with temperature, top-k and top-p applied."""
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first token always stays).
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


@torch.no_grad()
def sample_batch(model, prompts: list[list[int]], cfg: SampleConfig, eos_id: int, generator: torch.Generator,
                 device: torch.device, precision: str = "fp32", on_tokens=None) -> SampleOutput:
    """Decode one batch of prompts (token-id lists, each non-empty)."""
    from transformers import DynamicCache

    B = len(prompts)
    P = max(len(p) for p in prompts)
    ids = torch.full((B, P), eos_id, dtype=torch.long)
    mask = torch.zeros((B, P), dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding
        ids[i, P - len(p):] = torch.tensor(p)
        mask[i, P - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    alive = torch.arange(B, device=device)  # original row of each live sequence
    out: list[list[int]] = [[] for _ in range(B)]
    finished = [False] * B
    cur, cur_pos = ids, pos
    ac = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for _ in range(cfg.max_new_tokens):
        with ac:
            logits = model(input_ids=cur, attention_mask=mask, position_ids=cur_pos, **{_CACHE_KW: cache},
                           use_cache=True, logits_to_keep=1).logits[:, -1, :].float()  # (b, V)
        if cfg.temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(filter_logits(logits, cfg.temperature, cfg.top_k, cfg.top_p), dim=-1)
            nxt = torch.multinomial(probs.cpu() if generator.device.type == "cpu" else probs, 1, generator=generator).squeeze(-1).to(device)
        done = nxt == eos_id
        nxt_l, alive_l, done_l = nxt.tolist(), alive.tolist(), done.tolist()
        for r, t, d in zip(alive_l, nxt_l, done_l):
            if d:
                finished[r] = True
            else:
                out[r].append(t)
        if on_tokens is not None:
            on_tokens(len(alive_l))
        keep = ~done
        if not bool(keep.any()):
            break
        cur_pos = cur_pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((len(alive_l), 1), dtype=mask.dtype, device=device)], dim=1)
        cur = nxt.unsqueeze(-1)
        if bool(done.any()):
            # Compact: finished rows leave the batch and the KV cache.
            k = keep.nonzero().squeeze(-1)
            cache.batch_select_indices(k)
            alive, mask, cur, cur_pos = alive[k], mask[k], cur[k], cur_pos[k]
    return SampleOutput(prompt_ids=prompts, completion_ids=out, finished=finished)


def sample(model, prompts: list[list[int]], cfg: SampleConfig, eos_id: int, seed: int, device: torch.device,
           precision: str = "fp32", progress: bool = True, desc: str = "sample") -> SampleOutput:
    """Sample one completion per prompt, in batches of ``cfg.batch_size``,
    prompts sorted by length; results come back in the input order."""
    from tqdm.auto import tqdm

    model.to(device)
    was_training = model.training
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    comp: list[list[int]] = [[] for _ in prompts]
    fin = [False] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="sample", disable=not progress, leave=False, dynamic_ncols=True)
    for lo in range(0, len(order), cfg.batch_size):
        rows = order[lo:lo + cfg.batch_size]
        res = sample_batch(model, [prompts[i] for i in rows], cfg, eos_id, gen, device, precision)
        for j, i in enumerate(rows):
            comp[i] = res.completion_ids[j]
            fin[i] = res.finished[j]
        bar.update(len(rows))
    bar.close()
    model.train(was_training)
    return SampleOutput(prompt_ids=prompts, completion_ids=comp, finished=fin)
