#!/usr/bin/env bash
# `relora train --set train.device=cuda` on the CUDA backend in the CPU emulator
# (build/relora_emulated, tests/cuda_sim): the whole device path a single-GPU run takes —
# the device chosen, the memory budget printed and one arena reserved from it (a step that
# allocated beyond it would fail), the warm start, adapters, merges and restarts, the
# checkpoints written from device memory and resumed, relora eval of a checkpoint —
# against the same run on the CPU: the first step's loss (the forward pass alone) within
# 1e-4 relative, every later one within 2e-3 (bf16 products; measured: 7e-6 and below
# 6e-4); recomputation and a resume give the device run's losses exactly; relora.master_on_host
# (bf16 weight copies) and products rounded inside cuBLAS (train.matmul: bf16) the default's
# exactly through the warm start (the same rounded products and sums here) and within 5e-4
# after it (where the default concatenates each adapter with its weight, summing in another
# order; measured 4e-5); bf16 activations on the device within the same tolerances of bf16
# activations on the CPU, and TF32 products (train.matmul: tf32) of the CPU run; a run too
# big for the device, or leaving it under 1 GiB beside the arena, ends with its budget by
# category; relora bench runs both phases on the device (JSON line, profile) and its speed
# probes stop cleanly without memory; and no run prints an emulator error (a misuse the host
# code did not stop at).
#   usage: emulated_cuda.sh RELORA_EMULATED_BINARY
set -uo pipefail
relora="$1"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

write_emulated_case

# close A B: the losses of A and B the same numbers through the warm start (steps 1-4) and
# within 5e-4 relative after it (measured 4e-5 at this case's s = 4, a power of two, where
# s B rounds as B does; up to 1.8e-4 at s = 6.4)
close() {
  paste <(losses "$1") <(losses "$2") | awk '
    { n++; d = $2 - $4; if (d < 0) d = -d
      if ($1 != $3 || ($1 <= 4 ? d != 0 : d > 5e-4 * ($4 < 0 ? -$4 : $4))) bad++ }
    END { exit (n == 12 && bad == 0) ? 0 : 1 }'
}

# identical FIRST A B: the losses of steps FIRST..12 of A and B are the same numbers
identical() {
  local a b
  a="$(losses "$2" | awk -v first="$1" '$1 >= first')"
  b="$(losses "$3" | awk -v first="$1" '$1 >= first')"
  [ "$(echo "$a" | wc -l)" -eq $((13 - $1)) ] && [ "$a" = "$b" ]
}

"$relora" train --config run.yaml --set train.device=cpu --set checkpoint.dir=cpu > cpu.out 2>&1
check cpu_run $? "$(tail -3 cpu.out)"

"$relora" train --config run.yaml --set train.device=cuda --set checkpoint.dir=cuda > cuda.out 2>&1
rc=$?
grep -q "backend cuda:0 (cuda_sim" cuda.out && grep -q "memory per rank, ReLoRA phase" cuda.out && [ "$rc" -eq 0 ]
check cuda_run_reports_device_and_budget $? "exit $rc; $(grep -i -m3 'device\|budget\|error' cuda.out)"
within cuda cpu
check cuda_losses_within_bf16_tolerance_of_cpu $? "$(paste <(losses cuda) <(losses cpu))"

# relora eval on the device: the step-12 checkpoint (ReLoRA phase, adapters applied)
eval_loss() {
  "$relora" eval --checkpoint cuda/step_00000012.h5 --data 'train_*.bin' --batches 4 \
    --set train.device="$1" 2>> eval.err | sed -n 's/.*"loss":\([-0-9.e+]*\),.*/\1/p'
}
cuda_eval="$(eval_loss cuda)"
cpu_eval="$(eval_loss cpu)"
# the same checkpoint on a machine without a GPU (SIM_DEVICES=0), no --set: the stored
# train.device (cuda) is the training machine's; eval takes this one's default, auto
no_gpu_eval="$(SIM_DEVICES=0 "$relora" eval --checkpoint cuda/step_00000012.h5 --data 'train_*.bin' \
  --batches 4 2>> eval.err | sed -n 's/.*"loss":\([-0-9.e+]*\),.*/\1/p')"
[ -n "$no_gpu_eval" ] && [ "$no_gpu_eval" = "$cpu_eval" ]
check device_checkpoint_evaluates_without_a_gpu $? "no GPU '$no_gpu_eval', cpu '$cpu_eval'; $(tail -2 eval.err)"
awk -v a="$cuda_eval" -v b="$cpu_eval" \
  'BEGIN { d = a - b; if (d < 0) d = -d; exit (a != "" && b > 0 && d <= 2e-3 * b) ? 0 : 1 }'
check eval_on_device_within_tolerance_of_cpu $? "cuda '$cuda_eval', cpu '$cpu_eval'"

# variant NAME SECTION.KEY=VALUE COMPARISON: the device run with one more setting, in NAME/;
# its losses against the plain device run's by COMPARISON (identical 1, or close)
variant() {
  "$relora" train --config run.yaml --set train.device=cuda --set "$2" --set checkpoint.dir="$1" \
    > "$1.out" 2>&1
  check "$1_run" $? "$(tail -3 "$1.out")"
  "${@:3}" "$1" cuda
  check "$1_gives_the_same_losses" $? "$(paste <(losses "$1") <(losses cuda))"
}
variant recompute train.recompute=true identical 1
variant host_masters relora.master_on_host=true close

# bf16 activations (train.activation_dtype): the device run against the CPU's with the same
# setting, within the same tolerances
for device in cpu cuda; do
  "$relora" train --config run.yaml --set train.device="$device" --set train.activation_dtype=bf16 \
    --set checkpoint.dir="${device}_bf16" > "${device}_bf16.out" 2>&1
  check "${device}_bf16_activations_run" $? "$(tail -3 "${device}_bf16.out")"
done
within cuda_bf16 cpu_bf16
check bf16_activations_within_bf16_tolerance_of_cpu $? "$(paste <(losses cuda_bf16) <(losses cpu_bf16))"

# TF32 products (train.matmul: tf32; the fused attention stays bf16): within the same
# tolerances of the CPU run
"$relora" train --config run.yaml --set train.device=cuda --set train.matmul=tf32 \
  --set checkpoint.dir=cuda_tf32 > cuda_tf32.out 2>&1
check tf32_products_run $? "$(tail -3 cuda_tf32.out)"
within cuda_tf32 cpu
check tf32_products_within_tolerance_of_cpu $? "$(paste <(losses cuda_tf32) <(losses cpu))"

# FAST_16BF products (train.matmul: bf16: the operands rounded inside the product, no bf16
# copies): the same exact products as the default bf16_copy's, summed in the same order
# through the warm start, in another after it (the default's adapters concatenated)
"$relora" train --config run.yaml --set train.device=cuda --set train.matmul=bf16 \
  --set checkpoint.dir=cuda_fast > cuda_fast.out 2>&1
check fast16bf_products_run $? "$(tail -3 cuda_fast.out)"
close cuda_fast cuda
check fast16bf_products_are_the_bf16_copy_products $? "$(paste <(losses cuda_fast) <(losses cuda))"

# resume from step 6 (the ReLoRA phase, halfway through the first cycle) in a new directory
mkdir resumed && cp cuda/step_00000006.h5 resumed/ && echo step_00000006.h5 > resumed/latest
"$relora" train --config run.yaml --set train.device=cuda --set checkpoint.dir=resumed \
  --resume auto > resumed.out 2>&1
rc=$?
grep -q "resuming from resumed/step_00000006.h5" resumed.out && [ "$rc" -eq 0 ]
check resume_from_device_checkpoint $? "exit $rc; $(grep -m3 'resum\|error' resumed.out)"
identical 7 resumed cuda
check resume_is_exact $? "$(paste <(losses resumed) <(losses cuda))"

# a run the device cannot hold (the emulated one has 16 GB): exit 2 before anything is
# allocated, the error carrying what to change (not recompute, which is on) and the budget
# by category (run() has not printed it yet)
"$relora" train --config run.yaml --set train.device=cuda --set model.hidden_size=4096 \
  --set model.num_heads=32 --set model.intermediate_size=11008 --set model.num_layers=24 \
  --set train.recompute=true --set checkpoint.dir=too_big > too_big.out 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "error: device 0 cannot hold this run: .* GB needed.*; memory per rank, full-rank phase: .* GB (weights" too_big.out &&
  grep -q "; lower train.micro_batch, set train.activation_dtype: bf16 (activations), or use a GPU" too_big.out &&
  ! grep -q "set train.recompute" too_big.out && grep -q "; memory per rank, ReLoRA phase: " too_big.out
check too_big_for_the_device_names_the_budget $? "exit $rc; $(head -c 600 too_big.out)"

# a run whose arena fits but leaves under 1 GiB beside it (CUDA's lazily loaded kernels and
# NCCL's buffers need it later): the same clear stop at start-up, on a 1 GiB device
SIM_DEVICE_MEMORY_MB=1024 "$relora" train --config run.yaml --set train.device=cuda \
  --set checkpoint.dir=no_headroom > no_headroom.out 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "error: device 0 cannot hold this run: .* GB needed.* under the 1.074 GB kept free for what CUDA (its lazily loaded kernels) and, on several GPU ranks, NCCL (its buffers) allocate later.*; memory per rank, full-rank phase: " no_headroom.out &&
  [ ! -e no_headroom/metrics.jsonl ]
check too_little_left_beside_the_arena $? "exit $rc; $(head -c 600 no_headroom.out)"
# relora bench --set train.device=cuda, the command that measures a GPU (its speed probes
# shrunk to 256^3 in the emulated build): both phases run and print one JSON line on the
# device, with the arena held and its tensors in it; FAST_16BF products need no scratch,
# so their run holds less; --profile times the products by shape
bench_line() {  # NAME ARGS..: the JSON line of relora bench ARGS (all its output in NAME.out)
  local name="$1"
  shift
  "$relora" bench --config run.yaml --set train.device=cuda --steps 2 --warmup 1 "$@" > "$name.out" 2>&1 &&
    grep '^{' "$name.out"
}
full_line="$(bench_line bench_full --phase full)" && relora_line="$(bench_line bench_relora --phase relora)" &&
  fast_line="$(bench_line bench_fast --phase full --set train.matmul=bf16)"
rc=$?
field() { grep -o "\"$2\":[^,}]*" <<<"$1" | cut -d: -f2 | tr -d '"'; }
[ "$rc" -eq 0 ] && [ "$(field "$full_line" phase)" = full ] && [ "$(field "$relora_line" phase)" = relora ] &&
  [ "$(field "$full_line" matmul)" = bf16_copy ] && [ "$(field "$fast_line" matmul)" = bf16 ] &&
  grep -q '"device":"cuda:0' <<<"$full_line" &&
  [ "$(field "$full_line" peak_mem_bytes)" -gt 0 ] &&
  [ "$(field "$full_line" device_reserved_bytes)" -gt "$(field "$full_line" peak_mem_bytes)" ] &&
  [ "$(field "$relora_line" peak_mem_bytes)" -lt "$(field "$full_line" peak_mem_bytes)" ] &&
  [ "$(field "$fast_line" peak_mem_bytes)" -lt "$(field "$full_line" peak_mem_bytes)" ]
check bench_on_the_device $? "exit $rc; $full_line; $relora_line; $fast_line"
"$relora" bench --config run.yaml --set train.device=cuda --steps 2 --warmup 1 --phase relora \
  --profile > profile.out 2>&1
rc=$?
[ "$rc" -eq 0 ] && grep -q "gemm NT " profile.out && grep -q "attention_forward" profile.out
check bench_profile_on_the_device $? "exit $rc; $(tail -3 profile.out)"

# relora bench's speed probes, before the arena, on a device without room for their
# operands: the same kind of stop (their allocation fails before any product runs). 33 MB:
# cuBLAS's 32 MiB workspace fits, the 256^3 probes' operands (1.2 MB) do not
SIM_DEVICE_MEMORY_MB=33 "$relora" bench --config run.yaml --set train.device=cuda --steps 2 \
  --warmup 1 > probes.out 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "error: the speed probes .* cannot allocate their operands on the device: .* GB more" probes.out
check bench_probes_without_room_stop_cleanly $? "exit $rc; $(head -c 400 probes.out)"
# and 1300 MB leave enough
SIM_DEVICE_MEMORY_MB=1300 "$relora" train --config run.yaml --set train.device=cuda --set train.steps=2 \
  --set checkpoint.dir=headroom > headroom.out 2>&1
check enough_left_beside_the_arena $? "$(tail -2 headroom.out)"

device_logs=(cuda.out recompute.out host_masters.out cuda_bf16.out cuda_tf32.out cuda_fast.out resumed.out
  eval.err bench_full.out bench_relora.out bench_fast.out profile.out)
! grep -l '^cuda_sim: ' "${device_logs[@]}" > /dev/null 2>&1
check no_emulator_errors $? "$(grep -h -m3 '^cuda_sim: ' "${device_logs[@]}")"

[ "$failures" -eq 0 ]
