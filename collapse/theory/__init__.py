"""Analytic models of model collapse, run through the same loop as the code LMs.

Five generators implement the ``collapse.generator.Generator`` protocol with
K independent trials at once: ``gaussian`` (Shumailov et al. 2024; Bertrand
et al. 2024; full covariance after Kazdan et al. 2024), ``regression``
(Dohmatob et al. 2024; Gerstgrasser et al. 2024), ``categorical`` (the
token-level loss of tails), ``gmm`` (Shumailov et al.'s mixture experiment,
1-D or 2-D) and ``kde`` (Kazdan et al. 2024). Sampling can cut tails
(Dohmatob et al. 2024) or be filtered by a verifier (Feng et al. 2024). ``run_theory`` drives them through
``collapse.loop.run_generations`` with the mixing regimes of
``collapse.mixing`` (Gerstgrasser et al. 2024; Kazdan et al. 2024) and returns
each tracked quantity's mean, standard error and closed form per generation.
"""

from collapse.theory.config import TheoryConfig, load_theory_config
from collapse.theory.models import MODELS
from collapse.theory.run import TheoryResult, build_model, mirror_to_mlflow, run_theory

__all__ = ["MODELS", "TheoryConfig", "TheoryResult", "build_model", "load_theory_config", "mirror_to_mlflow", "run_theory"]
