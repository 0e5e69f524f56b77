"""Redaction: recall on the planted corpus, false redactions on the standard library, pipeline time.

    python -m benchmarks.bench_redact [--examples 12] [--repeats 1] [--skip-time]

1. **Recall**: the forms of ``tests/planted_secrets.py`` (one planted value each,
   the ``source`` form in a file name); a form counts as caught when none of
   its values (nor, for split keys, its pieces) survives. With detect-secrets
   on (the default) and off (this project's own rules only).
2. **False redactions**: the standard library holds no live secret, so every
   ``<KEY>`` there is a false redaction. Functions changed by a key kind, per
   10,000 functions, for ``stdlib`` (the default source: no test suites) and
   ``stdlib-all`` (the stdlib directory with its test suites, as in
   ``bench_pipeline``), per kind, with examples (the changed line, before and
   after). Emails and IP addresses are counted apart: those are real.
3. **Time**: CPU seconds (``time.process_time``, steady on a busy machine) to
   redact every function of ``stdlib-all`` in one process: this project's
   rules alone, and with detect-secrets; with ``--baseline DIR`` (a checkout
   of an earlier commit, e.g. ``git worktree add /tmp/before <commit>``) that
   commit's redaction too, on the same texts. Then a cold
   ``prepare_human_data`` of ``stdlib-all`` (every step on, the redact step in
   forked workers), detect-secrets off and on, median wall seconds of
   ``--repeats``: the ``redact`` step and the total.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import tempfile
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import collapse.data.redact as redact_mod  # noqa: E402
from collapse.config import DataConfig  # noqa: E402
from collapse.data.corpus import load_human_corpus  # noqa: E402
from collapse.data.redact import PLACEHOLDERS, Redactor, redact, redact_source  # noqa: E402
from tests.planted_secrets import FORMS  # noqa: E402

KEY_KINDS = {k for k, v in PLACEHOLDERS.items() if v == "<KEY>"}


def recall(scanner: bool) -> tuple[int, list[str]]:
    missed = []
    for form in FORMS:
        if form.file != "planted.py":
            out = redact_source(f"planted/{form.file}:1-5", Redactor(scanner))
        else:
            out = redact(form.code, scanner)[0]
        if any(n in out for n in form.needles):
            missed.append(form.name)
    return len(FORMS) - len(missed), missed


def corpus(name: str) -> list[tuple[str, str]]:
    from collapse.data.sources import stdlib_root

    cfg = (DataConfig(pipeline=[], min_chars=0, max_chars=10**9) if name == "stdlib" else
           DataConfig(source=str(stdlib_root()), opt_out=["site-packages/*", "dist-packages/*"], pipeline=[],
                      min_chars=0, max_chars=10**9))
    ds, _ = load_human_corpus(cfg, progress=False)
    return list(zip(ds["text"], ds["source"]))


def false_redactions(rows: list[tuple[str, str]], n_examples: int) -> tuple[Counter, Counter, list, float]:
    changed: Counter[str] = Counter()
    pii: Counter[str] = Counter()
    examples = []
    t0 = time.perf_counter()
    for text, source in rows:
        r = Redactor()
        out = r.redact(text)
        kinds = {k for k, v in r.counts.items() if v}
        keys = kinds & KEY_KINDS
        for k in kinds - KEY_KINDS:
            pii[k] += 1
        if keys:
            changed["any key"] += 1
            for k in keys:
                changed[k] += 1
            if len(examples) < n_examples:
                pairs = [(a.strip(), b.strip()) for a, b in zip(text.split("\n"), out.split("\n")) if a != b]
                examples.append((source, sorted(keys), pairs[:2]))
    return changed, pii, examples, time.perf_counter() - t0


_BASELINE = """
import pickle, sys, time
from collapse.data.redact import Redactor
texts = pickle.load(open(sys.argv[1], "rb"))
r = Redactor()
t0 = time.process_time()
for t in texts:
    r.redact(t)
print(time.process_time() - t0)
"""


def cpu_time(texts: list[str], scanner: bool | None, baseline: str | None = None) -> float:
    """CPU seconds to redact ``texts`` in one process (``baseline``: with the code of that checkout)."""
    if baseline is not None:
        with tempfile.NamedTemporaryFile(suffix=".pkl") as f:
            pickle.dump(texts, f)
            f.flush()
            env = {**os.environ, "PYTHONPATH": baseline}
            out = subprocess.run([sys.executable, "-c", _BASELINE, f.name], env=env, cwd=baseline,
                                 capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    r = Redactor(scanner)
    t0 = time.process_time()
    for t in texts:
        r.redact(t)
    return time.process_time() - t0


def pipeline_time(scanner: bool, repeats: int) -> tuple[float, float]:
    from benchmarks.bench_pipeline import build, corpus_config

    redact_mod.SCANNER = scanner
    try:
        runs = [build(corpus_config("stdlib-all")) for _ in range(repeats)]
    finally:
        redact_mod.SCANNER = True
    return statistics.median(t["step.redact"] for t, _, _ in runs), statistics.median(total for _, total, _ in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--skip-time", action="store_true")
    ap.add_argument("--baseline", help="a checkout of an earlier commit whose redaction is timed too")
    a = ap.parse_args()
    print(f"cpus {os.cpu_count()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    print(f"\n## recall on the planted corpus ({len(FORMS)} forms)")
    for scanner in (True, False):
        n, missed = recall(scanner)
        print(f"detect-secrets {'on ' if scanner else 'off'}: {n}/{len(FORMS)} = {100 * n / len(FORMS):.1f} %"
              + (f"; missed: {', '.join(missed)}" if missed else ""))

    rows_all: list[tuple[str, str]] = []
    for name in ("stdlib", "stdlib-all"):
        rows = corpus(name)
        rows_all = rows
        changed, pii, examples, secs = false_redactions(rows, a.examples)
        n = len(rows)
        print(f"\n## false redactions on {name}: {n:,} functions, redacted in {secs:.1f} s (one process)")
        for k, v in changed.most_common():
            print(f"{k:<16}{v:>6}  {1e4 * v / n:6.1f} per 10,000")
        print("emails / IPs (real, not false): " + ", ".join(f"{k}={v}" for k, v in pii.most_common()))
        for source, kinds, pairs in examples:
            for before, after in pairs:
                print(f"  {source} [{','.join(kinds)}]: {before[:90]!r} -> {after[:60]!r}")

    if not a.skip_time:
        texts = [t for t, _ in rows_all]
        print(f"\n## CPU seconds to redact stdlib-all ({len(texts):,} functions), one process, median of {a.repeats}")
        if a.baseline:
            print(f"baseline {a.baseline}: {statistics.median(cpu_time(texts, None, a.baseline) for _ in range(a.repeats)):.2f} s")
        for scanner in (False, True):
            secs = statistics.median(cpu_time(texts, scanner) for _ in range(a.repeats))
            print(f"detect-secrets {'on ' if scanner else 'off'}: {secs:.2f} s")
        print(f"\n## pipeline time, stdlib-all, cold cache, median of {a.repeats}")
        for scanner in (False, True):
            red, total = pipeline_time(scanner, a.repeats)
            print(f"detect-secrets {'on ' if scanner else 'off'}: redact step {red:.2f} s, total {total:.2f} s")


if __name__ == "__main__":
    main()
