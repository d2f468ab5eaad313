#!/usr/bin/env bash
# `mpirun -np 2 relora train --set train.device=cuda` on the emulated CUDA backend: the
# multi-GPU path (NcclComm: the unique id broadcast over MPI, the buckets' all-reduces
# queued behind compute-stream events and awaited with ncclCommGetAsyncError) over the
# emulated NCCL (tests/cuda_sim/nccl: an all-reduce over MPI). Two ranks on the device
# against two ranks on the CPU (MPI all-reduce): the first step's loss within 1e-4
# relative, later ones within 2e-3 (bf16 products), gradient norms within 3e-2, the same
# bytes all-reduced, also with train.allreduce_dtype bf16 and two micro-batches per rank;
# a resume on two device ranks is exact; and a broken link (rank 1's third all-reduce
# fails, its peer waits in its own) ends the job with the NCCL error within 30 s;
# NCCL_COMM_BLOCKING=0 is refused with exit 2; with two GPUs per node each rank binds
# its own before MPI_Init, and warns when the launcher's and MPI's local ranks differ; a
# device too small for NCCL's headroom beside the arena is refused at start-up.
#   usage: emulated_nccl.sh RELORA_EMULATED_BINARY
set -uo pipefail
relora="$1"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpirun=(mpirun -np 2 --oversubscribe --bind-to none)

write_emulated_case

# same_sync A B: every step's gradient norm within 3e-2 relative (the bf16 products; measured
# 1e-2 at most; gradients summed but not averaged would be 2x, never reduced ones would
# fail the replica check), and the same comm_bytes
same_sync() {
  paste <(metric "$1" grad_norm) <(metric "$2" grad_norm) | awk '
    { n++; d = $1 - $2; if (d < 0) d = -d; if (d > 3e-2 * $2) bad++ }
    END { exit (n == 12 && bad == 0) ? 0 : 1 }' && [ "$(metric "$1" comm_bytes)" = "$(metric "$2" comm_bytes)" ]
}
# train DIR DEVICE [ARGS..]: two ranks, small buckets (several per step, overlapping backward)
train() {
  local dir="$1" device="$2"
  shift 2
  timeout 300 "${mpirun[@]}" "$relora" train --config run.yaml --set train.device="$device" \
    --set train.bucket_mb=0.05 --set checkpoint.dir="$dir" "$@" > "$dir.out" 2>&1
}

train cpu cpu
check cpu_two_ranks_run $? "$(tail -3 cpu.out)"
train cuda cuda
rc=$?
grep -q "gradients all-reduced over nccl, host values over mpi" cuda.out && [ "$rc" -eq 0 ]
check cuda_two_ranks_over_nccl $? "exit $rc; $(grep -m3 -i 'gradients\|error' cuda.out)"
within cuda cpu
check nccl_losses_within_bf16_tolerance_of_mpi $? "$(paste <(losses cuda) <(losses cpu))"
same_sync cuda cpu
check nccl_gradient_norms_and_bytes_as_mpi $? "$(paste <(metric cuda grad_norm) <(metric cpu grad_norm) <(metric cuda comm_bytes) <(metric cpu comm_bytes))"

# bf16 all-reduce: staged bf16 buckets summed by NCCL (ncclBfloat16), against the CPU's;
# global batch 8: two micro-batches per rank, the buckets starting in the second
train cpu_bf16 cpu --set train.allreduce_dtype=bf16 --set train.global_batch=8
check cpu_bf16_allreduce_run $? "$(tail -3 cpu_bf16.out)"
train cuda_bf16 cuda --set train.allreduce_dtype=bf16 --set train.global_batch=8
check cuda_bf16_allreduce_run $? "$(tail -3 cuda_bf16.out)"
within cuda_bf16 cpu_bf16
check nccl_bf16_losses_within_tolerance_of_mpi $? "$(paste <(losses cuda_bf16) <(losses cpu_bf16))"
same_sync cuda_bf16 cpu_bf16
check nccl_bf16_gradient_norms_and_bytes_as_mpi $? "$(paste <(metric cuda_bf16 grad_norm) <(metric cpu_bf16 grad_norm))"

# resume from step 6 on two device ranks: steps 7..12 exactly as the run above
mkdir resumed && cp cuda/step_00000006.h5 resumed/ && echo step_00000006.h5 > resumed/latest
train resumed cuda --resume auto
check resumed_run $? "$(tail -3 resumed.out)"
[ "$(losses resumed)" = "$(losses cuda | awk '$1 >= 7')" ] && [ "$(losses resumed | wc -l)" -eq 6 ]
check nccl_resume_is_exact $? "$(paste <(losses resumed) <(losses cuda))"

# a broken link: rank 1's third all-reduce fails (ncclRemoteError), rank 0 waits in its
# own; rank 1 finds the error while it waits and ends the job
start=$SECONDS
SIM_NCCL_FAIL_RANK=1 SIM_NCCL_FAIL_AT=3 timeout 60 "${mpirun[@]}" -x SIM_NCCL_FAIL_RANK -x SIM_NCCL_FAIL_AT \
  "$relora" train --config run.yaml --set train.device=cuda --set train.bucket_mb=0.05 \
  --set checkpoint.dir=broken > broken.out 2>&1
rc=$?
elapsed=$((SECONDS - start))
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$elapsed" -le 30 ] &&
  grep -q "rank 1: .*NCCL all-reduce failed: remote process exited or there was a network error" broken.out
check broken_link_ends_the_job $? "exit $rc after ${elapsed}s; $(grep -m3 -i 'error\|nccl' broken.out)"

# NCCL_COMM_BLOCKING=0 (non-blocking communicators, which relora does not poll): exit 2 at
# start, said once for all ranks
NCCL_COMM_BLOCKING=0 timeout 60 "${mpirun[@]}" -x NCCL_COMM_BLOCKING "$relora" train --config run.yaml \
  --set train.device=cuda --set checkpoint.dir=nonblocking > nonblocking.out 2>&1
rc=$?
[ "$rc" -eq 2 ] && [ "$(grep -c "NCCL_COMM_BLOCKING=0 makes NCCL's communicators non-blocking" nonblocking.out)" -eq 1 ]
check nonblocking_nccl_refused $? "exit $rc; $(grep -m2 -i 'error' nonblocking.out)"

# two GPUs per node (SIM_DEVICES=2): each rank binds its own before MPI_Init, from the
# launcher's local rank, and the same one after; with the launcher's local ranks swapped,
# each rank warns that MPI's gives another GPU
SIM_DEVICES=2 timeout 120 "${mpirun[@]}" -x SIM_DEVICES "$relora" train --config run.yaml \
  --set train.device=cuda --set train.steps=2 --set checkpoint.dir=two_gpus > two_gpus.out 2>&1
rc=$?
grep -q "local rank 0 -> GPU 0 of 2, bound before MPI_Init (OMPI_COMM_WORLD_LOCAL_RANK)" two_gpus.out &&
  ! grep -q "warning" two_gpus.out && [ "$rc" -eq 0 ]
check gpu_bound_before_mpi_init $? "exit $rc; $(grep -m2 'backend\|warning\|error' two_gpus.out)"
SIM_DEVICES=2 timeout 120 "${mpirun[@]}" -x SIM_DEVICES bash -c \
  "OMPI_COMM_WORLD_LOCAL_RANK=\$((1 - OMPI_COMM_WORLD_LOCAL_RANK)) exec '$relora' train --config run.yaml \
   --set train.device=cuda --set train.steps=2 --set checkpoint.dir=swapped" > swapped.out 2>&1
rc=$?
[ "$rc" -eq 0 ] && [ "$(grep -c "warning: local rank [01]: GPU [01] was bound before MPI_Init (from OMPI_COMM_WORLD_LOCAL_RANK), GPU [01] after it" swapped.out)" -eq 2 ]
check differing_local_ranks_warn $? "exit $rc; $(grep -m3 'warning\|error' swapped.out)"

# NCCL's headroom: on emulated 3000 MB devices a single rank fits beside its arena (it
# keeps 1 GiB free), two ranks do not (NCCL's buffers: 3 GiB more): exit 2 at start-up
SIM_DEVICE_MEMORY_MB=3000 timeout 60 "$relora" train --config run.yaml --set train.device=cuda \
  --set train.steps=2 --set checkpoint.dir=one_small > one_small.out 2>&1
check one_rank_fits_a_small_device $? "$(tail -2 one_small.out)"
SIM_DEVICE_MEMORY_MB=3000 timeout 60 "${mpirun[@]}" -x SIM_DEVICE_MEMORY_MB "$relora" train --config run.yaml \
  --set train.device=cuda --set train.steps=2 --set checkpoint.dir=two_small > two_small.out 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "cannot hold this run: .* under the 4.295 GB kept free for what CUDA (its lazily loaded kernels) and, on several GPU ranks, NCCL (its buffers)" two_small.out
check nccl_headroom_refused $? "exit $rc; $(grep -m2 -i 'error' two_small.out)"

logs=(cuda.out cuda_bf16.out resumed.out broken.out two_gpus.out swapped.out one_small.out)
! grep -l '^cuda_sim: ' "${logs[@]}" > /dev/null 2>&1
check no_emulator_errors $? "$(grep -h -m3 '^cuda_sim: ' "${logs[@]}")"

[ "$failures" -eq 0 ]
