// Launchers of buggy_kernels.cu: kernels with one known bug each, for the emulator's
// self-check (test_emulator_self_check.cpp). `correct` = true runs the fixed version.
#pragma once
#include <cstdint>

namespace relora::cuda_sim_self_check {

// out(128): thread t reads what thread (t + 32) % 128, of another warp, wrote to shared
// memory; the bug: no __syncthreads between the write and the read.
void launch_exchange_across_warps(float* out, bool correct);
// out(32): lane l reads lane (l + 1) % 32's shared-memory slot; the bug: no __syncwarp.
void launch_exchange_within_warp(float* out, bool correct);
// out(32): lane l reads element (l % 16, (l + 5) % 16) of a 16x16 wmma accumulator the warp
// stored (all ones); the bug: no __syncwarp after store_matrix_sync.
void launch_read_wmma_store(float* out, bool correct);
// Thread 5 writes float `index` of 1024 floats of dynamic shared memory.
void launch_write_shared(int index);
// out(n) = in[i + 1] for i < n (the bug: reads in[n]).
void launch_shift_left(float* out, const float* in, int n);
// 64 threads: thread 0 waits at __syncwarp, the others at __syncthreads.
void launch_deadlock();
// 64 threads: warp 0 and warp 1 at two different __syncthreads.
void launch_divergent_syncthreads();
// out(16): lanes 0..15 take lane l + 16's value by shuffle, after lanes 16..31 returned.
void launch_shuffle_from_exited_lanes(float* out);
// A launch of `threads` threads per block and `smem_bytes` of dynamic shared memory
// (no cudaFuncSetAttribute) of an empty kernel.
void launch_empty(int threads, int smem_bytes);

}  // namespace relora::cuda_sim_self_check
