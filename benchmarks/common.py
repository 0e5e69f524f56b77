"""Shared set-up of the benchmarks: the quickstart's data, tokenizer and model sizes."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import platform
import statistics
from pathlib import Path

import torch

from collapse.registries import load_config

REPO = Path(__file__).resolve().parents[1]


def quickstart_inputs(max_examples: int = 2000, cache: str = "runs/_cache"):
    """(config, tokenizer, train token docs) of the quickstart recipe on the stdlib corpus."""
    from collapse.data import prepare_human_data
    from collapse.lm.tokenizer import prepare_tokenizer
    from collapse.lm.train import tokenize_texts

    cfg = load_config(REPO / "experiments" / "quickstart.yaml", [f"data.max_examples={max_examples}"])
    human, info = prepare_human_data(cfg.data, Path(cache), progress=False)
    tok, _ = prepare_tokenizer(list(human["train"]["text"]), cfg.tokenizer, Path(cache),
                               cfg.section_hash("tokenizer", extra=info["key"]))
    docs = tokenize_texts(tok, list(human["train"]["text"]))
    return cfg, tok, docs, human


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def median(xs: list[float]) -> float:
    return statistics.median(xs)
