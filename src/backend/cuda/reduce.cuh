// Device-side reductions shared by the row kernels (RMSNorm, softmax, cross-entropy,
// sum of squares): warp shuffles, then one value per warp through shared memory.
// Every thread of the block must call them (they contain __syncthreads), blockDim.x must be
// a multiple of 32 (at most 1024) and blockDim.y == blockDim.z == 1. The order of the
// additions depends only on blockDim, so results are deterministic.
#pragma once
#include <cuda_runtime.h>

namespace relora::cuda {

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a > b ? a : b;
  }
};

template <typename T, typename Op>
__device__ inline T warp_reduce(T value, Op op) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  return value;
}

// The reduction of `value` over the block, returned to every thread. `identity` fills the
// unused slots (0 for sums, -INFINITY for max).
template <typename T, typename Op>
__device__ inline T block_reduce(T value, Op op, T identity) {
  __shared__ T warp_results[32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  value = warp_reduce(value, op);
  __syncthreads();  // a previous call's readers are done with warp_results
  if (lane == 0) warp_results[warp] = value;
  __syncthreads();
  value = lane < warps ? warp_results[lane] : identity;
  return warp_reduce(value, op);  // every warp reduces the same values in the same order
}

}  // namespace relora::cuda
