"""Regenerate the quickstart's committed results and the README block that shows them.

    python scripts/quickstart_results.py [--root runs] [--seeds 0 1 2] [--check]

Runs ``collapse run experiments/quickstart.yaml run.seed=S`` for every seed
(the CPU base is built on first use under the run root and reused; finished
generations are reused too, so an interrupted call resumes), draws the report
(bands and CIs over the seeds) into ``reports/quickstart/``, and rewrites the
README between ``<!-- quickstart:begin -->`` and ``<!-- quickstart:end -->``:
the machine and precision, the wall times, the table of generation 0 against
generation 5 (mean over seeds with the seed-to-seed standard deviation), and the
first samples of generation 0 and 5 of seed 0 under ``replace``, side by side.

Nothing in the block is typed by hand. ``--check`` rebuilds the block from the
runs already on disk and exits 1 if the README differs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from collapse.syntax import parses

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_block import write_block  # noqa: E402 - the scripts folder is not a package

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "experiments" / "quickstart.yaml"
OUT = REPO / "reports" / "quickstart"
#: (metric key, label, digits) of the README table, quality first, then diversity and tails.
ROWS = [
    ("test_ce", "held-out cross-entropy (nats/token) ↑ worse", 3),
    ("syntax_valid", "samples that parse (share)", 3),
    ("distinct_4", "distinct 4-grams (share)", 3),
    ("ast_shape_distinct", "distinct AST shapes (share)", 3),
    ("identifiers_per_1k", "distinct identifiers per 1,000 tokens", 1),
    ("tail_type_coverage", "rare token types still produced (share)", 3),
    ("kl_unigram_reverse", "KL(human ‖ samples), bits", 3),
    ("self_bleu", "self-BLEU (0-100) ↑ less diverse", 1),
    ("ppl_gen0_q50", "median perplexity under generation 0", 2),
    ("sample_eos_rate", "samples that end before the token limit (share)", 3),
]
FIGURES = ["metrics.png", "trajectory.png", "perplexity_gen0.png", "final_effects.md"]


def _collapse() -> str:
    return str(Path(sys.executable).parent / "collapse")


def base_dir(root: Path) -> Path:
    """The pretrained base the quickstart's runs started from (recorded in the run's config)."""
    import yaml

    cfg = yaml.safe_load((root / "quickstart" / "replace_s0" / "config.yaml").read_text())
    return Path(cfg["model"]["init_from"]).parent


def _seed_done(root: Path, s: int) -> bool:
    states = list((root / "quickstart").glob(f"*_s{s}/state.json"))
    return bool(states) and all(json.loads(p.read_text()).get("status") == "done" for p in states)


def _walls(root: Path) -> dict[str, float]:
    """Recorded wall times, only if they were taken on the base the runs use now."""
    walls_file = OUT / "walls.json"
    data = json.loads(walls_file.read_text()) if walls_file.exists() else {}
    if not (root / "quickstart" / "replace_s0" / "config.yaml").exists() or data.get("base") != base_dir(root).name:
        return {}
    return data.get("seeds", {})


def run_seeds(root: Path, seeds: list[int]) -> None:
    """Run every seed; the wall time of each call that computed the seed (not one
    that found it finished) goes to ``reports/quickstart/walls.json``, with the
    base it was taken on (times taken on another base are dropped)."""
    walls = _walls(root)
    for s in seeds:
        reused = _seed_done(root, s)
        t0 = time.perf_counter()
        subprocess.run([_collapse(), "run", str(RECIPE), f"run.root={root}", f"run.seed={s}"], check=True)
        if not reused:
            walls[str(s)] = round(time.perf_counter() - t0, 1)
        if not walls:
            continue
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "walls.json").write_text(json.dumps({"base": base_dir(root).name, "seeds": walls},
                                                   indent=1, sort_keys=True) + "\n")


def draw_report(root: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="qs-report-") as tmp:
        subprocess.run([_collapse(), "report", "quickstart", "--root", str(root), "--out", tmp], check=True)
        OUT.mkdir(parents=True, exist_ok=True)
        for name in FIGURES:
            src = Path(tmp) / "quickstart" / name
            if src.exists():
                shutil.copy(src, OUT / name)


def _fmt(v: float, digits: int) -> str:
    return f"{v:,.{digits}f}"


def table(frame, seeds: list[int]) -> str:
    last = int(frame["generation"].max())
    have = [r for r in ROWS if r[0] in frame.columns]
    head = "| metric | human | " + " | ".join(f"{reg} gen 0 | {reg} gen {last}" for reg in ("replace", "accumulate")) + " |"
    lines = [head, "|---|---|" + "---|---|" * 2]
    for key, label, digits in have:
        human = frame[f"human.{key}"].dropna() if f"human.{key}" in frame.columns else None
        cells = [label, _fmt(human.mean(), digits) if human is not None and len(human) else "—"]
        for reg in ("replace", "accumulate"):
            for g in (0, last):
                v = frame[(frame["regime"] == reg) & (frame["generation"] == g)][key].dropna()
                sd = f" ± {_fmt(v.std(ddof=1), digits)}" if len(v) > 1 else ""
                cells.append(_fmt(v.mean(), digits) + sd if len(v) else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def excerpts(root: Path, n: int = 3) -> str:
    """The first ``n`` samples (not picked) of generation 0 and of the last generation, seed 0, replace."""
    run = root / "quickstart" / "replace_s0"
    gens = sorted(p for p in run.glob("gen_*") if (p / "samples.jsonl").exists())
    first, last = gens[0], gens[-1]

    def read(p: Path) -> list[str]:
        with open(p / "samples.jsonl") as f:
            return [json.loads(line)["text"] for _, line in zip(range(n), f)]

    out = []
    for a, b in zip(read(first), read(last)):
        out.append(f"<tr><td><pre>{_esc(a)}</pre>{'parses' if parses(a) else 'does not parse'}</td>"
                   f"<td><pre>{_esc(b)}</pre>{'parses' if parses(b) else 'does not parse'}</td></tr>")
    return (f"<table><tr><th>{first.name} (fine-tuned on human code)</th><th>{last.name} (replace)</th></tr>\n"
            + "\n".join(out) + "\n</table>")


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def block(root: Path, seeds: list[int]) -> str:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import torch

    import collapse

    frame = collapse.load_runs("quickstart", root=root)
    frame = frame[frame["seed"].isin(seeds)]
    base = json.loads((base_dir(root) / "metrics.json").read_text())
    state = json.loads((root / "quickstart" / "replace_s0" / "state.json").read_text())
    rt = state.get("runtime", {})
    parts = [
        f"Regenerated by `python scripts/quickstart_results.py --seeds {' '.join(map(str, seeds))}` "
        f"({len(seeds)} seeds; {platform.machine()}, torch CPU capability "
        f"{rt.get('cpu_capability', torch.backends.cpu.get_cpu_capability())}, precision {rt.get('precision', '?')}, "
        f"{rt.get('threads', torch.get_num_threads())} threads).",
        "",
        f"The CPU base: {base['parameters'] / 1e6:.2f} M parameters, {base['train_tokens'] / 1e6:.2f} M tokens, "
        f"held-out {base['test_bpb']:.3f} bits/byte; its unconditional samples parse "
        + " / ".join(f"{base[k]:.0%}" for k in sorted(base) if k.startswith("parse_rate_t"))
        + " of the time at T = " + " / ".join(k.removeprefix("parse_rate_t") for k in sorted(base) if k.startswith("parse_rate_t"))
        + f" ({base['wall_seconds'] / 60:.1f} min from the prepared corpus to the checkpoint).",
    ]
    walls = {int(k): v for k, v in _walls(root).items()}
    if walls:
        parts += ["", "Wall time of `collapse run experiments/quickstart.yaml` per seed, where this script ran it "
                  "(a call that builds the base includes it; a seed it found finished, e.g. by `make demo`, has none): "
                  + ", ".join(f"seed {s}: {w / 60:.1f} min" for s, w in sorted(walls.items())) + "."]
    parts += ["", f"Mean over seeds ± seed-to-seed standard deviation; `human` is the same number of held-out "
              "human functions as samples:", "", table(frame, seeds), "",
              "The first three samples of seed 0 (not picked), generation 0 against the last generation of `replace`:",
              "", excerpts(root)]
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(REPO / "runs"), help="run root (the base is built or reused here)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--check", action="store_true", help="compare the README block with the runs on disk; run nothing")
    a = ap.parse_args()
    root = Path(a.root).resolve()
    if not a.check:
        run_seeds(root, a.seeds)
        draw_report(root)
    return write_block("quickstart", block(root, a.seeds), a.check, "the runs on disk")


if __name__ == "__main__":
    sys.exit(main())
