"""The generator protocol and what one generation hands on: what the loop knows about a model.

The loop (:mod:`collapse.loop`) never knows what a "model" is. It hands each
generation's training set to ``fit``, asks ``sample`` for the next synthetic
pool (a :class:`Drawn`: the samples and what their gates counted), and
``evaluate`` turns them (and the fitted model) into flat metrics. A code LM
(``collapse.lm.generator.LMGenerator``) and the analytic theory models
(``collapse.theory``) implement the same three methods, so the closed-form
results of the literature test the real loop and the real mixing code.

A generation's outcome is one :class:`GenerationRecord`: the store commits
it, then every callback's ``on_generation`` sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from collapse.mixing import Plan


@dataclass
class Drawn:
    """One generation's synthetic pool: ``samples`` (Dataset rows or an array, the
    pools' container type) and ``gate_stats``, the acceptance counts of the gates
    they passed (flat name → number; empty without gates)."""

    samples: Any
    gate_stats: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, out: Any) -> "Drawn":
        """``out`` of a ``sample`` call as a :class:`Drawn` (generators without gates may return the samples)."""
        return out if isinstance(out, Drawn) else cls(out)


@runtime_checkable
class Generator(Protocol):
    def fit(self, train: Any, generation: int) -> dict[str, float]:
        """Fit generation ``generation`` on ``train`` (a ``datasets.Dataset``
        or numpy array built by ``collapse.mixing.apply_plan``); return
        training statistics (flat name → number)."""

    def sample(self, n: int, generation: int) -> Drawn | Any:
        """Draw ``n`` synthetic examples from the fitted model, in the same
        container type as the pools (Dataset rows or an array), as a
        :class:`Drawn` or bare (no gate statistics)."""

    def evaluate(self, drawn: Drawn | Any, generation: int) -> dict[str, float]:
        """Measure the fitted model and its samples: flat name → number."""


@runtime_checkable
class Checkpointable(Protocol):
    """Generators whose state survives a restart (the LM writes checkpoints)."""

    def save(self, path: Path) -> None: ...


@runtime_checkable
class Timed(Protocol):
    """Generators that time their own steps: ``timings`` holds the seconds (and
    rates) of the generation just done, committed as ``timings``."""

    timings: dict[str, float]


@dataclass
class GenerationRecord:
    """What one generation produced: committed by the store, then handed to every callback."""

    generation: int
    plan: Plan
    metrics: dict[str, float]
    samples: Any = None
    train: Any = None
    # per_trial: examples of each pool per trial (K,); under accumulate_subsample
    # from counts (``subsample_stats``) the synthetic pools count as one, SYNTHETIC
    trial_counts: dict[str, np.ndarray] | None = None
    cached: bool = False  # read back from the store (finished earlier), not computed now
    timings: dict[str, float] = field(default_factory=dict)  # seconds of its steps (Timed generators)
    gate_stats: dict[str, float] = field(default_factory=dict)  # acceptance counts of its sample gates
