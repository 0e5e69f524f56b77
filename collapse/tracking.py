"""Run directories and their MLflow mirror.

The run directory is the source of truth; MLflow mirrors it. The default
tracking URI is a sqlite database in the runs folder (absolute path), so no
server is needed; ``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` selects a
server. Logging is idempotent: a generation already mirrored (its metrics
present at ``step=generation``) is not logged twice, so resuming a run after
a crash never duplicates history.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

log = logging.getLogger("collapse")
T = TypeVar("T")


def resolve_uri(uri: str | None, root: str | Path) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else sqlite:///<abs root>/mlflow.db."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _retry(fn: Callable[[], T], what: str, attempts: int = 8) -> T:
    """Retry on transient store errors (sqlite 'database is locked' under concurrency)."""
    delay = 0.2
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # mlflow wraps sqlite errors in MlflowException
            msg = str(e).lower()
            transient = "locked" in msg or "busy" in msg or "unique constraint" in msg or "connection" in msg
            if not transient or i == attempts - 1:
                raise
            log.debug("retrying %s after %s", what, e)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def get_or_create_experiment(uri: str, name: str, artifact_root: str | Path | None = None) -> str:
    """Experiment id for ``name``, creating it (artifacts under ``artifact_root``
    for local stores) if needed. Safe when several processes race to create it."""
    c = client(uri)

    def get_or_create() -> str:
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        loc = None
        if artifact_root is not None and (uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri):
            loc = (Path(artifact_root).resolve() / name).as_uri()
        try:
            return c.create_experiment(name, artifact_location=loc)
        except Exception:
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    return _retry(get_or_create, "create experiment")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def environment_tags() -> dict[str, str]:
    """Git commit of the code and versions of the packages that shape results."""
    tags = {"python": platform.python_version(), "stdlib_version": sys.version.split()[0]}
    for mod in ("torch", "transformers", "tokenizers", "datasets", "numpy", "mlflow"):
        try:
            tags[f"version.{mod}"] = __import__(mod).__version__
        except Exception:
            pass
    from collapse import __version__

    tags["version.collapse"] = __version__
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            tags["git_commit"] = sha.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True, text=True, timeout=5)
            tags["git_dirty"] = str(bool(dirty.stdout.strip()))
    except Exception:
        pass
    return tags


class RunMirror:
    """One MLflow run mirroring one run directory."""

    def __init__(self, uri: str, experiment: str, run_name: str, run_id: str | None = None,
                 artifact_root: str | Path | None = None, tags: Mapping[str, str] | None = None):
        self.uri = uri
        self.client = client(uri)
        self.experiment_id = get_or_create_experiment(uri, experiment, artifact_root)
        if run_id is not None:
            try:
                self.client.get_run(run_id)
                _retry(lambda: self.client.update_run(run_id, status="RUNNING"), "reopen run")
            except Exception:
                run_id = None  # the store was reset: start a new run
        if run_id is None:
            all_tags = {"mlflow.runName": run_name, **environment_tags(), **(tags or {})}
            run = _retry(lambda: self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags), "create run")
            run_id = run.info.run_id
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items() if k not in have]
        for i in range(0, len(items), 100):
            batch = items[i:i + 100]
            _retry(lambda: self.client.log_batch(self.run_id, params=batch), "log params")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        _retry(lambda: self.client.log_batch(self.run_id, tags=items), "set tags")

    def has_step(self, key: str, step: int) -> bool:
        hist = _retry(lambda: self.client.get_metric_history(self.run_id, key), "metric history")
        return any(m.step == step for m in hist)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log ``metrics`` at ``step`` unless that step is already mirrored."""
        from mlflow.entities import Metric

        finite = {k: float(v) for k, v in metrics.items() if v is not None}
        if not finite:
            return
        probe = sorted(finite)[0]
        if self.has_step(probe, step):
            return
        ts = int(time.time() * 1000)
        items = [Metric(k, v, ts, step) for k, v in sorted(finite.items())]
        for i in range(0, len(items), 500):
            batch = items[i:i + 500]
            _retry(lambda: self.client.log_batch(self.run_id, metrics=batch), "log metrics")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        _retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), "log artifact")

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        _retry(lambda: self.client.log_artifacts(self.run_id, str(folder), artifact_path), "log artifacts")

    def finish(self, status: str = "FINISHED") -> None:
        _retry(lambda: self.client.set_terminated(self.run_id, status=status), "end run")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so a reader never sees half a file (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o)}")
