// Optimizer kernels: multi-tensor AdamW (the whole model in a few launches) and ReLoRA's
// moment pruning (per-tensor threshold by radix selection on |m|, not a sort). fp32 math
// term for term as in the CPU backend.
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"

namespace relora::cuda {
namespace {

// ---- multi-tensor AdamW ---------------------------------------------------------------
// Up to kAdamwTensorsPerLaunch tensors travel in the kernel's parameters (no device table
// to upload); each block updates kAdamwChunk consecutive elements of one tensor.
constexpr int kAdamwTensorsPerLaunch = 64;
constexpr int64_t kAdamwChunk = 8 * kElementwiseThreads;

struct AdamwBatch {
  float* param[kAdamwTensorsPerLaunch];
  const float* grad[kAdamwTensorsPerLaunch];
  float* m[kAdamwTensorsPerLaunch];
  float* v[kAdamwTensorsPerLaunch];
  int64_t n[kAdamwTensorsPerLaunch];
  float weight_decay[kAdamwTensorsPerLaunch];
  float m_correction[kAdamwTensorsPerLaunch];  // 1 - beta1^step
  float v_correction[kAdamwTensorsPerLaunch];  // 1 - beta2^step
  // block b updates tensor t where first_block[t] <= b < first_block[t + 1]
  unsigned first_block[kAdamwTensorsPerLaunch + 1];
  int count;
  float lr, beta1, beta2, eps;
};
// Kernel parameters are limited to 4 KiB.
static_assert(sizeof(AdamwBatch) <= 4000, "AdamwBatch must fit in the kernel parameters");

__global__ void adamw_kernel(const __grid_constant__ AdamwBatch batch) {
  int t = 0;
  while (blockIdx.x >= batch.first_block[t + 1]) ++t;
  const int64_t begin = static_cast<int64_t>(blockIdx.x - batch.first_block[t]) * kAdamwChunk;
  const int64_t end = begin + kAdamwChunk < batch.n[t] ? begin + kAdamwChunk : batch.n[t];
  float* param = batch.param[t];
  const float* grad = batch.grad[t];
  float* m = batch.m[t];
  float* v = batch.v[t];
  const float decay = batch.weight_decay[t];
  const float m_correction = batch.m_correction[t], v_correction = batch.v_correction[t];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float g = grad[i];
    const float m_new = batch.beta1 * m[i] + (1.0f - batch.beta1) * g;
    const float v_new = batch.beta2 * v[i] + (1.0f - batch.beta2) * g * g;
    m[i] = m_new;
    v[i] = v_new;
    const float m_hat = m_new / m_correction;
    const float v_hat = v_new / v_correction;
    const float p = param[i];
    param[i] = p - batch.lr * (m_hat / (sqrtf(v_hat) + batch.eps) + decay * p);
  }
}

// ---- moment pruning ------------------------------------------------------------------------
// |m| as an unsigned integer: for non-negative floats the bit patterns order like the values.
__device__ inline uint32_t magnitude_bits(float x) { return __float_as_uint(fabsf(x)); }

// Radix-selection pass: hist[d] += #{i : (bits_i & mask) == prefix, (bits_i >> shift) & 255 == d}
__global__ void magnitude_histogram_kernel(unsigned long long* hist, const float* m, int64_t n,
                                           uint32_t prefix, uint32_t mask, int shift) {
  __shared__ unsigned int local[256];
  for (int d = threadIdx.x; d < 256; d += blockDim.x) local[d] = 0;
  __syncthreads();
  GRID_STRIDE_LOOP(i, n) {
    const uint32_t bits = magnitude_bits(m[i]);
    if ((bits & mask) == prefix) atomicAdd(&local[(bits >> shift) & 255u], 1u);
  }
  __syncthreads();
  for (int d = threadIdx.x; d < 256; d += blockDim.x)
    if (local[d] != 0) atomicAdd(&hist[d], static_cast<unsigned long long>(local[d]));
}

// One block walks the tensor in index order, tile by tile: zeroes m and v where
// |m| < threshold, and the first ties_to_zero elements with |m| == threshold.
constexpr int kPruneThreads = 1024;
__global__ void __launch_bounds__(kPruneThreads)
    prune_in_order_kernel(float* m, float* v, int64_t n, uint32_t threshold,
                          int64_t ties_to_zero) {
  using Scan = cub::BlockScan<int, kPruneThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  int64_t ties_before = 0;  // ties in the tiles already done (the same in every thread)
  for (int64_t base = 0; base < n; base += kPruneThreads) {
    const int64_t i = base + threadIdx.x;
    const uint32_t bits = i < n ? magnitude_bits(m[i]) : 0xFFFFFFFFu;
    const int tie = (i < n && bits == threshold) ? 1 : 0;
    int tie_rank = 0, tile_ties = 0;
    Scan(scan_storage).ExclusiveSum(tie, tie_rank, tile_ties);
    if (i < n && (bits < threshold || (tie && ties_before + tie_rank < ties_to_zero))) {
      m[i] = 0.0f;
      v[i] = 0.0f;
    }
    ties_before += tile_ties;
    __syncthreads();  // scan_storage is reused by the next tile
  }
}

constexpr unsigned kHistogramBlocks = 512;  // enough to fill the device, few global atomics

}  // namespace

void launch_adamw(cudaStream_t stream, const std::vector<AdamwTensor>& tensors,
                  const AdamwHyper& hyper) {
  AdamwBatch batch{};
  batch.lr = hyper.lr;
  batch.beta1 = hyper.beta1;
  batch.beta2 = hyper.beta2;
  batch.eps = hyper.eps;
  const auto launch = [&] {
    if (batch.count == 0) return;
    adamw_kernel<<<batch.first_block[batch.count], kElementwiseThreads, 0, stream>>>(batch);
    CUDA_CHECK_LAUNCH();
    batch.count = 0;
  };
  constexpr int64_t kMaxBlocks = int64_t{1} << 30;  // far below gridDim.x's 2^31 - 1
  for (const AdamwTensor& t : tensors) {
    if (t.n == 0) continue;
    const int64_t blocks = (t.n + kAdamwChunk - 1) / kAdamwChunk;
    RELORA_CHECK(blocks <= kMaxBlocks, "adamw tensor of " << t.n << " elements is too large");
    if (batch.count == kAdamwTensorsPerLaunch ||
        batch.first_block[batch.count] + blocks > kMaxBlocks)
      launch();
    const int c = batch.count;
    batch.param[c] = t.param;
    batch.grad[c] = t.grad;
    batch.m[c] = t.m;
    batch.v[c] = t.v;
    batch.n[c] = t.n;
    batch.weight_decay[c] = t.weight_decay;
    batch.m_correction[c] = adamw_bias_correction(hyper.beta1, t.step);
    batch.v_correction[c] = adamw_bias_correction(hyper.beta2, t.step);
    batch.first_block[c + 1] = batch.first_block[c] + static_cast<unsigned>(blocks);
    batch.count = c + 1;
  }
  launch();
}

void launch_prune_smallest(cudaStream_t stream, float* m, float* v, int64_t n, int64_t k,
                           unsigned long long* histogram) {
  if (k == 0) return;
  // Four 8-bit passes from the top: after each, `prefix` holds the known high bits of the
  // k-th smallest |m| and `rank` its 1-based rank among the elements sharing them.
  uint32_t prefix = 0, mask = 0;
  int64_t rank = k;
  unsigned long long counts[256];
  const unsigned blocks = std::min(grid_stride_blocks(n), kHistogramBlocks);
  for (int shift = 24; shift >= 0; shift -= 8) {
    CUDA_CHECK(cudaMemsetAsync(histogram, 0, sizeof(counts), stream));
    magnitude_histogram_kernel<<<blocks, kElementwiseThreads, 0, stream>>>(histogram, m, n, prefix,
                                                                           mask, shift);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaMemcpyAsync(counts, histogram, sizeof(counts), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    int digit = 0;
    while (digit < 256 && rank > static_cast<int64_t>(counts[digit])) rank -= counts[digit++];
    RELORA_CHECK(digit < 256, "prune_smallest: histogram of " << n << " elements lost count");
    prefix |= static_cast<uint32_t>(digit) << shift;
    mask |= 0xFFu << shift;
  }
  // prefix = the bits of the threshold; rank = how many elements equal to it are zeroed.
  prune_in_order_kernel<<<1, kPruneThreads, 0, stream>>>(m, v, n, prefix, rank);
  CUDA_CHECK_LAUNCH();
}

}  // namespace relora::cuda
