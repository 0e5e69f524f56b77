"""The replication suite's files (experiments/replications/, scripts/replicate.sh).

Every sweep file expands in ``collapse sweep FILE --dry-run`` with the runs and
the claims it should have, and the dry run resolves nothing: no CPU base is
built for ``model.init_from: pretrain:...``, no hub name is looked up, nothing
is written. The CPU files share the CPU-scale setup, their sizes pass the
checks a run makes only once it has its data, and they fit the 90-minute budget
by the cost model written at the top of each file (the minutes each header
states are recomputed here). Each cluster variant carries its CPU file's claims.
``scripts/replicate.sh`` runs exactly the six CPU files. Nothing here trains.
"""

from __future__ import annotations

import math
import re
import socket
import subprocess
from pathlib import Path

import pytest

from collapse.cli import main
from collapse.config import load_config
from collapse.mixing import MixSizes, check_sizes, required_human
from collapse.sweep.spec import load_sweep
from tests.conftest import REPO

SUITE = REPO / "experiments" / "replications"
# sweep -> (runs, claims)
EXPECTED = {
    "shumailov": (6, 3), "gerstgrasser": (6, 1), "kazdan": (9, 3), "bertrand": (12, 3), "feng": (9, 2),
    "dohmatob": (6, 2),
    "shumailov_gpu": (10, 3), "gerstgrasser_gpu": (10, 1), "kazdan_gpu": (15, 3), "bertrand_gpu": (20, 3),
    "feng_gpu": (20, 3), "dohmatob_gpu": (10, 2),
}
CPU = ["shumailov", "gerstgrasser", "kazdan", "bertrand", "feng", "dohmatob"]
BASE_RECIPE = "experiments/pretrain_cpu.yaml"
# The CPU human corpus (stdlib, 40-300 characters, Python 3.11): its train and reference splits.
STDLIB_TRAIN, STDLIB_REFERENCE = 6620, 1352


def test_the_suite_is_six_papers_each_with_a_cluster_variant():
    assert sorted(p.name for p in SUITE.iterdir()) == sorted(f"{n}.yaml" for n in EXPECTED)
    assert sorted(EXPECTED) == sorted(CPU + [f"{n}_gpu" for n in CPU])


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty working directory (so the default run.root ``runs`` lands in it, and the base's
    recipe, relative to the repository root, is not there to build), and no network at all."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def refuse(*args, **kwargs):
        raise OSError("a dry run opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return tmp_path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dry_run_lists_the_runs_and_claims_and_resolves_nothing(name, offline, capsys):
    path = SUITE / f"{name}.yaml"
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    runs, claims = EXPECTED[name]
    assert f"{name}: {runs} runs (0 done or in progress, {runs} to launch); dry run: nothing launched" in out
    assert sum(1 for line in out.splitlines() if str(offline / "runs" / name) in line) == runs
    assert f"claims ({claims}):" in out
    sweep = load_sweep(path)
    assert len(sweep.claims) == claims and all(c.name and c.paper for c in sweep.claims)
    for c in sweep.claims:
        assert c.describe() in out
    # Nothing resolved: init_from is still what the file says; no base built, no folder, no database.
    init = {r.config["model"]["init_from"] for r in sweep.runs}
    assert init == ({"bigcode/tiny_starcoder_py"} if name.endswith("_gpu") else {f"pretrain:{BASE_RECIPE}"})
    assert not (offline / "runs" / "_pretrained").exists()
    assert list(offline.iterdir()) == []


def _cpu_runs(name):
    return load_sweep(SUITE / f"{name}.yaml").runs


@pytest.mark.parametrize("name", CPU)
def test_cpu_files_share_the_cpu_setup(name):
    base = load_config(REPO / BASE_RECIPE)
    from collapse.data.split import held_out_fraction

    runs = _cpu_runs(name)
    assert sorted({r.seed for r in runs}) == [0, 1, 2]
    for r in runs:
        c = r.config
        assert {k: c["data"][k] for k in ("source", "min_chars", "max_chars", "reference_fraction")} == {
            "source": "stdlib", "min_chars": 40, "max_chars": 300, "reference_fraction": 0.15}, r.name
        assert c["data"]["train_size"] in (250, 500, 1000)
        assert c["model"]["init_mode"] in ("base", "continue")
        assert (c["train"]["batch_size"], c["train"]["lr"]) == (8, 0.001)
        assert c["train"]["epochs"] == 1 or c["train"]["tokens_per_generation"] is not None
        assert c["sample"]["max_new_tokens"] == 128
        if name != "dohmatob":  # dohmatob's axis is the sampling temperature
            assert c["sample"]["temperature"] == 0.8
        assert (c["run"]["generations"], c["run"]["figures"]) == (5, False)
        # What resolve_init_from checks at run time: the experiment evaluates only on buckets the base never saw.
        from collapse.config import from_dict

        assert held_out_fraction(from_dict(c).data) <= held_out_fraction(base.data) + 1e-12


@pytest.mark.parametrize("name", CPU)
def test_cpu_sizes_pass_the_checks_a_run_makes_once_it_has_its_data(name):
    for r in _cpu_runs(name):
        c = r.config
        n = c["data"]["train_size"]
        m = c["mix"]["synthetic_size"] or n
        sizes = MixSizes(human=n, synthetic=m, human_fraction=c["mix"]["human_fraction"],
                         subsample=c["mix"]["subsample_size"], fresh=c["mix"]["fresh_size"],
                         synthetic_ratio=c["mix"]["synthetic_ratio"])
        check_sizes(r.regime, r.generations, sizes, STDLIB_TRAIN)  # raises CollapseError
        assert required_human(r.regime, r.generations, sizes) <= STDLIB_TRAIN
        assert m <= STDLIB_REFERENCE, f"{r.name}: the human reference lines need {m} held-out functions"


# ---------------------------------------------------------------- the budget

# The cost model written at the top of every CPU file (one thread per run, 2 runs at a time):
GEN_FIXED, PER_1K_TRAINED, PER_1K_SAMPLED, RUN_START = 4.0, 10.0, 26.0, 30.0
# Samples drawn per sample kept with gates (the base parsed 58 % at temperature 0.8), and the
# perplexity gate's own forward passes per generation.
GATE_DRAWS = {(): 1.0, ("syntax",): 1.7, ("syntax", "perplexity"): 2.0}
GATE_PERPLEXITY_S = 3.0
TOKENS_PER_FUNCTION = 46  # the base's tokenizer on the CPU corpus, end of text included
BUDGET_MIN = 90


def _trained(c: dict, g: int) -> float:
    """Functions (or their worth in tokens) one generation trains on."""
    if c["train"]["tokens_per_generation"]:
        return c["train"]["tokens_per_generation"] / TOKENS_PER_FUNCTION
    n = c["data"]["train_size"]
    m = c["mix"]["synthetic_size"] or n
    if g == 0:
        return n
    return {"replace": m, "fixed_fraction": n, "accumulate": n + g * m,
            "accumulate_subsample": c["mix"]["subsample_size"] or n, "fresh": (c["mix"]["fresh_size"] or n) + m,
            "augment": n + round(c["mix"]["synthetic_ratio"] * n)}[c["mix"]["regime"]]


def _generation_s(c: dict, g: int) -> float:
    m = c["mix"]["synthetic_size"] or c["data"]["train_size"]
    gates = tuple(c["sample"]["gates"])
    s = GEN_FIXED + PER_1K_TRAINED * _trained(c, g) / 1000 + PER_1K_SAMPLED * GATE_DRAWS[gates] * m / 1000
    return s + (GATE_PERPLEXITY_S if "perplexity" in gates else 0.0)


def _estimate_run_seconds(name: str) -> float:
    """Run-seconds of a CPU sweep: every run's generations 1..N and start-up, generation 0 once per group
    of runs that share it (the launcher's grouping)."""
    from collapse.sweep.local import gen0_key

    total, gen0 = 0.0, {}
    for r in _cpu_runs(name):
        total += RUN_START + sum(_generation_s(r.config, g) for g in range(1, r.generations + 1))
        gen0[gen0_key(r.config) or r.name] = _generation_s(r.config, 0)
    return total + sum(gen0.values())


@pytest.mark.parametrize("name", CPU)
def test_each_header_states_the_minutes_of_its_cost_model(name):
    text = (SUITE / f"{name}.yaml").read_text()
    stated = float(re.search(r"s ≈ ([\d.]+) min", text).group(1))
    assert stated == pytest.approx(_estimate_run_seconds(name) / 2 / 60, abs=0.15)


def test_the_six_cpu_sweeps_fit_the_budget_with_room_for_error():
    minutes = sum(_estimate_run_seconds(n) for n in CPU) / 2 / 60
    assert minutes <= BUDGET_MIN - 10, f"{minutes:.1f} min by the cost model"
    assert "all six sweeps ≈ {:d} min".format(math.floor(minutes + 0.5)) in (SUITE / "shumailov.yaml").read_text()


# ---------------------------------------------------------------- cluster variants and the script

def _claim_key(c):
    return (c.name, c.metric, c.axis, str(c.first), str(c.second), c.direction, c.generation, str(sorted(c.where.items())))


@pytest.mark.parametrize("name", CPU)
def test_cluster_variant_keeps_the_claims_and_arms_at_a_larger_scale(name):
    cpu, gpu = load_sweep(SUITE / f"{name}.yaml"), load_sweep(SUITE / f"{name}_gpu.yaml")
    assert {_claim_key(c) for c in cpu.claims} <= {_claim_key(c) for c in gpu.claims}
    assert cpu.axis_keys == gpu.axis_keys
    assert len({r.seed for r in gpu.runs}) >= 5
    assert gpu.slurm.gpus_per_node >= 1 and gpu.slurm.partition
    assert {r.config["model"]["init_mode"] for r in gpu.runs} == {r.config["model"]["init_mode"] for r in cpu.runs}
    largest = 0
    for r in gpu.runs:
        c = r.config
        assert c["data"]["source"] == ["stdlib", "installed"] and c["data"]["train_size"] >= 2500
        augment = c["mix"]["synthetic_ratio"] if c["mix"]["regime"] == "augment" else 0.0
        largest = max(largest, c["data"]["train_size"] * (1 + augment))
    assert largest >= 10000  # human functions (plus λ·n samples under augment) in a training set


def test_replicate_script_runs_the_six_cpu_sweeps():
    script = REPO / "scripts" / "replicate.sh"
    text = script.read_text()
    assert re.search(r"^ALL=\((.*)\)$", text, re.M).group(1).split() == CPU
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    out = subprocess.run(["bash", str(script)], env={"COLLAPSE": "echo", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = [line[2:] for line in out.stdout.splitlines() if line.startswith("+ ")]
    assert lines[0] == f"echo pretrain {BASE_RECIPE}"
    assert lines[1:7] == [f"echo sweep experiments/replications/{n}.yaml --parallel 2" for n in CPU]
    assert lines[-1] == ("echo findings " + " ".join(f"experiments/replications/{n}.yaml" for n in CPU)
                         + " --out reports/replications/FINDINGS.md")


def test_the_readme_findings_block_matches_the_committed_findings():
    # scripts/findings_readme.py --check rebuilds the README block from
    # reports/replications/findings.csv and machine.json: exit 1 when they differ.
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "findings_readme.py"
    p = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
