"""collapse.run: the notebook API runs what the CLI runs and returns metrics, run directories and samples."""

from __future__ import annotations

import logging
import re

import pytest

import collapse
from collapse.api import resolve_config
from collapse.config import load_config
from collapse.errors import ConfigError
from tests.conftest import TINY


def test_override_spellings_agree():
    a = resolve_config(TINY, run__generations=4, mix={"regime": "accumulate"})
    b = resolve_config(TINY, **{"run.generations": 4, "mix.regime": "accumulate"})
    c = load_config(TINY, ["run.generations=4", "mix.regime=accumulate"])
    assert a == b == c
    d = resolve_config(c.to_dict(), run__seed=7)
    assert d.run.seed == 7 and d.run.generations == 4
    assert resolve_config(c, run__seed=7) == d


@pytest.mark.parametrize("kwargs, message", [
    ({"generations": 3}, "generations: expected a config key"),
    ({"run": 3}, "run: expected a mapping"),
    ({"run__generations": -1}, "run.generations"),
    ({"mix__regime": "sideways"}, "mix.regime"),
])
def test_bad_overrides_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as e:
        resolve_config(TINY, **kwargs)
    assert "\n" not in str(e.value)


def test_the_api_logs_the_cli_lines_unless_the_caller_configured_logging(monkeypatch, capsys):
    from collapse import logs

    root, lg = logging.getLogger(), logging.getLogger("collapse")
    monkeypatch.setattr(root, "handlers", [])  # a fresh interpreter or kernel: nothing configured
    monkeypatch.setattr(lg, "handlers", [])
    monkeypatch.setattr(logs, "_api_handler", None)
    level = lg.level
    lg.setLevel(logging.NOTSET)
    try:
        assert logs.ensure_api_logging() and logs.ensure_api_logging()
        assert len(lg.handlers) == 1, "set up once"
        lg.info("replace s0 gen 1/2 | train 1.0s")
        lg.debug("not shown")
        assert re.fullmatch(r"\d\d:\d\d:\d\d replace s0 gen 1/2 \| train 1\.0s\n", capsys.readouterr().err)
        root.handlers.append(logging.NullHandler())  # the caller configures logging: theirs decides
        assert not logs.ensure_api_logging() and lg.handlers == []
    finally:
        lg.setLevel(level)


def test_time_left_is_the_mean_computed_generation_times_generations_left(monkeypatch):
    from collapse import callbacks

    now = iter([0.0, 5.0, 15.0, 45.0, 65.0])
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: next(now))
    clock = callbacks.GenerationClock(4)
    assert clock.tick(0, cached=True) is None  # read back: no estimate, and not averaged in
    assert clock.tick(1, cached=False) == 10.0 * 3
    assert clock.tick(2, cached=False) == 20.0 * 2
    assert clock.tick(4, cached=False) is None and clock.computed == [10.0, 30.0, 20.0]  # the last: nothing left
    assert [callbacks.duration(s) for s in (4.4, 200, 7500)] == ["4s", "3m20s", "2h05m"]


@pytest.mark.slow
def test_run_returns_metrics_dirs_and_samples(shared_root, tmp_path, caplog):
    kw = dict(run={"root": str(shared_root), "dir": str(tmp_path / "api"), "generations": 1},
              tracking__uri=f"sqlite:///{shared_root}/mlflow.db", mix={"regime": ["replace", "accumulate"]},
              metrics__names=["test_ce", "distinct_n", "syntax_valid"])
    caplog.set_level(logging.INFO, logger="collapse")
    res = collapse.run(TINY, **kw)
    first = {(m[1], int(m[2])): r.getMessage() for r in caplog.records
             for m in [re.search(r"(\w+) s0 gen (\d)/1", r.getMessage())] if m}
    assert "left ~" in first[("replace", 0)] and "(cached)" not in first[("replace", 0)]
    assert "left" not in first[("replace", 1)], "nothing left after the last generation"
    df = res.metrics
    assert sorted(set(df["regime"])) == ["accumulate", "replace"]
    assert df.groupby("regime")["generation"].apply(list).to_dict() == {"accumulate": [0, 1], "replace": [0, 1]}
    assert {"test_ce", "distinct_4", "human.distinct_4"} <= set(df.columns)
    assert res.run_dirs == {"replace": tmp_path / "api" / "replace", "accumulate": tmp_path / "api" / "accumulate"}
    assert res.run_dir == tmp_path / "api"
    texts = res.texts(1, "accumulate", n=3)
    assert len(texts) == 3 and texts == list(res.samples(1, "accumulate")["text"][:3])
    with pytest.raises(ValueError, match="name one"):
        res.samples(1)
    assert "replace: gen 1/1" in repr(res)
    # Same call again: everything is read back, identical numbers.
    caplog.clear()
    again = collapse.run(TINY, **kw)
    assert again.metrics.equals(df)
    gen_lines = [r.getMessage() for r in caplog.records if re.search(r" s0 gen \d/1", r.getMessage())]
    assert len(gen_lines) == 4 and all("(cached)" in x and "left" not in x for x in gen_lines), gen_lines
