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


def split_prompt(text: str, lines: int) -> tuple[str, str]:
    """``(prompt, rest)`` of a human function: the first ``lines`` lines, cut
    before the whitespace that ends them, and everything after.

    Why cut there: the byte-level BPE pre-tokenizer makes a run of whitespace
    one piece, so in training the newline after a signature and the next
    line's indentation are one token (``'):'``, ``'\\n   '``, ``' return'``). A
    prompt that ended with its bare ``"\\n"`` would end on a token the model
    never saw before a body, and the model would start a new top-level
    statement. Cut before the whitespace run, ``prompt`` tokenizes exactly as
    the same characters do inside the whole function, and the model writes the
    newline and the indentation itself. ``prompt + rest == text``.
    """
    cut = 0
    for _ in range(lines):
        nl = text.find("\n", cut)
        if nl == -1:
            cut = len(text)
            break
        cut = nl + 1
    prompt = text[:cut].rstrip()
    return prompt, text[len(prompt):]


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


def _kv_cache(capacity: int):
    """A DynamicCache whose layers append in place into preallocated storage.

    The stock layer appends with ``torch.cat``, copying the whole cache at
    every step (quadratic in the sample length); here each layer keeps
    (B, H, capacity, D) buffers and exposes views of the filled part."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class InPlaceLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                B, H, _, D = key_states.shape
                self._k = key_states.new_empty((B, H, capacity, D))
                self._v = value_states.new_empty((B, H, capacity, D))
                self._n = 0
            T = key_states.shape[-2]
            if self._n + T > self._k.shape[-2]:  # past the planned capacity: grow
                grow = max(T, self._k.shape[-2])
                self._k = torch.cat([self._k, self._k.new_empty(self._k.shape[:2] + (grow,) + self._k.shape[3:])], dim=-2)
                self._v = torch.cat([self._v, self._v.new_empty(self._v.shape[:2] + (grow,) + self._v.shape[3:])], dim=-2)
            self._k[:, :, self._n:self._n + T] = key_states
            self._v[:, :, self._n:self._n + T] = value_states
            self._n += T
            self.keys, self.values = self._k[:, :, :self._n], self._v[:, :, :self._n]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized:
                self._k, self._v = self._k[indices], self._v[indices]
                self.keys, self.values = self._k[:, :, :self._n], self._v[:, :, :self._n]

    cache = DynamicCache()
    if getattr(cache, "layer_class_to_replicate", None) is None:  # older transformers: stock layers
        return cache
    cache.layer_class_to_replicate = InPlaceLayer
    return cache


def draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of (B, V) probabilities by inverse-CDF sampling: one
    uniform number per row instead of ``torch.multinomial``'s V exponentials."""
    cdf = probs.float().cumsum(-1)  # (B, V)
    u = torch.rand((probs.shape[0], 1), generator=generator, device=generator.device).to(probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


@torch.no_grad()
def sample_batch(model, prompts: list[list[int]], cfg: SampleConfig, eos_id: int, generator: torch.Generator,
                 device: torch.device, precision: str = "fp32", compact_at: float = 0.2) -> SampleOutput:
    """Decode one batch of prompts (token-id lists, each non-empty). Finished
    rows leave the batch once they make up ``compact_at`` of it."""
    B = len(prompts)
    P = max(len(p) for p in prompts)
    ids = torch.full((B, P), eos_id, dtype=torch.long)
    mask = torch.zeros((B, P), dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding
        ids[i, P - len(p):] = torch.tensor(p)
        mask[i, P - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = _kv_cache(P + cfg.max_new_tokens)
    alive = torch.arange(B, device=device)  # original row of each sequence still in the batch
    dead = torch.zeros(B, dtype=torch.bool, device=device)  # finished, waiting for the next compaction
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
            nxt = draw(probs, generator).to(device)
        hit_eos = (nxt == eos_id) & ~dead
        for r, t, d, e in zip(alive.tolist(), nxt.tolist(), dead.tolist(), hit_eos.tolist()):
            if e:
                finished[r] = True
            elif not d:
                out[r].append(t)
        dead = dead | hit_eos
        n_dead = int(dead.sum())
        if n_dead == len(dead):
            break
        cur_pos = cur_pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((len(dead), 1), dtype=mask.dtype, device=device)], dim=1)
        cur = nxt.unsqueeze(-1)
        if n_dead >= max(1, int(compact_at * len(dead))):
            # Compact: finished rows leave the batch and the KV cache. Done
            # lazily, since every compaction copies the whole cache.
            k = (~dead).nonzero().squeeze(-1)
            cache.batch_select_indices(k)
            alive, mask, cur, cur_pos, dead = alive[k], mask[k], cur[k], cur_pos[k], dead[k]
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
