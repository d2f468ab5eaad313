#!/usr/bin/env bash
# Failure handling under mpirun -np 2: each case must end the whole job with a non-zero exit
# and a clear message within 30 s, never hang.
#   usage: failures.sh RELORA_BINARY
set -uo pipefail
relora="$1"
. "$(dirname "${BASH_SOURCE[0]}")/../cli/lib.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpirun=(mpirun -np 2 --oversubscribe --bind-to none)

# A small run and its token shard.
write_shard "$work/train_000000.bin" 64 20000 1
cat > "$work/run.yaml" <<YAML
model: {vocab_size: 64, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 48, seq_len: 16}
relora: {rank: 4, warm_start_steps: 5, reset_every: 5}
train: {steps: 100000, global_batch: 4, micro_batch: 2, threads: 1, device: cpu}
data: {train: "train_*.bin", eval_every: 0}
checkpoint: {dir: out}
log: {every: 1000}
YAML

# expect NAME EXPECTED_MESSAGE -- command...: non-zero exit within 30 s, message on stderr.
expect() {
  local name="$1" message="$2"
  shift 3
  checks=$((checks + 1))
  local start=$SECONDS
  timeout 60 "$@" > "$work/$name.out" 2> "$work/$name.err" < /dev/null
  local rc=$? elapsed=$((SECONDS - start))
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$elapsed" -gt 30 ] || ! grep -q -- "$message" "$work/$name.err"; then
    echo "FAIL $name: exit $rc after ${elapsed}s; stderr:"
    sed 's/^/    /' "$work/$name.err" | head -20
    failures=$((failures + 1))
  else
    echo "ok   $name: exit $rc after ${elapsed}s: $(grep -m1 -- "$message" "$work/$name.err")"
  fi
}

cd "$work"
# 1. every rank gets a different seed: the configs differ
expect config_differs "the resolved config differs between ranks" -- \
  "${mpirun[@]}" bash -c "exec '$relora' train --config run.yaml --set train.seed=\$OMPI_COMM_WORLD_RANK"

# 2. rank 1 alone fails at start-up: its working directory holds a broken shard
mkdir -p r0 r1
cp train_000000.bin r0/
head -c 3000 train_000000.bin > r1/train_000000.bin
expect rank1_bad_data "rank 1: error:.*truncated" -- \
  "${mpirun[@]}" bash -c "cd r\$OMPI_COMM_WORLD_RANK && exec '$relora' train --config ../run.yaml"

# 3. rank 0 fails once training has started (its output directory cannot be written), while
#    rank 1 waits in the first all-reduce: MPI_Abort must end both
mkdir -p out/config.yaml
expect rank0_fails_in_run "rank 0: error:" -- \
  "${mpirun[@]}" "$relora" train --config run.yaml
rm -rf out

# 4. rank 1 is killed from outside (SIGKILL) mid-run: the launcher ends the job
expect rank1_killed "" -- \
  "${mpirun[@]}" bash -c "if [ \$OMPI_COMM_WORLD_RANK = 1 ]; then (sleep 3; kill -9 \$\$) & fi; exec '$relora' train --config run.yaml"

echo "failure cases: $((checks - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
