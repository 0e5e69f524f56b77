"""The sweep's MLflow parent run: one per sweep and store, created before the first
launch, reused by every later one, closed when no run is left to go.

Each run of the sweep is its child (``tracking.parent_run_id``); the parent
carries the axes (``axis.<key>`` params), the command-line overrides, the
sweep file as an artifact and the sweep's description as its note. Its id is
recorded in ``sweep.json``; a launch killed before recording it finds it
again by its ``sweep.dir`` tag.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from collapse.sweep.spec import Sweep
from collapse.sweep.state import RunStatus, overrides_text, read_sweep_state, update_sweep_state
from collapse.tracking import _retry, client, environment_tags, get_or_create_experiment, resolve_uri, store_exists

log = logging.getLogger("collapse")


def tracking_uri(sweep: Sweep) -> str | None:
    """The store the sweep's runs log to (None: tracking is off)."""
    if not sweep.tracking_enabled:
        return None
    return resolve_uri(sweep.tracking_uri, sweep.root)


def ensure_parent_run(sweep: Sweep, uri: str | None) -> str | None:
    """The sweep's MLflow parent run: created once (experiment = sweep name),
    reused on every later launch of the same sweep and store."""
    if uri is None:
        return None
    c = client(uri)
    exp_id = get_or_create_experiment(uri, sweep.name, sweep.root / "mlartifacts")
    st = read_sweep_state(sweep)
    run_id = st.get("parent_run_id") if st.get("tracking_uri") == uri else None
    if run_id:
        try:
            c.get_run(run_id)
            _retry(lambda: c.update_run(run_id, status="RUNNING"), "reopen sweep run")
            _log_overrides(c, run_id, sweep)
            return run_id
        except Exception:
            run_id = None  # the store was reset: a new parent
    sweep_dir = str(sweep.dir.resolve())
    found = _retry(lambda: c.search_runs([exp_id], f"tags.`sweep.role` = 'parent' and tags.`sweep.dir` = '{sweep_dir}'",
                                         order_by=["attributes.start_time ASC"], max_results=1), "find sweep run")
    if found:  # created by an earlier launch whose sweep.json did not record it (killed, or another store)
        run_id = found[0].info.run_id
        _retry(lambda: c.update_run(run_id, status="RUNNING"), "reopen sweep run")
        _log_overrides(c, run_id, sweep)
        update_sweep_state(sweep, tracking_uri=uri, parent_run_id=run_id)
        return run_id
    tags = {"mlflow.runName": sweep.name, "sweep": sweep.name, "sweep.role": "parent", "sweep.dir": sweep_dir,
            "sweep.file": str(sweep.path),
            "sweep.axes": ",".join(sweep.axis_keys), "sweep.runs": str(len(sweep.runs)), **environment_tags()}
    if sweep.description:
        tags["mlflow.note.content"] = sweep.description
    run = _retry(lambda: c.create_run(exp_id, run_name=sweep.name, tags=tags), "create sweep run")
    run_id = run.info.run_id
    from mlflow.entities import Param  # deferred: mlflow is heavy, and only a tracked sweep needs it

    params = [Param(f"axis.{k}", json.dumps(sorted({json.dumps(r.axes[k]) for r in sweep.runs}))[:6000])
              for k in sweep.axis_keys]
    if params:
        _retry(lambda: c.log_batch(run_id, params=params), "log sweep params")
    _log_overrides(c, run_id, sweep)
    _retry(lambda: c.log_artifact(run_id, str(sweep.path)), "log sweep file")
    update_sweep_state(sweep, tracking_uri=uri, parent_run_id=run_id)
    return run_id


def _log_overrides(c: Any, run_id: str, sweep: Sweep) -> None:
    """The command-line overrides on the parent run: tag ``sweep.overrides`` (the latest
    launch's) and a param ``override.<key>`` per key (params never change: a resumable
    key given a new value keeps its first)."""
    from mlflow.entities import Param, RunTag  # deferred: mlflow is heavy, and only a tracked sweep needs it

    have = c.get_run(run_id).data.params
    params = [Param(f"override.{k}", json.dumps(v)[:6000]) for k, v in sorted(sweep.overrides.items())
              if f"override.{k}" not in have]
    tags = [RunTag("sweep.overrides", overrides_text(sweep.overrides)[:5000])]
    _retry(lambda: c.log_batch(run_id, params=params, tags=tags), "log sweep overrides")


def finish_parent_run(sweep: Sweep, statuses: list[RunStatus]) -> None:
    """Close the parent run when no run is pending or running: FINISHED when all are done."""
    st = read_sweep_state(sweep)
    uri, run_id = st.get("tracking_uri"), st.get("parent_run_id")
    if not uri or not run_id or any(s.state in ("pending", "running", "queued") for s in statuses):
        return
    status = "FINISHED" if all(s.state == "done" for s in statuses) else "FAILED"
    if not store_exists(uri):  # the store is gone (or `--status` on a copy): nothing to close, nothing created
        return
    c = client(uri)
    try:
        if c.get_run(run_id).info.status != status:
            _retry(lambda: c.set_terminated(run_id, status=status), "end sweep run")
    except Exception as e:  # the table is what matters; the mirror follows on the next launch
        log.warning("sweep %s: could not close the MLflow parent run: %s", sweep.name, e)


def close_parent_run(sweep: Sweep, status: str) -> None:
    """End the parent run with ``status`` now (an interrupted launch: ``KILLED``)."""
    st = read_sweep_state(sweep)
    uri, run_id = st.get("tracking_uri"), st.get("parent_run_id")
    if not uri or not run_id:
        return
    try:
        client(uri).set_terminated(run_id, status=status)
    except Exception as e:
        log.warning("sweep %s: could not close the MLflow parent run: %s", sweep.name, " ".join(str(e).split())[:200])
