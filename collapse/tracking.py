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

from collapse import __version__
from collapse.errors import CollapseError
from collapse.locks import Busy, wait_lock

log = logging.getLogger("collapse")
T = TypeVar("T")


def resolve_uri(uri: str | None, root: str | Path, create: bool = True) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else sqlite:///<abs root>/mlflow.db
    (``create``: the root folder is made if missing; readers pass False)."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = Path(root).resolve()
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


# How long a run waits for a busy store (sqlite locked by another writer) before giving up.
STORE_WAIT_S = float(os.environ.get("COLLAPSE_STORE_WAIT_S", "300"))


def _is_busy(e: BaseException) -> bool:
    msg = str(e).lower()
    return "database is locked" in msg or "database is busy" in msg or "locked" in msg or "busy" in msg


def _retry(fn: Callable[[], T], what: str, wait_s: float | None = None) -> T:
    """Retry on transient store errors (sqlite 'database is locked' under concurrency,
    a lost race on a unique row, a dropped connection) for at most ``STORE_WAIT_S``
    seconds. Waiting logs one line; a store still locked after the wait is one
    :class:`CollapseError` line, never a traceback per attempt."""
    wait_s = STORE_WAIT_S if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    delay = 0.2
    announced = False
    while True:
        try:
            return fn()
        except Exception as e:  # mlflow wraps sqlite errors in MlflowException
            msg = str(e).lower()
            busy = _is_busy(e)
            transient = busy or "unique constraint" in msg or "connection" in msg
            if not transient:
                raise
            if time.monotonic() + delay > deadline:
                first = " ".join(str(e).split())[:160]
                if busy:
                    raise CollapseError(f"MLflow store still locked after {wait_s:.0f}s ({what}: {first}); "
                                        f"another process holds it; re-run to resume") from None
                raise
            if not announced:
                log.warning("MLflow store busy (%s); retrying for up to %.0fs", what, wait_s)
                announced = True
            log.debug("retrying %s after %s", what, e)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory sqlite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


_READY: set[str] = set()


def ensure_store(uri: str) -> None:
    """Create or migrate the store once, serialized across processes.

    MLflow creates a new sqlite database's tables and runs its migrations on
    first use; two processes doing that at once leave the database
    half-migrated for good. Here the first use of a sqlite store happens under
    an exclusive ``flock`` on ``<db>.lock``, so any number of runs and sweeps
    may start together against a new database. A database locked by another
    writer is waited for (one log line) for at most ``STORE_WAIT_S`` seconds,
    then reported as one line."""
    if uri in _READY:
        return
    db = sqlite_path(uri)
    if db is not None:
        # Imported before the lock: imports take seconds, the lock is for the database work.
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        from mlflow.tracking._tracking_service.utils import _get_store

        db.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock = wait_lock(db.with_name(db.name + ".lock"), STORE_WAIT_S)
        except Busy:
            raise CollapseError(f"{db}: another process has been creating or migrating this MLflow store for "
                                f"more than {STORE_WAIT_S:.0f}s; re-run to resume") from None
        try:
            _wait_writable(db)
            _retry(lambda: _get_store(uri), "open store")
        finally:
            lock.release()
    _READY.add(uri)


def _wait_writable(db: Path) -> None:
    """Wait until sqlite grants a write lock on ``db`` (one log line when it has to
    wait; one error line past ``STORE_WAIT_S``)."""
    import sqlite3

    if not db.exists():
        return

    def try_lock(timeout: float) -> bool:
        try:
            con = sqlite3.connect(str(db), timeout=timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise CollapseError(f"{db}: cannot open the MLflow store ({e})") from None
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError as e:
            if "locked" in str(e).lower() or "busy" in str(e).lower():
                return False
            raise CollapseError(f"{db}: unreadable MLflow store ({e}); move it away to start a new one") from None
        except sqlite3.DatabaseError as e:
            raise CollapseError(f"{db}: unreadable MLflow store ({e}); move it away to start a new one") from None
        finally:
            con.close()

    if try_lock(0.5):
        return
    log.warning("%s: MLflow store locked by another process; waiting up to %.0fs", db, STORE_WAIT_S)
    if not try_lock(max(STORE_WAIT_S - 0.5, 0.1)):
        raise CollapseError(f"{db}: MLflow store still locked after {STORE_WAIT_S:.0f}s by another process; "
                            f"re-run to resume")


class NoStore(CollapseError):
    """A reader asked for a sqlite store that does not exist (the message names the file)."""


def store_exists(uri: str) -> bool:
    """False only for a sqlite store whose database file is missing (other stores: assumed there)."""
    db = sqlite_path(uri)
    return db is None or db.is_file()


def client(uri: str, *, create: bool = True):
    """An MlflowClient for ``uri``. ``create=False`` (read-only commands): a missing
    sqlite database raises :class:`NoStore` instead of being created, and an existing
    one is opened as it is (no lock file, no migration)."""
    from mlflow.tracking import MlflowClient

    if not create:
        if not store_exists(uri):
            raise NoStore(f"no MLflow store at {sqlite_path(uri)}")
        return MlflowClient(tracking_uri=uri)
    ensure_store(uri)
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


KEY_TAG = "collapse.run_key"  # the run directory's id (``<run dir>/.run_key``): finds its MLflow run


class RunMirror:
    """One MLflow run mirroring one run directory.

    The run is found, not re-created: by ``run_id`` (from ``state.json``) when the
    store still has it, else by the ``collapse.run_key`` tag that every run is
    created with (in the same call), so a process killed between creating the
    MLflow run and recording its id in ``state.json``, or a deleted ``state.json``,
    never leaves a second run for the same run directory."""

    def __init__(self, uri: str, experiment: str, run_name: str, run_id: str | None = None,
                 artifact_root: str | Path | None = None, tags: Mapping[str, str] | None = None,
                 key: str | None = None):
        self.uri = uri
        self.client = client(uri)
        self.experiment_id = get_or_create_experiment(uri, experiment, artifact_root)
        self.created = False
        if run_id is not None:
            try:
                self.client.get_run(run_id)
            except Exception:
                run_id = None  # the store was reset or is another one: find or start the run there
        if run_id is None and key is not None:
            run_id = self.find(key)
        if run_id is not None:
            _retry(lambda: self.client.update_run(run_id, status="RUNNING"), "reopen run")
        else:
            all_tags = {"mlflow.runName": run_name, **environment_tags(), **(tags or {})}
            if key is not None:
                all_tags[KEY_TAG] = key
            run = _retry(lambda: self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags), "create run")
            run_id = run.info.run_id
            self.created = True
        self.run_id = run_id

    def find(self, key: str) -> str | None:
        """The oldest run of this experiment tagged with ``key`` (None when there is none)."""
        runs = _retry(lambda: self.client.search_runs([self.experiment_id], f"tags.`{KEY_TAG}` = '{key}'",
                                                      order_by=["attributes.start_time ASC"], max_results=10),
                      "find run")
        return runs[0].info.run_id if runs else None

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

    def finish(self, status: str = "FINISHED", wait_s: float | None = None) -> None:
        _retry(lambda: self.client.set_terminated(self.run_id, status=status), "end run", wait_s=wait_s)


def read_json(path: Path) -> Any:
    """The JSON in ``path``; a file that is not JSON is one error line naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CollapseError(f"{path}: unreadable ({' '.join(str(e).split())[:120]})") from None


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
