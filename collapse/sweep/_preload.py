"""Modules the local launcher's fork server imports once, before it forks workers.

Workers forked from it start with torch, transformers, datasets, mlflow and
matplotlib already imported (about ten seconds each on a small CPU machine
otherwise). Nothing here starts a thread or opens a database, so forking stays
safe.
"""

import importlib

import matplotlib

matplotlib.use("Agg")

for _name in ("collapse.sweep.worker", "collapse.experiment", "collapse.lm.generator", "collapse.reporting",
              "collapse.tracking", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store", "matplotlib.pyplot",
              "seaborn"):
    try:
        importlib.import_module(_name)
    except Exception:  # pragma: no cover - a worker imports what it needs itself
        pass
