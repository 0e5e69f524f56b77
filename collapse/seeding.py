"""Seed streams: every random choice of a run comes from an rng named by
(seed, generation, purpose), so a resumed run draws exactly what an
uninterrupted one would, and two purposes never share numbers.

The purpose is hashed whole (SHA-256), so ``metric:self_bleu`` and
``metric:semantic`` are independent streams however long their common prefix.
Generation :data:`REFERENCE` (-1) is the stream of the human reference, which
belongs to no generation.
"""

from __future__ import annotations

import hashlib

import numpy as np

REFERENCE = -1  # the "generation" of the human reference metrics


def stream_key(seed: int, generation: int, purpose: str) -> list[int]:
    """The SeedSequence entropy of (seed, generation, purpose): the seed, then
    eight 32-bit words of SHA-256 over the generation and the purpose."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if generation < REFERENCE:
        raise ValueError(f"generation must be >= {REFERENCE} (the human reference), got {generation}")
    digest = hashlib.sha256(f"{int(generation)}\x00{purpose}".encode()).digest()
    return [int(seed), *(int(w) for w in np.frombuffer(digest, dtype="<u4"))]


def generation_rng(seed: int, generation: int, purpose: str) -> np.random.Generator:
    """An rng determined by (seed, generation, purpose) alone."""
    return np.random.default_rng(np.random.SeedSequence(stream_key(seed, generation, purpose)))


def torch_seed(seed: int, generation: int, purpose: str) -> int:
    """A torch manual seed from the same stream."""
    return int(generation_rng(seed, generation, purpose).integers(0, 2**62))


__all__ = ["REFERENCE", "stream_key", "generation_rng", "torch_seed"]
