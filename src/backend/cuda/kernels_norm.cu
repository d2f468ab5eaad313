// Row kernels: RMSNorm forward/backward and fused softmax + cross-entropy. One block per row
// (row n = blockIdx.x), threads stride over the row's columns, block reductions in fp32
// (cross-entropy's sum of exponentials in double, as on the CPU).
#include <cmath>

#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/reduce.cuh"

namespace relora::cuda {
namespace {

constexpr int kRowThreads = 256;           // RMSNorm rows (C ~ 10^3)
constexpr int kCrossEntropyThreads = 512;  // logit rows (V ~ 10^4..10^5)

// x(N,C), w(C) -> out(N,C), rstd(N): rstd = 1/sqrt(mean(x^2) + eps), out = x rstd w
__global__ void rmsnorm_forward_kernel(float* out, float* rstd, const float* x, const float* w,
                                       int C, float eps) {
  const int64_t n = blockIdx.x;
  const float* x_row = x + n * C;
  float* out_row = out + n * C;
  float sum_sq = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) sum_sq += x_row[c] * x_row[c];
  sum_sq = block_reduce(sum_sq, SumOp{}, 0.0f);
  const float r = 1.0f / sqrtf(sum_sq / static_cast<float>(C) + eps);
  if (threadIdx.x == 0) rstd[n] = r;
  for (int c = threadIdx.x; c < C; c += blockDim.x) out_row[c] = x_row[c] * r * w[c];
}

// dw(C) += sum_n d_out[n, c] x[n, c] rstd[n]. Block (kDwColumns, kDwRowSubsets):
// threadIdx.x picks one of 8 adjacent columns (one 32-byte sector per row), threadIdx.y one
// of 128 interleaved row subsets; a column's 128 partial sums are then added in a fixed
// order: deterministic, no atomics. grid.x = ceil(C / 8): 128 blocks for C = 1024, enough
// to keep the device's memory busy (32 columns per block left most SMs idle).
constexpr int kDwColumns = 8, kDwRowSubsets = 128;
__global__ void rmsnorm_dw_kernel(float* dw, const float* d_out, const float* x,
                                  const float* rstd, int N, int C) {
  __shared__ float partial[kDwRowSubsets][kDwColumns];  // a warp's 4 x 8 writes: 32 banks
  const int c = blockIdx.x * kDwColumns + threadIdx.x;
  float sum = 0.0f;
  if (c < C) {
    for (int n = threadIdx.y; n < N; n += kDwRowSubsets) {
      const int64_t i = static_cast<int64_t>(n) * C + c;
      sum += d_out[i] * x[i] * rstd[n];
    }
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float total = 0.0f;
    for (int s = 0; s < kDwRowSubsets; ++s) total += partial[s][threadIdx.x];
    dw[c] += total;
  }
}

// With r = rstd[n], dot = sum_c d_out[c] w[c] x[c]:  dx[c] = r (d_out[c] w[c] - x[c] r^2 dot / C).
// dx may alias d_out: the dot product's reads all finish before block_reduce returns (its
// barrier), and afterwards each element is read and written by the same thread.
__global__ void rmsnorm_dx_kernel(float* dx, const float* d_out, const float* x, const float* w,
                                  const float* rstd, int C) {
  const int64_t n = blockIdx.x;
  const float* d_out_row = d_out + n * C;
  const float* x_row = x + n * C;
  float* dx_row = dx + n * C;
  float dot = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dot += d_out_row[c] * w[c] * x_row[c];
  dot = block_reduce(dot, SumOp{}, 0.0f);
  const float r = rstd[n];
  const float x_coeff = r * r * dot / static_cast<float>(C);
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    dx_row[c] = r * (d_out_row[c] * w[c] - x_row[c] * x_coeff);
  }
}

// Row n of logits(N,V): loss = log(sum_j exp(l_j - max)) + max - l_target (double);
// d_logits row (if not null) = (softmax - onehot(target)) * d_loss_scale. d_logits may alias
// logits: the target logit is read before the first barrier, every read of the reductions
// finishes before the second block_reduce returns, and the final loop reads and writes each
// element in the same thread. A target outside [0, V) (the loader validates them, so this is
// a bug upstream) gives a NaN loss and NaN gradients instead of an out-of-bounds read.
__global__ void cross_entropy_kernel(float* d_logits, float* losses, const float* logits,
                                     const int32_t* targets, int V, float d_loss_scale) {
  const int64_t n = blockIdx.x;
  const float* row = logits + n * V;
  float* d_row = d_logits == nullptr ? nullptr : d_logits + n * V;
  const int target = targets[n];
  if (target < 0 || target >= V) {  // the same branch for the whole block
    if (threadIdx.x == 0) losses[n] = NAN;
    if (d_row != nullptr) {
      for (int j = threadIdx.x; j < V; j += blockDim.x) d_row[j] = NAN;
    }
    return;
  }
  const float target_logit = row[target];
  float max_logit = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x) max_logit = fmaxf(max_logit, row[j]);
  max_logit = block_reduce(max_logit, MaxOp{}, -INFINITY);
  double sum_exp = 0.0;
  for (int j = threadIdx.x; j < V; j += blockDim.x) sum_exp += expf(row[j] - max_logit);
  sum_exp = block_reduce(sum_exp, SumOp{}, 0.0);
  if (d_row != nullptr) {
    const float factor = static_cast<float>(d_loss_scale / sum_exp);
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
      float d = expf(row[j] - max_logit) * factor;
      if (j == target) d -= d_loss_scale;
      d_row[j] = d;
    }
  }
  if (threadIdx.x == 0) {
    losses[n] = static_cast<float>(log(sum_exp) + static_cast<double>(max_logit) -
                                   static_cast<double>(target_logit));
  }
}

}  // namespace

void launch_rmsnorm_forward(cudaStream_t stream, float* out, float* rstd, const float* x,
                            const float* w, int N, int C, float eps) {
  if (N == 0) return;
  rmsnorm_forward_kernel<<<N, kRowThreads, 0, stream>>>(out, rstd, x, w, C, eps);
  CUDA_CHECK_LAUNCH();
}

void launch_rmsnorm_backward(cudaStream_t stream, float* dx, float* dw, const float* d_out,
                             const float* x, const float* w, const float* rstd, int N, int C) {
  if (N == 0) return;
  if (dw != nullptr) {  // before dx: dx may overwrite d_out
    rmsnorm_dw_kernel<<<(C + kDwColumns - 1) / kDwColumns, dim3(kDwColumns, kDwRowSubsets), 0,
                        stream>>>(dw, d_out, x, rstd, N, C);
    CUDA_CHECK_LAUNCH();
  }
  rmsnorm_dx_kernel<<<N, kRowThreads, 0, stream>>>(dx, d_out, x, w, rstd, C);
  CUDA_CHECK_LAUNCH();
}

void launch_cross_entropy(cudaStream_t stream, float* d_logits, float* losses,
                          const float* logits, const int32_t* targets, int N, int V,
                          float d_loss_scale) {
  if (N == 0) return;
  cross_entropy_kernel<<<N, kCrossEntropyThreads, 0, stream>>>(d_logits, losses, logits, targets,
                                                               V, d_loss_scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace relora::cuda
