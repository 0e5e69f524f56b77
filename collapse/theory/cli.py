"""``collapse theory``: run an analytic collapse model and set it beside its closed form.

    collapse theory MODEL [key=value ...] [--config experiments/theory_X.yaml]
        [--regime R] [--generations N] [--trials K] [--seed S] [model options]
        [--synthetic-ratio λ] [--truncate T] [--verify Q [--verify-noise S]]
        [--json] [--out DIR] [--mlflow] [--tracking-uri URI]

Thin: flags become config overrides (merged after the YAML recipe and the
positional ``key=value`` overrides), then ``collapse.theory.run`` does the work.
``--json`` prints exactly one JSON object (see ``TheoryResult.to_json``);
otherwise a table goes to stdout and a figure under ``reports/theory/``. Bad
input raises ``CollapseError`` (one line, exit code 2). The models follow
Shumailov et al. 2024, Gerstgrasser et al. 2024, Dohmatob et al. 2024,
Bertrand et al. 2024 and Kazdan et al. 2024.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import yaml

from collapse.config import apply_overrides
from collapse.errors import CollapseError
from collapse.theory.config import describe_theory, read_theory_yaml, theory_config_from_dict
from collapse.theory.models import MODELS
from collapse.theory.run import mirror_to_mlflow, run_theory

log = logging.getLogger("collapse")

# flag → (config key in the model's section, models it applies to)
MODEL_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "dim": ("dim", ("gaussian", "regression", "gmm")),
    "samples": ("samples", ("gaussian", "regression", "categorical", "gmm", "kde")),
    "estimator": ("estimator", ("gaussian",)),
    "noise": ("noise", ("regression",)),
    "design": ("design", ("regression",)),
    "categories": ("categories", ("categorical",)),
    "zipf": ("zipf", ("categorical",)),
    "tail_fraction": ("tail_fraction", ("categorical",)),
    "components": ("components", ("gmm",)),
    "separation": ("separation", ("gmm",)),
    "distance": ("distance", ("gmm",)),
    "em_iters": ("em_iters", ("gmm",)),
    "truncate": ("truncate", ("gaussian", "categorical")),
    "covariance": ("covariance", ("gaussian",)),
    "bandwidth": ("bandwidth", ("kde",)),
    "init": ("init", ("gmm",)),
    "fixed_bandwidth": ("fixed_bandwidth", ("kde",)),
}
RUN_FLAGS = {"regime": "run.regime", "generations": "run.generations", "trials": "run.trials", "seed": "run.seed",
             "out": "run.out"}
MIX_FLAGS = {"synthetic_size": "mix.synthetic_size", "human_fraction": "mix.human_fraction",
             "subsample_size": "mix.subsample_size", "fresh_size": "mix.fresh_size",
             "synthetic_ratio": "mix.synthetic_ratio", "verify": "verify.keep", "verify_noise": "verify.noise"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    t = subparsers.add_parser(
        "theory",
        help="analytic collapse models (gaussian, regression, categorical, gmm, kde) beside their closed forms",
        description="Run K trials of an analytic model through the generation loop and compare with the closed forms.",
    )
    # Values are taken as strings and typed by the config, so a bad value is a one-line error.
    t.add_argument("model", nargs="?", help="gaussian | regression | categorical | gmm | kde (default: run.model of --config)")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. gaussian.samples=10")
    t.add_argument("--config", help="YAML recipe, e.g. experiments/theory_gaussian.yaml")
    t.add_argument("--help-config", action="store_true", help="list every theory config key with its type, default and doc")
    g = t.add_argument_group("run")
    g.add_argument("--regime", help="replace | accumulate | accumulate_subsample | fixed_fraction | fresh | augment")
    g.add_argument("--generations", metavar="N", help="generations after generation 0")
    g.add_argument("--trials", metavar="K", help="independent trials run at once")
    g.add_argument("--seed", metavar="S", help="seed")
    m = t.add_argument_group("model options")
    m.add_argument("--dim", help="gaussian, regression: dimension d; gmm: 1 or 2")
    m.add_argument("--samples", help="samples per generation: M (gaussian, categorical, gmm, kde) or rows T (regression)")
    m.add_argument("--estimator", help="gaussian: mle | unbiased")
    m.add_argument("--covariance", help="gaussian: diagonal | full (d >= 2; tracks det(Σn)/det(Σ0))")
    m.add_argument("--noise", help="regression: label noise variance σ²")
    m.add_argument("--design", help="regression: per_trial | shared")
    m.add_argument("--categories", help="categorical: number of categories")
    m.add_argument("--zipf", help="categorical: Zipf exponent β of the start (0 = uniform)")
    m.add_argument("--tail-fraction", help="categorical: share of rarest categories tracked as tail_mass")
    m.add_argument("--components", help="gmm: mixture components")
    m.add_argument("--separation", help="gmm: distance between neighbouring means at the start")
    m.add_argument("--distance", help="gmm: w2 | l2")
    m.add_argument("--em-iters", help="gmm: EM iterations per generation at most")
    m.add_argument("--init", help="gmm: EM initialisation quantiles | kmeans (as scikit-learn)")
    m.add_argument("--bandwidth", help="kde: scott | silverman | fixed")
    m.add_argument("--fixed-bandwidth", help="kde: h of the fixed rule")
    m.add_argument("--truncate", help="tail cutting: gaussian τ (sample |x - μ| <= τσ) | categorical top_k:K or top_p:P")
    x = t.add_argument_group("mixing")
    x.add_argument("--synthetic-size", help="synthetic samples per generation (default: --samples)")
    x.add_argument("--human-fraction", help="fixed_fraction: human share of each training set")
    x.add_argument("--subsample-size", help="accumulate_subsample: size of the draw (default: --samples)")
    x.add_argument("--fresh-size", help="fresh: new human samples per generation (default: --samples)")
    x.add_argument("--synthetic-ratio", metavar="λ", help="augment: synthetic samples per human sample in each training set (default 1)")
    v = t.add_argument_group("verification")
    v.add_argument("--verify", metavar="Q", help="keep the best fraction Q of drawn candidates by the true log-likelihood (Feng et al. 2024)")
    v.add_argument("--verify-noise", help="noise on the verifier's score, in units of its spread (default 0: perfect)")
    o = t.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print one JSON object (per generation: mean, se, closed) and nothing else")
    o.add_argument("--out", help="folder for the figure (default: reports/theory)")
    o.add_argument("--mlflow", action="store_true", help="log the run to MLflow")
    o.add_argument("--tracking-uri", help="MLflow tracking URI (implies --mlflow; default: $MLFLOW_TRACKING_URI or sqlite in runs/)")
    o.add_argument("--experiment", help="MLflow experiment (default: theory_<model>)")
    t.set_defaults(func=cmd_theory)
    return t


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def config_from_args(args: argparse.Namespace):
    """YAML recipe, then positional overrides, then flags → a validated TheoryConfig."""
    overrides = list(args.overrides or [])
    model = args.model
    if model is not None and "=" in model:
        overrides.insert(0, model)
        model = None
    data = read_theory_yaml(args.config) if args.config else {}
    apply_overrides(data, overrides)
    if model is None:
        if not args.config:
            raise CollapseError(f"collapse theory: expected a model ({' | '.join(MODELS)}) or --config")
        run = data.get("run") or {}
        model = run.get("model", "gaussian") if isinstance(run, dict) else "gaussian"
    if model not in MODELS:
        raise CollapseError(f"unknown theory model {model!r} (known: {', '.join(MODELS)})")
    flags: dict[str, Any] = {"run.model": model}
    for name, key in RUN_FLAGS.items():
        v = getattr(args, name)
        if v is not None:
            flags[key] = v if name in ("regime", "out") else _scalar(v)
    for name, (key, models) in MODEL_FLAGS.items():
        v = getattr(args, name)
        if v is None:
            continue
        if model not in models:
            raise CollapseError(f"--{name.replace('_', '-')} applies to {', '.join(models)}, not {model}")
        text_value = name in ("estimator", "design", "distance", "covariance", "bandwidth", "init") or (name == "truncate" and model == "categorical")
        flags[f"{model}.{key}"] = v if text_value else _scalar(v)
    for name, key in MIX_FLAGS.items():
        v = getattr(args, name)
        if v is not None:
            flags[key] = _scalar(v)
    if args.mlflow or args.tracking_uri:
        flags["tracking.enabled"] = True
    if args.tracking_uri:
        flags["tracking.uri"] = args.tracking_uri
    if args.experiment:
        flags["tracking.experiment"] = args.experiment
    apply_overrides(data, flags)
    return theory_config_from_dict(data)


def cmd_theory(args: argparse.Namespace) -> int:
    if args.help_config:
        print(describe_theory())
        return 0
    cfg = config_from_args(args)
    from collapse.theory.report import format_table, plot_result  # deferred: matplotlib, for the figure

    result = run_theory(cfg)
    log.info("%s %s: %d trials x %d generations in %.2f s", cfg.run.model, cfg.run.regime, cfg.run.trials,
             cfg.run.generations, result.seconds)
    obj = result.to_json()
    if args.json:
        if cfg.tracking.enabled:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{cfg.run.model}_{cfg.run.regime}.json"
                path.write_text(json.dumps(obj, indent=1))
                run_id = mirror_to_mlflow(result, cfg, [path])
            log.info("mlflow run %s", run_id)
        print(json.dumps(obj))
        return 0
    out = Path(cfg.run.out)
    paths = plot_result(result, out)
    data_path = out / f"{cfg.run.model}_{cfg.run.regime}.json"
    data_path.write_text(json.dumps(obj, indent=1))
    print(format_table(result))
    print(f"figure: {paths[0]} and {paths[1].name}; data: {data_path}")
    if cfg.tracking.enabled:
        run_id = mirror_to_mlflow(result, cfg, [*paths, data_path])
        print(f"mlflow run: {run_id}")
    return 0
