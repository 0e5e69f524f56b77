"""Shared fixtures: every test is CPU-only, offline and deterministic."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from a second thread, and torch's thread pool slows
# down badly when another process holds a core; subprocesses inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "experiments" / "tiny.yaml"


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    """A runs root shared by the end-to-end tests, so the prepared human data
    and tokenizer are built once per session."""
    return tmp_path_factory.mktemp("runs")


def tiny_overrides(root: Path, run_dir: Path, **extra: object) -> list[str]:
    out = [f"run.root={root}", f"run.dir={run_dir}", f"tracking.uri=sqlite:///{root}/mlflow.db"]
    out += [f"{k}={v}" for k, v in extra.items()]
    return out
