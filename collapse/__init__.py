"""collapse: a toolkit for model-collapse research on code language models."""

import os as _os

_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"


def __getattr__(name: str):
    # Heavy imports (pandas, mlflow) only when the attribute is used.
    if name == "run":
        from collapse.api import run

        return run
    if name == "report":
        from collapse.reporting import report

        return report
    if name == "load_runs":
        from collapse.sweep.load import load_runs

        return load_runs
    if name == "summarize":
        from collapse.api import summarize

        return summarize
    raise AttributeError(f"module 'collapse' has no attribute {name!r}")
