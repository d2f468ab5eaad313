#!/usr/bin/env bash
# Data-parallel scaling on one node: configs/tiny.yaml trained for a few steps in each phase
# at np=1 (all cores in one rank) and np=2 (half the cores each), from its metrics.jsonl:
# tokens/s and the share of step time spent waiting for the gradient all-reduce.
#   usage: launch/bench_dist.sh [STEPS_PER_PHASE]   (default 30; needs data/tiny, see README)
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
[ $# -le 1 ] || { echo "bench_dist.sh: one argument at most, STEPS_PER_PHASE (see --help)" >&2; exit 2; }
steps="${1:-30}"
[[ "$steps" =~ ^[1-9][0-9]*$ ]] && [ "$steps" -ge 4 ] ||
  { echo "bench_dist.sh: STEPS_PER_PHASE '$steps': expected a whole number, at least 4" >&2; exit 2; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
relora=build/relora
[ -x "$relora" ] || { echo "bench_dist: build first (bash launch/test.sh)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cores="$(nproc)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
common=(--config configs/tiny.yaml --set train.steps=$((2 * steps)) --set relora.warm_start_steps="$steps"
        --set relora.reset_every=0 --set log.every=1 --set data.eval_every=0 --set data.val=)

summarise() {  # metrics.jsonl label: mean over each phase, skipping its first 3 updates
  python3 - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
for phase in ("full", "relora"):
    r = [x for x in rows if x["phase"] == phase][3:]
    tok = sum(x["tokens_per_s"] for x in r) / len(r)
    step = sum(x["step_ms"] for x in r) / len(r)
    comm = sum(x["comm_ms"] for x in r) / len(r)
    print(f"| {sys.argv[2]:<28} | {phase:<6} | {tok:8.0f} | {step:7.1f} | {100 * comm / step:5.1f}% | {r[-1]['comm_bytes'] / 1e6:6.2f} |")
PY
}

echo "| run                          | phase  | tokens/s | step ms | comm wait | MB/update |"
echo "|------------------------------|--------|----------|---------|-----------|-----------|"
mpirun -np 1 --bind-to none "$relora" train "${common[@]}" --set train.threads="$cores" \
  --set checkpoint.dir="$out/np1" > "$out/np1.log"
summarise "$out/np1/metrics.jsonl" "np=1 x $cores threads"
half=$(( cores / 2 > 0 ? cores / 2 : 1 ))
mpirun -np 2 --oversubscribe --bind-to none "$relora" train "${common[@]}" --set train.threads="$half" \
  --set checkpoint.dir="$out/np2" > "$out/np2.log"
summarise "$out/np2/metrics.jsonl" "np=2 x $half thread(s)"
