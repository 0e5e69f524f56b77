"""collapse.run: the notebook API runs what the CLI runs and returns metrics, run directories and samples."""

from __future__ import annotations

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


@pytest.mark.slow
def test_run_returns_metrics_dirs_and_samples(shared_root, tmp_path):
    kw = dict(run={"root": str(shared_root), "dir": str(tmp_path / "api"), "generations": 1},
              tracking__uri=f"sqlite:///{shared_root}/mlflow.db", mix={"regime": ["replace", "accumulate"]},
              metrics__names=["test_ce", "distinct_n", "syntax_valid"])
    res = collapse.run(TINY, **kw)
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
    again = collapse.run(TINY, **kw)
    assert again.metrics.equals(df)
