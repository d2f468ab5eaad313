#!/usr/bin/env bash
# Checkpoints through the relora command line: SIGTERM and train.time_limit stop a run with
# exit 0 and a loadable checkpoint; SIGUSR1 through mpirun does the same on every rank;
# SIGKILL in the middle of checkpoint writes leaves `--resume auto` a complete checkpoint;
# inspect and eval --checkpoint read them; a mismatched config is refused with exit 2, by
# train and by eval, and so is a new run beside them; resuming an older checkpoint keeps
# the later ones; a mistyped command is named, even with --help; a signal to one rank stops
# all of them; a checkpoint.dir that stops taking files is one clear error, exit 2.
#   usage: checkpoints.sh RELORA_BINARY
set -uo pipefail
relora="$1"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

write_shard train_000000.bin 512 60000 2
cat > run.yaml <<'YAML'
model: {vocab_size: 512, hidden_size: 128, num_layers: 2, num_heads: 2, intermediate_size: 256, seq_len: 32}
relora: {rank: 8, warm_start_steps: 4, reset_every: 4}
train: {steps: 1000000, global_batch: 4, micro_batch: 2, threads: 1, device: cpu}
data: {train: "train_*.bin", eval_every: 0}
checkpoint: {dir: out, every: 1, keep: 2}
log: {every: 100000}
YAML

# 1. SIGTERM: finish the step, checkpoint, exit 0
"$relora" train --config run.yaml > term.out 2>&1 &
pid=$!
sleep 3
kill -TERM "$pid"
wait "$pid"
rc=$?
latest="out/$(cat out/latest 2>/dev/null)"
grep -q "stopped at step .* by SIGTERM" term.out && [ "$rc" -eq 0 ] && "$relora" inspect "$latest" > inspect.out
check sigterm_checkpoints_and_exits_0 $? "exit $rc; $(tail -2 term.out)"
grep -q "phase" inspect.out && grep -q "model.layers.0.self_attn.q_proj" inspect.out
check inspect_describes_the_checkpoint $? "$(head -5 inspect.out)"

# 2. SIGKILL during checkpoint writes (one every step): resume auto finds a complete one
"$relora" train --config run.yaml --resume auto > kill.out 2>&1 &
pid=$!
sleep 3
kill -KILL "$pid"
wait "$pid" 2>/dev/null
"$relora" train --config run.yaml --resume auto --set train.time_limit=2s > resume.out 2>&1
rc=$?
grep -q "resuming from out/step_" resume.out && grep -q "stopped at step .* by train.time_limit" resume.out && [ "$rc" -eq 0 ]
check sigkill_then_resume_auto_and_time_limit $? "exit $rc; $(grep -m3 'resuming\|error\|stopped' resume.out)"
ls out/*.tmp > /dev/null 2>&1
[ $? -ne 0 ]
check no_temporary_files_left $? "$(ls out)"
[ "$(ls out/step_*.h5 | wc -l)" -eq 2 ]
check retention_keeps_two $? "$(ls out)"

# 3. eval --checkpoint (no --config): a JSON line
"$relora" eval --checkpoint "out/$(cat out/latest)" --data 'train_*.bin' --batches 2 > eval.out 2>&1
grep -q '"loss":.*"perplexity":.*"tokens":128' eval.out
check eval_from_checkpoint $? "$(cat eval.out)"
# eval and bench take any micro-batch, one that does not divide train.global_batch too
"$relora" eval --checkpoint "out/$(cat out/latest)" --data 'train_*.bin' --batches 1 \
  --set train.micro_batch=3 > eval_micro.out 2>&1 &&
  grep -q '"tokens":96' eval_micro.out &&
  "$relora" bench --config run.yaml --steps 1 --warmup 0 --set train.micro_batch=3 > bench_micro.out 2>&1 &&
  grep -q '"tokens_per_s"' bench_micro.out
check measuring_takes_any_micro_batch $? "$(cat eval_micro.out bench_micro.out)"

# 4. a config of another shape is refused, exit 2
"$relora" train --config run.yaml --resume auto --set model.hidden_size=64 > shape.out 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "does not fit this config: model.hidden_size: checkpoint 128, config 64" shape.out
check mismatched_config_refused $? "exit $rc; $(cat shape.out)"
# ... and by eval, whose --set applies on top of the checkpoint's config
"$relora" eval --checkpoint "out/$(cat out/latest)" --data 'train_*.bin' --set relora.rank=0 > eval_rank.out 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "relora eval: --set cannot change the checkpoint's relora.rank: checkpoint 8, config 0" eval_rank.out
check eval_refuses_structural_set $? "exit $rc; $(cat eval_rank.out)"
# a new run (no --resume) beside these checkpoints is refused, exit 2
"$relora" train --config run.yaml > fresh.out 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "holds checkpoints of an earlier run .*continue it with --resume auto" fresh.out
check new_run_beside_checkpoints_refused $? "exit $rc; $(cat fresh.out)"
# resuming an older checkpoint than a later one (a continuation left behind, here far
# ahead): the later one is named, and retention keeps it
cp "out/$(cat out/latest)" out/step_99999999.h5
"$relora" train --config run.yaml --resume "out/$(cat out/latest)" --set train.time_limit=1s > rewind.out 2>&1
rc=$?
[ "$rc" -eq 0 ] && grep -q "1 checkpoint(s) after step .*(newest step_99999999.h5), a continuation this run leaves" \
  rewind.out && [ -f out/step_99999999.h5 ] && [ "$(ls out/step_*.h5 | wc -l)" -eq 3 ]
check rewind_keeps_the_later_checkpoint $? "exit $rc; $(grep -m3 'warning\|error' rewind.out); $(ls out)"
rm out/step_99999999.h5
# a mistyped command is named as one, even with --help
"$relora" trian --help > typo.out 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "unknown command 'trian'" typo.out
check unknown_command_with_help $? "exit $rc; $(cat typo.out)"
# inspect takes one path, and says so when given two
"$relora" inspect "$latest" "$latest" > two_paths.out 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "relora inspect takes one checkpoint path" two_paths.out
check inspect_of_two_paths_refused $? "exit $rc; $(cat two_paths.out)"

# 5. SIGUSR1 to mpirun reaches both ranks: both stop after the same step, one checkpoint
rm -rf out
mpirun -np 2 --oversubscribe --bind-to none "$relora" train --config run.yaml > usr1.out 2>&1 &
pid=$!
sleep 4
kill -USR1 "$pid"
wait "$pid"
rc=$?
"$relora" inspect "out/$(cat out/latest)" > inspect2.out 2>&1
[ "$rc" -eq 0 ] && grep -q "stopped at step" usr1.out && grep -q "world size 2" inspect2.out
check sigusr1_under_mpirun $? "exit $rc; $(tail -3 usr1.out)"

# 6. SIGUSR1 to rank 1 alone: both ranks stop, and rank 0 says why
rm -rf out
mpirun -np 2 --oversubscribe --bind-to none "$relora" train --config run.yaml > rank1.out 2>&1 &
pid=$!
sleep 4
rank1=""
for p in $(pgrep -f "$relora train --config run.yaml"); do
  tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && rank1="$p"
done
[ -n "$rank1" ] && kill -USR1 "$rank1"
wait "$pid"
rc=$?
[ -n "$rank1" ] && [ "$rc" -eq 0 ] && grep -q "stopped at step .* by a signal on another rank" rank1.out
check sigusr1_to_one_rank_is_named $? "rank 1 pid '$rank1', exit $rc; $(tail -3 rank1.out)"

# 7. checkpoint.dir replaced by a file while the run goes on: the next save stops it with
#    exit 2 and the system's reason, not an HDF5 call stack
rm -rf gone
"$relora" train --config run.yaml --set checkpoint.dir=gone --set checkpoint.every=200 \
  --set log.every=10 > gone.out 2>&1 &
pid=$!
for _ in $(seq 1 300); do grep -q '"step":20,' gone/metrics.jsonl 2>/dev/null && break; sleep 0.1; done
rm -rf gone && touch gone
wait "$pid"
rc=$?
[ "$rc" -eq 2 ] && grep -q "error: cannot write the checkpoint gone/step_00000200.h5: Not a directory; make checkpoint.dir writable" gone.out
check unwritable_checkpoint_dir_is_one_clear_error $? "exit $rc; $(tail -2 gone.out)"

echo "checkpoint cases: $((checks - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
