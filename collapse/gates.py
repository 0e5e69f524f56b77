"""Synthetic-data gates: filters every sample must pass before it enters a pool.

``sample.gates`` lists them, applied in that order (a sample rejected by one
gate is not shown to the next):

- ``syntax``: the sample parses (:func:`ast.parse`); reason ``syntax_error``.
- ``dedup``: the sample is neither an exact duplicate (whitespace-normalized
  text, as the human corpus's ``exact_dedup``) nor a near duplicate (MinHash
  LSH with ``data.near_dedup_threshold`` / ``num_perm`` / ``ngram``, as
  ``near_dedup``) of anything already in the pools (the human train split
  and the saved samples of earlier generations) or of a sample of this
  generation that passed this gate before it (a later gate may still drop
  that one: a repeat of a rejected sample is still a repeat). Reasons
  ``exact_duplicate``, ``near_duplicate``.
- ``perplexity``: the sample's perplexity under the generation-0 model
  (``exp`` of the mean next-token NLL of its whole text, prompt included, as
  :func:`collapse.lm.train.sequence_nll` scores it) lies within the band
  ``sample.gate_perplexity_band`` = quantiles (default 5% and 95%) of the
  perplexities of held-out *human* functions under that same model, so the
  gate keeps samples that look like human code to a model trained on human
  code only, and the band does not drift with the samples (a band from the
  samples' own perplexities would keep a fixed share of whatever the model
  writes). The reference texts are the first
  ``sample.gate_perplexity_reference`` functions of the human validation
  split (held out from training; its order is a content-hash shuffle, so
  a prefix is a fair sample). Reasons ``perplexity_low``, ``perplexity_high``.
- ``execution``: the sample runs in :mod:`collapse.sandbox` (defining its
  function; nothing calls it) to its end, without error (an early exit, even
  with status 0, is a failure) within ``sample.gate_timeout_s``
  and ``sample.gate_memory_mb``; generated code is never executed any other
  way. When the rows carry a ``tests`` column (test code per sample, e.g. for
  prompted tasks), or the gate is given a ``tests`` callable, each sample
  runs followed by its tests and must pass them. Reasons ``exec_<status>``
  (``exec_failed``, ``exec_timeout``, ``exec_blocked``, ...).

Each gate is a filter of :mod:`collapse.filtering` (the human-corpus
pipeline's steps are too), and :data:`GATES` is their registry.
:class:`GateChain`, a :class:`collapse.filtering.FilterRunner`, applies them
and counts, over every draw of a generation, how many samples each gate saw
and accepted;
:meth:`GateChain.metrics` returns them as flat metrics
(``gate.<name>.accept_rate``, ``gate.<name>.seen``, ``gate.<name>.accepted``,
``gate.<name>.rejected.<reason>``, and overall ``gate.accept_rate``,
``gate.drawn``, ``gate.accepted``; a rate is left out when its gate saw
nothing). The sampler (``LMGenerator.sample``)
draws again until the configured number of samples passed or
``sample.max_attempts`` rounds were drawn, and adds ``gate.attempts`` and
``gate.shortfall``.
"""

from __future__ import annotations

import abc
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

from collapse.data.neardup import NearDupIndex
from collapse.data.pipeline import content_hash
from collapse.filtering import Columns, FilterRunner
from collapse.sandbox import Limits, run_many
from collapse.syntax import parses

__all__ = ["GATES", "Gate", "SyntaxGate", "DedupGate", "PerplexityGate", "ExecutionGate", "GateChain",
           "DedupReference", "perplexities", "perplexity_band"]



class Gate(abc.ABC):
    """One filter (:class:`collapse.filtering.Filter`): :meth:`check` says, per text, None (accept) or
    why it is rejected."""

    name = "gate"
    reasons: tuple[str, ...] = ()

    @abc.abstractmethod
    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        """None (accept) or a reason, per text; ``columns`` holds other fields of the same rows."""


class SyntaxGate(Gate):
    name = "syntax"
    reasons = ("syntax_error",)

    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        return [None if parses(t) else "syntax_error" for t in texts]


class DedupReference:
    """What the dedup gate compares against: exact hashes and a near-duplicate index of the pools.

    Grows by whole pools (:meth:`add_pool`); ``pools`` names what it holds.
    """

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, ngram: int = 5):
        self.index = NearDupIndex(threshold, num_perm, ngram)
        self.hashes: set[str] = set()
        self.pools: set[Any] = set()

    def add_pool(self, name: Any, texts: Sequence[str]) -> None:
        if name in self.pools:
            return
        self.index.extend(list(texts))
        self.hashes.update(content_hash(t) for t in texts)
        self.pools.add(name)


class DedupGate(Gate):
    name = "dedup"
    reasons = ("exact_duplicate", "near_duplicate")

    def __init__(self, reference: DedupReference | None = None, threshold: float = 0.85, num_perm: int = 128,
                 ngram: int = 5):
        self.reference = reference or DedupReference(threshold, num_perm, ngram)
        idx = self.reference.index
        self.session = NearDupIndex(idx.threshold, idx.num_perm, idx.ngram, idx.seed)
        self.session_hashes: set[str] = set()

    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        hashes = [content_hash(t) for t in texts]
        in_pools = self.reference.index.add(texts, only_check=True) if len(self.reference.index) else [None] * len(texts)
        out: list[str | None] = []
        for t, h, pooled in zip(texts, hashes, in_pools):
            if h in self.reference.hashes or h in self.session_hashes:
                out.append("exact_duplicate")
            elif pooled is not None:
                out.append("near_duplicate")
            elif self.session.add([t])[0] is not None:
                out.append("near_duplicate")
            else:
                self.session_hashes.add(h)
                out.append(None)
        return out


def perplexities(model: Any, tokenizer: Any, texts: Sequence[str], eos_id: int, device: Any, precision: str = "fp32",
                 max_len: int | None = None, batch_size: int = 32) -> np.ndarray:
    """Perplexity of each text under ``model``: exp(mean next-token NLL), scored as ``[eos] + tokens``
    (inf for a text without tokens)."""
    from collapse.lm.train import sequence_nll, tokenize_texts  # torch: imported when used

    if not len(texts):
        return np.zeros(0)
    seqs = tokenize_texts(tokenizer, list(texts))
    nll, cnt = sequence_nll(model, seqs, eos_id, device, precision, batch_size=batch_size, max_len=max_len)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(cnt > 0, np.exp(nll / np.maximum(cnt, 1)), np.inf)


def perplexity_band(reference_ppl: np.ndarray, quantiles: Sequence[float]) -> tuple[float, float]:
    """The (low, high) perplexities at the two quantiles of the finite reference perplexities."""
    finite = np.asarray(reference_ppl, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        raise ValueError("perplexity gate: no reference text has a finite perplexity")
    lo, hi = np.quantile(finite, [quantiles[0], quantiles[1]])
    return float(lo), float(hi)


class PerplexityGate(Gate):
    """Keeps texts whose perplexity lies in ``band`` = (low, high), inclusive.

    ``score(texts) -> perplexities`` computes them (see :func:`perplexities`).
    """

    name = "perplexity"
    reasons = ("perplexity_low", "perplexity_high")

    def __init__(self, score: Callable[[list[str]], np.ndarray], band: tuple[float, float]):
        self.score = score
        self.band = band

    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        ppl = self.score(texts) if texts else []
        lo, hi = self.band
        return ["perplexity_low" if p < lo else "perplexity_high" if not p <= hi else None for p in ppl]


class ExecutionGate(Gate):
    """Keeps texts that run in the sandbox without error (followed by their tests, when there are any).

    ``runner(programs, limits) -> results`` defaults to
    :func:`collapse.sandbox.run_many`; results need ``ok`` and ``status``.
    ``tests(texts) -> list[str | None]`` gives test code per text; a
    ``tests`` column in the rows does the same and wins.
    """

    name = "execution"
    reasons = ("exec_failed", "exec_blocked", "exec_timeout", "exec_memory", "exec_killed", "exec_output_limit",
               "exec_error")

    def __init__(self, limits: Any = None, runner: Callable[..., list[Any]] | None = None,
                 tests: Callable[[list[str]], list[str | None]] | None = None, progress: bool = False):
        self.limits = limits
        self.runner = runner
        self.tests = tests
        self.progress = progress

    def check(self, texts: list[str], columns: Columns | None = None) -> list[str | None]:
        if not texts:
            return []
        tests: list[str | None] | None = None
        if columns and "tests" in columns:
            tests = columns["tests"]
        elif self.tests is not None:
            tests = self.tests(texts)
        programs = [t if not (tests and tests[i]) else f"{t}\n\n\n{tests[i]}\n" for i, t in enumerate(texts)]
        runner = self.runner
        if runner is None:
            limits = self.limits or Limits()
            results = run_many(programs, limits, progress=self.progress, desc="execution gate")
        else:
            results = runner(programs, self.limits)
        return [None if r.ok else f"exec_{r.status}" for r in results]


#: The gate registry: the names ``sample.gates`` takes, in the order the docs list them. Each gate's
#: own arguments (the pools, the perplexity band, sandbox limits) come from whoever builds it
#: (``LMGenerator._gates``).
GATES: dict[str, type[Gate]] = {g.name: g for g in (SyntaxGate, DedupGate, PerplexityGate, ExecutionGate)}


class GateChain(FilterRunner):
    """Gates applied in order (a :class:`collapse.filtering.FilterRunner`), with counts accumulated over
    every call (every draw of a generation) and reported as the ``gate.*`` metrics."""

    def __init__(self, gates: Sequence[Gate], exclusions: list[dict[str, Any]] | None = None):
        super().__init__(gates, exclusions, record=())
        self.gates = self.filters

    # The names the sampler's log and older callers read.
    @property
    def seen(self) -> dict[str, int]:
        return {name: c.seen for name, c in self.counts.items()}

    @property
    def accepted(self) -> dict[str, int]:
        return {name: c.kept for name, c in self.counts.items()}

    @property
    def rejected(self) -> dict[str, Counter]:
        """Per gate, the reasons it rejected for at least once, with their counts."""
        return {name: Counter({why: n for why, n in c.dropped.items() if n}) for name, c in self.counts.items()}

    @property
    def drawn(self) -> int:
        return self.rows_in

    @property
    def passed(self) -> int:
        return self.rows_kept

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        rejected = self.rejected
        for g in self.gates:
            n, a = self.seen[g.name], self.accepted[g.name]
            out[f"gate.{g.name}.seen"] = n
            out[f"gate.{g.name}.accepted"] = a
            if n:
                out[f"gate.{g.name}.accept_rate"] = a / n
            for why, c in sorted(rejected[g.name].items()):
                out[f"gate.{g.name}.rejected.{why}"] = c
        out["gate.drawn"] = self.drawn
        out["gate.accepted"] = self.passed
        if self.drawn:
            out["gate.accept_rate"] = self.passed / self.drawn
        return out
