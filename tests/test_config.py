"""Config tree: YAML + overrides, validation with one-line errors, shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from collapse.config import Config, describe
from collapse.registries import load_config
from collapse.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_valid():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.regimes == ["replace"]


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("mix:\n  regime: replace\ntrain:\n  lr: 0.001\n")
    cfg = load_config(p, ["mix.regime=accumulate", "run.seed=3", "train.lr=2e-3", "data.max_examples=null"])
    assert cfg.mix.regime == "accumulate" and cfg.run.seed == 3 and cfg.train.lr == 0.002
    assert cfg.run.experiment == "exp"  # from the file name
    cfg = load_config(p, ["mix.regime=[replace, fixed_fraction]"])
    assert cfg.regimes == ["replace", "fixed_fraction"]
    assert cfg.for_regime("fixed_fraction").mix.regime == "fixed_fraction"


def test_int_widens_to_float_but_not_the_reverse():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match=r"^run.seed: expected int, got 1.5$"):
        load_config(None, ["run.seed=1.5"])


@pytest.mark.parametrize("override, message", [
    ("mix.regime=foo", "mix.regime: expected one of replace, accumulate"),
    ("model.preset=huge", "model.preset: expected one of tiny, small, base"),
    ("train.lr=abc", "train.lr: expected float, got 'abc'"),
    ("train.lr=-1", "train.lr: expected > 0, got -1.0"),
    ("run.seed=-2", "run.seed: expected >= 0"),
    ("sample.top_p=1.5", "sample.top_p: expected in (0, 1]"),
    ("mix.human_fraction=2", "mix.human_fraction: expected in [0, 1]"),
    ("foo.bar=1", "foo: unknown key"),
    ("train.learning_rate=1", "train.learning_rate: unknown key"),
    ("model.init_mode=warm", "model.init_mode: expected one of 'fresh', 'continue', 'base'"),
    ("metrics.names=[nope]", "metrics.names: unknown metric 'nope'"),
    ("train.precision=fp16", "train.precision: expected one of 'auto', 'bf16', 'fp32'"),
    ("data.min_chars=5000", "data.min_chars: expected < data.max_chars"),
    ("run.progress=maybe", "run.progress: expected bool"),
    ("model.hidden_size=100", "model.hidden_size: expected a multiple of model.num_heads"),
])
def test_bad_values_name_the_key(override, message):
    if override.startswith("model.hidden_size"):
        override = [override, "model.num_heads=3"]
    else:
        override = [override]
    with pytest.raises(ConfigError) as e:
        load_config(None, override)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_malformed_yaml_is_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("mix:\n  regime: [replace\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "malformed YAML" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_override_syntax():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["mix.regime"])
    with pytest.raises(ConfigError, match="run.seed: expected int"):
        load_config(None, ["run.seed.x=1"])
    with pytest.raises(ConfigError, match="run.seed.x: run is not a section|seed is not a section"):
        load_config(None, ["run.seed=1", "run.seed.x=1"])


def test_resolved_config_round_trips():
    cfg = load_config(None, ["mix.regime=fresh", "data.train_size=100"])
    assert load_config(None) != cfg
    from collapse.registries import from_dict

    assert from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_describe_lists_every_key_with_a_doc():
    text = describe()
    for key in ("data.source", "mix.regime", "model.init_mode", "run.generations", "tracking.uri"):
        assert key in text
    assert all(line.split(": ", 1)[1] for line in text.splitlines())


LM_RECIPES = sorted(p for p in (REPO / "experiments").glob("*.yaml") if not p.name.startswith("theory_"))


@pytest.mark.parametrize("path", LM_RECIPES, ids=[p.name for p in LM_RECIPES])
def test_shipped_lm_recipes_validate(path):
    cfg = load_config(path)
    assert cfg.run.experiment


def test_recipes_exist():
    names = {p.name for p in LM_RECIPES}
    assert {"tiny.yaml", "quickstart.yaml"} <= names


def test_help_config_lists_the_registries_names():
    from collapse.registries import REGISTRIES, describe as describe_all

    text = describe_all()
    for registry, key in (("regimes", "mix.regime"), ("presets", "model.preset"), ("gates", "sample.gates"),
                          ("pipeline_steps", "data.pipeline")):
        line = next(ln for ln in text.splitlines() if ln.startswith(key + " "))
        assert " | ".join(REGISTRIES[registry]) in line
