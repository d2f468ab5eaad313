// Kernels with one known bug each, compiled like src/backend/cuda's (the same source
// rewrite, the same emulator): the self-check that cuda_sim reports or exposes each class
// of bug (test_emulator_self_check.cpp). Not part of any CUDA build.
#include <mma.h>

#include "backend/cuda/check.h"
#include "buggy_kernels.h"

namespace relora::cuda_sim_self_check {
namespace {

__global__ void exchange_across_warps_kernel(float* out, bool correct) {
  extern __shared__ float slots[];
  slots[threadIdx.x] = static_cast<float>(threadIdx.x);
  if (correct) __syncthreads();
  out[threadIdx.x] = slots[(threadIdx.x + 32) % blockDim.x];
}

__global__ void exchange_within_warp_kernel(float* out, bool correct) {
  extern __shared__ float slots[];
  slots[threadIdx.x] = static_cast<float>(threadIdx.x);
  if (correct) __syncwarp();
  out[threadIdx.x] = slots[(threadIdx.x + 1) % 32];
}

__global__ void read_wmma_store_kernel(float* out, bool correct) {
  extern __shared__ __align__(128) unsigned char smem[];
  float* tile = reinterpret_cast<float*>(smem);
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> ones;
  nvcuda::wmma::fill_fragment(ones, 1.0f);
  nvcuda::wmma::store_matrix_sync(tile, ones, 16, nvcuda::wmma::mem_row_major);
  if (correct) __syncwarp();
  out[threadIdx.x] = tile[(threadIdx.x % 16) * 16 + (threadIdx.x + 5) % 16];
}

__global__ void write_shared_kernel(int index) {
  extern __shared__ float buffer[];
  if (threadIdx.x == 5) buffer[index] = 1.0f;
}

__global__ void shift_left_kernel(float* out, const float* in, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i + 1];
}

__global__ void deadlock_kernel() {
  if (threadIdx.x == 0) {
    __syncwarp();
  } else {
    __syncthreads();
  }
}

__global__ void divergent_syncthreads_kernel() {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

__global__ void shuffle_from_exited_lanes_kernel(float* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<float>(threadIdx.x), 16);
}

__global__ void empty_kernel() {}

}  // namespace

void launch_exchange_across_warps(float* out, bool correct) {
  exchange_across_warps_kernel<<<1, 128, 128 * sizeof(float), nullptr>>>(out, correct);
  CUDA_CHECK_LAUNCH();
}
void launch_exchange_within_warp(float* out, bool correct) {
  exchange_within_warp_kernel<<<1, 32, 32 * sizeof(float), nullptr>>>(out, correct);
  CUDA_CHECK_LAUNCH();
}
void launch_read_wmma_store(float* out, bool correct) {
  read_wmma_store_kernel<<<1, 32, 16 * 16 * sizeof(float), nullptr>>>(out, correct);
  CUDA_CHECK_LAUNCH();
}
void launch_write_shared(int index) {
  write_shared_kernel<<<1, 32, 1024 * sizeof(float), nullptr>>>(index);
  CUDA_CHECK_LAUNCH();
}
void launch_shift_left(float* out, const float* in, int n) {
  shift_left_kernel<<<(n + 127) / 128, 128, 0, nullptr>>>(out, in, n);
  CUDA_CHECK_LAUNCH();
}
void launch_deadlock() {
  deadlock_kernel<<<1, 64, 0, nullptr>>>();
  CUDA_CHECK_LAUNCH();
}
void launch_divergent_syncthreads() {
  divergent_syncthreads_kernel<<<1, 64, 0, nullptr>>>();
  CUDA_CHECK_LAUNCH();
}
void launch_shuffle_from_exited_lanes(float* out) {
  shuffle_from_exited_lanes_kernel<<<1, 32, 0, nullptr>>>(out);
  CUDA_CHECK_LAUNCH();
}
void launch_empty(int threads, int smem_bytes) {
  empty_kernel<<<1, threads, smem_bytes, nullptr>>>();
  CUDA_CHECK_LAUNCH();
}

}  // namespace relora::cuda_sim_self_check
