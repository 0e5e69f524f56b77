"""Command line: ``collapse run | pretrain | report | sweep | findings | ls | show | theory | metrics``. Thin: parses, then calls the library.

Bad input (a ``CollapseError``) is printed as one line on stderr with exit
code 2, never a traceback.

Each command imports the library module it runs inside its own function: the
modules behind ``run``, ``report`` and ``sweep`` import torch, transformers,
mlflow or matplotlib (seconds), which ``collapse --help``, ``ls`` or
``theory`` do not need.
"""

from __future__ import annotations

import argparse
import sys

from collapse.errors import CollapseError
from collapse.logs import configure_cli_logging


def _cmd_run(args: argparse.Namespace) -> int:
    from collapse.registries import describe, load_config

    if args.help_config:
        print(describe())
        return 0
    if not args.config:
        raise CollapseError("collapse run: expected a config file, e.g. experiments/quickstart.yaml")
    cfg = load_config(args.config, args.overrides)
    from collapse.experiment import run_experiment

    run_experiment(cfg)
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from collapse.pretrain import run_pretrain
    from collapse.registries import load_config

    cfg = load_config(args.config, args.overrides)
    res = run_pretrain(cfg, command=" ".join(["collapse pretrain", args.config, *args.overrides]))
    print(res.checkpoint.resolve())  # the last line of stdout: what scripts read
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from collapse.reporting import report

    report(args.experiment, out=args.out, metrics=args.metrics, tracking_uri=args.tracking_uri, root=args.root,
           hue=args.hue, width=args.width)
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    from collapse.metrics.docs import metric_reference

    print(metric_reference(markdown=args.markdown))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from collapse.sweep.cli import main_sweep

    flags = {"partition": args.partition, "gpus_per_node": args.gpus_per_node, "cpus_per_task": args.cpus_per_task,
             "mem_gb": args.mem_gb, "timeout_min": args.timeout_min, "array_parallelism": args.array_parallelism}
    return main_sweep(args.file, args.executor, parallel=args.parallel, dry_run=args.dry_run, show_status=args.status,
                      wait=args.wait, slurm_flags=flags, command=_command_line(args), overrides=args.overrides)


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed (recorded with what it produced)."""
    import shlex

    return shlex.join(["collapse", *getattr(args, "argv", [])])


def _cmd_findings(args: argparse.Namespace) -> int:
    from collapse.findings import findings

    findings(args.sweeps, out=args.out, tracking_uri=args.tracking_uri)
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    from collapse.browse import format_ls

    print(format_ls(args.root))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from collapse.browse import show

    print(show(args.run_dir, generation=args.generation, n=args.n))
    return 0


def _add_browse_parsers(sub) -> None:
    """``collapse ls`` and ``collapse show``: read run directories, write nothing."""
    ls = sub.add_parser("ls", help="experiments and sweeps under a run root: their runs, status, last generation")
    ls.add_argument("root", nargs="?", default=_default_root(), help="run root (default: run.root's default, runs/)")
    ls.set_defaults(func=_cmd_ls)
    sh = sub.add_parser("show", help="one generation of a run: its manifest, metrics and a few samples")
    sh.add_argument("run_dir", help="a run directory, e.g. runs/tiny/replace_s0 (`collapse ls` lists them)")
    sh.add_argument("--generation", "-g", type=int, default=None, help="generation (default: the last finished)")
    sh.add_argument("-n", type=int, default=3, help="samples to print (default: 3)")
    sh.set_defaults(func=_cmd_show)


def _default_root() -> str:
    from collapse.config import RunConfig

    return RunConfig().root


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="collapse", description="Model-collapse research on code language models.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run one experiment (generations 0..N, each listed regime)")
    r.add_argument("config", nargs="?", help="YAML recipe, e.g. experiments/quickstart.yaml")
    r.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. mix.regime=accumulate run.seed=3")
    r.add_argument("--help-config", action="store_true", help="list every config key with its type, default and doc")
    r.set_defaults(func=_cmd_run)

    pt = sub.add_parser("pretrain", help="train a base code LM once (content-addressed, resumable); prints its checkpoint folder")
    pt.add_argument("config", help="YAML recipe, e.g. experiments/pretrain_cpu.yaml")
    pt.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=2")
    pt.set_defaults(func=_cmd_pretrain)

    rep = sub.add_parser("report", help="figures and tables of an experiment from MLflow")
    rep.add_argument("experiment", help="MLflow experiment name (e.g. quickstart) or a sweep file")
    rep.add_argument("--out", default="reports", help="output folder (default: reports/)")
    rep.add_argument("--metrics", nargs="*", default=None, help="metrics to plot and tabulate (default: at most 8 panels that tell the story (quality, diversity, tails, memorization))")
    rep.add_argument("--hue", default=None, help="axis that gets one line per value (default: regime, else the first varying sweep axis)")
    rep.add_argument("--width", choices=["single", "double"], default="double", help="figure width: one paper column or the full text width")
    rep.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite in --root)")
    rep.add_argument("--root", default="runs", help="runs folder holding the default sqlite database")
    rep.set_defaults(func=_cmd_report)

    sw = sub.add_parser("sweep", help="expand a sweep file and launch its runs (local processes or a Slurm job array)")
    sw.add_argument("file", help="sweep file, e.g. experiments/sweeps/tiny_grid.yaml")
    sw.add_argument("overrides", nargs="*", help="dotted key=value overrides for every run, e.g. run.root=/scratch/runs "
                                                 "run.generations=5 (recorded; a relaunch must give the same ones)")
    sw.add_argument("--executor", choices=("local", "slurm"), default="local", help="where runs go (default: local)")
    sw.add_argument("--parallel", type=int, default=None, help="local: runs at a time (default: cores // run.threads)")
    sw.add_argument("--dry-run", action="store_true", help="print the runs and launch nothing")
    sw.add_argument("--status", action="store_true", help="each run's state from its run directory and the scheduler")
    sw.add_argument("--wait", action="store_true", help="slurm: return when every job has left the queue")
    for flag, tp, doc in (("--partition", str, "Slurm partition"), ("--gpus-per-node", int, "GPUs per job"),
                          ("--cpus-per-task", int, "CPUs per job (also the run's torch threads)"),
                          ("--mem-gb", float, "memory per job in GB"), ("--timeout-min", int, "time limit per job"),
                          ("--array-parallelism", int, "jobs of the array running at once")):
        sw.add_argument(flag, type=tp, default=None, help=f"slurm: {doc} (default: the sweep file's slurm: section)")
    sw.set_defaults(func=_cmd_sweep)

    fi = sub.add_parser("findings", help="evaluate the claims: of sweep files from their tracked runs (effect, 95 %% CI, "
                                         "Welch p, verdict) as a Markdown table")
    fi.add_argument("sweeps", nargs="+", metavar="SWEEP", help="sweep files with a claims: list")
    fi.add_argument("--out", default=None, metavar="FILE",
                    help="write the table to FILE (.md) and the same rows to FILE's .csv with a lower-case stem (FINDINGS.md → findings.csv) (default: stdout)")
    fi.add_argument("--tracking-uri", default=None,
                    help="MLflow tracking URI (default: the one each sweep was launched with)")
    fi.set_defaults(func=_cmd_findings)

    met = sub.add_parser("metrics", help="list the registered metrics with what they measure")
    met.add_argument("--markdown", action="store_true", help="print the metric reference as Markdown (docs/metrics.md)")
    met.set_defaults(func=_cmd_metrics)

    _add_browse_parsers(sub)

    try:
        from collapse.theory.cli import add_parser as add_theory
    except ImportError:
        add_theory = None
    if add_theory is not None:
        add_theory(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    configure_cli_logging(args.verbose)
    from collapse.signals import Terminated, exit_code, terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            return args.func(args)
    except CollapseError as e:
        print(f"collapse: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"collapse: {what}; re-run the same command to resume", file=sys.stderr)
        return exit_code(e)
    except OSError as e:  # a full disk, an unreadable or unwritable file: one line naming it
        where = e.filename or "?"
        print(f"collapse: error: {where}: {e.strerror or e}; fix it and re-run the same command to resume",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
