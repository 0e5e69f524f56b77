"""The theory-model registry: the names ``run.model`` (and ``collapse theory MODEL``) takes, and their classes."""

from __future__ import annotations

from collapse.theory.categorical import CategoricalModel
from collapse.theory.common import TheoryModel
from collapse.theory.gaussian import GaussianModel
from collapse.theory.gmm import GMMModel
from collapse.theory.kde import KDEModel
from collapse.theory.regression import RegressionModel

__all__ = ["MODELS"]

#: Name -> class, in the order the docs list them.
MODELS: dict[str, type[TheoryModel]] = {
    "gaussian": GaussianModel,
    "regression": RegressionModel,
    "categorical": CategoricalModel,
    "gmm": GMMModel,
    "kde": KDEModel,
}
