#!/usr/bin/env bash
# The quickstart, on a fresh Debian/Ubuntu machine: installs what is missing, builds relora,
# turns the English text of the `fortunes` package into a tokenizer and token shards
# (data/tiny/), pretrains configs/tiny.yaml with ReLoRA on the CPU (a full-rank warm start,
# then several merge-and-restart cycles) on 2 MPI ranks, stops part-way as a preempted job
# would (SIGUSR1: checkpoint and exit 0), resumes from the checkpoint, and reports the
# validation perplexity of the final checkpoint. Each run starts runs/tiny afresh (the
# previous run there is deleted); data/tiny is kept when it was made by the same command.
#   usage: bash launch/quickstart.sh    (no arguments; -h/--help prints this)
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header
case "${1:-}" in
  "") ;;
  -h|--help) usage; exit 0 ;;
  *) echo "quickstart.sh: takes no arguments, got '$1' (see --help)" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
started=$SECONDS
step() { printf '\n== %s (%d s so far)\n' "$1" $((SECONDS - started)); }

step "set-up: packages (launch/setup.sh)"
bash launch/setup.sh

step "build: Release, $(nproc) cores, the relora executable (launch/test.sh builds the tests)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target relora

# The fortune files hold entries separated by lines of "%"; their .dat indexes are binary
# and skipped as such, the .u8 names are links to files already read, and off/ (the
# offensive collection of fortunes-off, rot13-encoded) is excluded. 2% of the entries
# (about 17k tokens) are held out for validation.
step "data: fortunes -> data/tiny (4096-piece BPE tokenizer, train/val shards)"
prepare=(--input /usr/share/games/fortunes --exclude off --doc-separator % --vocab-size 4096
         --val-fraction 0.02 --out data/tiny)
if report="$(build/relora data inspect data/tiny --tokens 0 2>/dev/null)" &&
    grep -qxF "command:   relora data prepare ${prepare[*]}" <<<"$report"; then
  echo "data/tiny was made by this command and its shards match their checksums: kept"
else
  build/relora data prepare "${prepare[@]}"
fi

run_dir=runs/tiny
ranks=2
threads=$(( $(nproc) / ranks > 0 ? $(nproc) / ranks : 1 ))
mpirun=(mpirun -np "$ranks" --bind-to none)
[ "$(id -u)" -eq 0 ] && mpirun+=(--allow-run-as-root)
[ "$(nproc)" -lt "$ranks" ] && mpirun+=(--oversubscribe)
train=(build/relora train --config configs/tiny.yaml --set train.threads="$threads")
rm -rf "$run_dir"

step "train: configs/tiny.yaml with ReLoRA on $ranks ranks x $threads thread(s), stopped after the step-100 checkpoint"
"${mpirun[@]}" "${train[@]}" &
launcher=$!
until [ -f "$run_dir/step_00000100.h5" ] || ! kill -0 "$launcher" 2>/dev/null; do sleep 1; done
kill -USR1 "$launcher" 2>/dev/null || true  # as Slurm's --signal would before a time limit
wait "$launcher"

step "resume: the same command with --resume auto continues from $run_dir/$(cat "$run_dir/latest")"
"${mpirun[@]}" "${train[@]}" --resume auto

step "evaluate: the final checkpoint on the validation shards"
checkpoint="$run_dir/$(cat "$run_dir/latest")"
result="$(build/relora eval --checkpoint "$checkpoint" --data 'data/tiny/val_*.bin')"

printf '\n== done in %d s\n' $((SECONDS - started))
echo "validation of $checkpoint: $result"
echo "metrics, one JSON line per log step, restart and evaluation: $run_dir/metrics.jsonl"
echo "the resolved config of the run:                              $run_dir/config.yaml"
echo "checkpoints (HDF5; relora inspect PATH describes one):       $run_dir/step_*.h5"
echo "tokenizer, shards and their manifest:                        data/tiny/"
