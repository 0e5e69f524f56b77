"""The generator protocol: what the orchestrator knows about a model.

The orchestrator never knows what a "model" is. It hands each generation's
training set to ``fit``, asks ``sample`` for the next synthetic pool, and
``evaluate`` turns samples (and the fitted model) into flat metrics. A code
LM (``collapse.lm.generator.LMGenerator``) and the analytic theory models
(``collapse.theory``) implement the same three methods, so the closed-form
results of the literature test the real loop and the real mixing code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Generator(Protocol):
    def fit(self, train: Any, generation: int) -> dict[str, float]:
        """Fit generation ``generation`` on ``train`` (a ``datasets.Dataset``
        or numpy array built by ``collapse.mixing.apply_plan``); return
        training statistics (flat name → number)."""

    def sample(self, n: int, generation: int) -> Any:
        """Draw ``n`` synthetic examples from the fitted model, in the same
        container type as the pools (Dataset rows or an array)."""

    def evaluate(self, samples: Any, generation: int) -> dict[str, float]:
        """Measure the fitted model and its samples: flat name → number."""


@runtime_checkable
class Checkpointable(Protocol):
    """Generators whose state survives a restart (the LM writes checkpoints)."""

    def save(self, path: Path) -> None: ...

    def load(self, path: Path) -> None: ...
