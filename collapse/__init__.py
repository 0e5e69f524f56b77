"""collapse: a toolkit for model-collapse research on code language models."""

import os as _os

_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
