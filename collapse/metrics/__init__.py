"""Metrics: a registry of plain functions, selectable by name in ``metrics.names``."""

from collapse.metrics import diversity, humaneval, memorization, quality, tails  # noqa: F401  (registers the metrics)
from collapse.metrics.registry import REGISTRY, Metric, MetricContext, compute, register

__all__ = ["REGISTRY", "Metric", "MetricContext", "compute", "register"]
