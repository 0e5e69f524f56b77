"""Seed streams: named by (seed, generation, purpose), distinct for distinct purposes,
valid for the human reference; and a run whose held-out split exceeds the metric subsample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from collapse.seeding import REFERENCE, generation_rng, stream_key, torch_seed


def draw(seed, g, purpose, n=8):
    return generation_rng(seed, g, purpose).integers(0, 2**62, size=n)


def test_purposes_sharing_a_long_prefix_get_different_streams():
    # The first 8 bytes are equal: "metric:s".
    assert not np.array_equal(draw(0, 1, "metric:self_bleu"), draw(0, 1, "metric:semantic"))
    assert not np.array_equal(draw(0, 1, "human_fresh"), draw(0, 1, "human_fresh_extra"))


def test_a_stream_is_a_function_of_seed_generation_and_purpose_alone():
    assert np.array_equal(draw(3, 2, "mix"), draw(3, 2, "mix"))
    streams = {tuple(draw(s, g, p)) for s in (0, 1) for g in (REFERENCE, 0, 1) for p in ("mix", "sample")}
    assert len(streams) == 12
    assert torch_seed(0, 0, "sample") == torch_seed(0, 0, "sample") < 2**62


def test_the_reference_stream_is_valid_and_bad_arguments_are_refused():
    assert draw(0, REFERENCE, "metric:self_bleu").shape == (8,)
    with pytest.raises(ValueError, match="seed"):
        stream_key(-1, 0, "mix")
    with pytest.raises(ValueError, match="generation"):
        stream_key(0, -2, "mix")


def test_reference_metrics_subsample_a_held_out_split_larger_than_the_subsample(shared_root, tmp_path):
    """The human reference subsamples with its own stream (this raised before)."""
    from collapse.cli import main
    from tests.conftest import TINY, tiny_overrides

    out = tmp_path / "big_reference"
    ov = {"run.generations": 0, "metrics.subsample": 10, "metrics.names": "[self_bleu,distinct_n]",
          "sample.max_new_tokens": 16}
    assert main(["run", str(TINY), *tiny_overrides(shared_root, out, **ov)]) == 0
    metrics = json.loads((out / "gen_000" / "metrics.json").read_text())
    assert "human.self_bleu" in metrics and "self_bleu" in metrics
    from datasets import load_from_disk

    cache = Path(json.loads((out / "state.json").read_text())["data"]["card"]).parent
    assert load_from_disk(str(cache / "test")).num_rows > 10
