#!/usr/bin/env bash
# The replication suite at CPU scale: the six sweeps of experiments/replications/ (one per paper,
# 3 seeds each, claims: in each file), then their figures and the findings table in
# reports/replications/. Sized for <= 90 minutes on a 2-core machine with 2 runs at a time (the
# arithmetic is at the top of each sweep file), plus ~11 minutes to build the CPU base the first time.
#
#   scripts/replicate.sh                 # all six, then reports/replications/FINDINGS.md (+ findings.csv)
#   scripts/replicate.sh kazdan feng     # only these (their own reports/replications/<name>.md)
#   make replicate                       # the same as the first, with the project's virtual environment
#
# Resumable: re-run the same command after an interruption or a failed run; finished runs are
# skipped (collapse sweep), the base is reused (collapse pretrain) and the reports are redrawn.
# Run it from anywhere: it works in the repository root, where model.init_from finds the base's
# recipe. Environment: COLLAPSE (the collapse command; default: collapse on PATH),
# PARALLEL (runs at a time; default 2), OUT (default reports/replications).
set -uo pipefail
cd "$(dirname "$0")/.."

COLLAPSE=${COLLAPSE:-collapse}
PARALLEL=${PARALLEL:-2}
OUT=${OUT:-reports/replications}
ALL=(shumailov gerstgrasser kazdan bertrand feng dohmatob)
if [ $# -gt 0 ]; then SWEEPS=("$@"); else SWEEPS=("${ALL[@]}"); fi
for s in "${SWEEPS[@]}"; do
  [ -f "experiments/replications/$s.yaml" ] || { echo "replicate: no sweep experiments/replications/$s.yaml" >&2; exit 2; }
done
export MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false

run() {
  echo "+ $*"
  "$@"
}

# 0. The CPU base, built once at the default threads (inside a sweep each run gets one thread).
run "$COLLAPSE" pretrain experiments/pretrain_cpu.yaml || exit 1

# 1. The sweeps. One that does not finish every run does not stop the others.
failed=()
for s in "${SWEEPS[@]}"; do
  run "$COLLAPSE" sweep "experiments/replications/$s.yaml" --parallel "$PARALLEL" || failed+=("$s")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "replicate: not every run of ${failed[*]} finished (see runs/<sweep>/_logs); re-run the same command to resume" >&2
  exit 1
fi

# 2. Figures and tables of each sweep: reports/replications/<name>/.
for s in "${SWEEPS[@]}"; do
  case $s in
    # One colour per λ; the fresh runs (λ unused, 1.0) share λ = 1's until the report colours by two axes.
    bertrand) extra=(--hue mix.synthetic_ratio) ;;
    # The claims' tail_type_coverage is not among the report's default metrics.
    shumailov|dohmatob) extra=(--metrics test_ce prompt_ce syntax_valid distinct_4 ppl_gen0_q50 tail_mass
                               tail_type_coverage vocab_coverage kl_unigram) ;;
    *) extra=() ;;
  esac
  run "$COLLAPSE" report "experiments/replications/$s.yaml" --out "$OUT" "${extra[@]}" || exit 1
done

# 3. The findings: every claim's effect, 95 % CI, Welch p and verdict, computed from the runs.
if [ $# -gt 0 ]; then
  for s in "${SWEEPS[@]}"; do
    run "$COLLAPSE" findings "experiments/replications/$s.yaml" --out "$OUT/$s.md" || exit 1
  done
else
  files=()
  for s in "${ALL[@]}"; do files+=("experiments/replications/$s.yaml"); done
  # Not experiments/replications/*.yaml: the *_gpu.yaml variants there have no runs on this machine.
  run "$COLLAPSE" findings "${files[@]}" --out "$OUT/FINDINGS.md" || exit 1
fi
