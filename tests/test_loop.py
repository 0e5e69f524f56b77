"""The generation loop with a toy generator and an in-memory store: order of calls, callbacks, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from collapse import orchestrator
from collapse.generator import Drawn, GenerationRecord
from collapse.loop import LoopResult, MemoryStore, run_generations
from collapse.mixing import HUMAN, MixSizes

N = 6


class Toy:
    """Samples are arrays of ``generation`` values; every call is written to ``calls``."""

    def __init__(self, calls: list):
        self.calls = calls
        self.timings: dict[str, float] = {}

    def fit(self, train, generation):
        self.calls.append(("fit", generation, sorted(set(train.tolist()))))
        self.timings = {"train_s": float(generation)}
        return {"n": float(len(train))}

    def sample(self, n, generation):
        self.calls.append(("sample", generation))
        return Drawn(np.full(n, float(generation)), {"gate.accept_rate": 0.5})

    def evaluate(self, drawn, generation):
        self.calls.append(("evaluate", generation, type(drawn).__name__, drawn.gate_stats))
        return {"mean": float(np.mean(drawn.samples))}

    def save(self, path):
        self.calls.append(("save", generation_of(path)))


def generation_of(path: Path) -> int:
    return int(str(path))


class DictStore:
    """Keeps committed records in memory; ``done`` pre-seeds a finished prefix."""

    def __init__(self, calls: list, done: dict[int, GenerationRecord] | None = None):
        self.calls = calls
        self.records: dict[int, GenerationRecord] = dict(done or {})

    def is_done(self, generation):
        return generation in self.records

    def restore(self, generation, *, last):
        self.calls.append(("restore", generation, last))
        r = self.records[generation]
        return GenerationRecord(r.generation, r.plan, dict(r.metrics), r.samples)

    def commit(self, record, checkpoint=None):
        self.calls.append(("commit", record.generation, record.train is not None, dict(record.timings),
                           checkpoint is not None))
        if checkpoint is not None:
            checkpoint.save(Path(str(record.generation)))
        self.records[record.generation] = GenerationRecord(record.generation, record.plan, dict(record.metrics),
                                                           record.samples)


class Recorder:
    def __init__(self, calls: list, name: str):
        self.calls, self.name = calls, name

    def on_generation(self, record):
        self.calls.append((self.name, record.generation, record.cached))


def run(calls, store=None, gens=2, regime="replace", callbacks=(), **kw) -> LoopResult:
    return run_generations(Toy(calls), {HUMAN: np.full(N, -1.0)}, regime, MixSizes(human=N, synthetic=N), gens, seed=3,
                           store=store, callbacks=callbacks, **kw)


def test_one_generation_runs_top_to_bottom_then_callbacks_in_order():
    calls: list = []
    store = DictStore(calls)
    res = run(calls, store, gens=1, callbacks=[Recorder(calls, "a"), Recorder(calls, "b")])
    gate = {"gate.accept_rate": 0.5}
    assert calls == [
        ("fit", 0, [-1.0]), ("sample", 0), ("evaluate", 0, "Drawn", gate),
        ("commit", 0, True, {"train_s": 0.0}, True), ("save", 0), ("a", 0, False), ("b", 0, False),
        ("fit", 1, [0.0]), ("sample", 1), ("evaluate", 1, "Drawn", gate),
        ("commit", 1, True, {"train_s": 1.0}, True), ("save", 1), ("a", 1, False), ("b", 1, False),
    ]
    assert [r.metrics for r in res.records] == [{"n": 6.0, "mean": 0.0}, {"n": 6.0, "mean": 1.0}]
    assert res.records[1].gate_stats == gate and res.records[1].train is None  # training sets are not held


def test_plain_function_callback_runs_after_the_callback_objects():
    calls: list = []
    run(calls, gens=0, callbacks=[Recorder(calls, "obj")], on_generation=lambda r: calls.append(("fn", r.generation)))
    assert calls[-2:] == [("obj", 0, False), ("fn", 0)]


def test_a_generator_returning_bare_samples_is_wrapped():
    class Bare(Toy):
        def sample(self, n, generation):
            return np.full(n, float(generation))

    calls: list = []
    res = run_generations(Bare(calls), {HUMAN: np.zeros(N)}, "replace", MixSizes(human=N, synthetic=N), 1, seed=0)
    evals = [c for c in calls if c[0] == "evaluate"]
    assert evals == [("evaluate", 0, "Drawn", {}), ("evaluate", 1, "Drawn", {})]
    assert res.records[0].gate_stats == {}


def test_resume_restores_the_done_prefix_and_computes_the_rest():
    full: list = []
    ref = run(full, DictStore(full), gens=3, regime="accumulate")
    calls: list = []
    done = {g: GenerationRecord(g, r.plan, dict(r.metrics), r.samples) for g, r in enumerate(ref.records[:2])}
    res = run(calls, DictStore(calls, done), gens=3, regime="accumulate", callbacks=[Recorder(calls, "cb")])
    assert calls[:4] == [("restore", 0, False), ("cb", 0, True), ("restore", 1, True), ("cb", 1, True)]
    assert [c for c in calls if c[0] == "fit"] == [("fit", 2, [-1.0, 0.0, 1.0]), ("fit", 3, [-1.0, 0.0, 1.0, 2.0])]
    assert [c[1] for c in calls if c[0] == "commit"] == [2, 3]
    # the restored pools feed later generations exactly as computed ones did
    assert [r.metrics for r in res.records] == [r.metrics for r in ref.records]
    assert [r.cached for r in res.records] == [True, True, False, False]


def test_a_gap_in_done_generations_redoes_from_the_gap():
    calls: list = []
    ref = run([], DictStore([]), gens=2)
    done = {g: ref.records[g] for g in (0, 2)}  # generation 1 has no marker: it and 2 are redone
    run(calls, DictStore(calls, done), gens=2)
    assert [c[1] for c in calls if c[0] == "restore"] == [0]
    assert [c[1] for c in calls if c[0] == "commit"] == [1, 2]


def test_memory_store_keeps_nothing_and_the_loop_is_deterministic():
    a, b = run([], MemoryStore(), gens=3, regime="accumulate_subsample"), run([], None, gens=3, regime="accumulate_subsample")
    assert [r.metrics for r in a.records] == [r.metrics for r in b.records]
    assert not MemoryStore().is_done(0)
    with pytest.raises(RuntimeError):
        MemoryStore().restore(0, last=True)


def test_without_keep_samples_records_drop_them_and_old_pools_go():
    seen: list = []

    class Peek(Toy):
        def fit(self, train, generation):
            seen.append(sorted(set(train.tolist())))
            return super().fit(train, generation)

    res = run_generations(Peek([]), {HUMAN: np.full(N, -1.0)}, "replace", MixSizes(human=N, synthetic=N), 2, seed=0,
                          keep_samples=False)
    assert all(r.samples is None for r in res.records)
    assert seen == [[-1.0], [0.0], [1.0]]


def test_the_old_module_name_still_imports_the_loop():
    assert orchestrator.run_generations is run_generations
    assert orchestrator.GenerationRecord is GenerationRecord and orchestrator.MemoryStore is MemoryStore
