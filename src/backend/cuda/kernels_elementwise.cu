// Elementwise and gather/scatter kernels: embedding, adapter columns, RoPE, SwiGLU,
// scale, axpy, sum of squares, bf16 conversions, and the bf16 and fp32 fills of the FLOP
// probes. One thread per element in grid-stride loops (int64 indices), fp32 math as in the CPU backend. Token ids are
// not range-checked here: the data loader validated them against the vocabulary.
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/reduce.cuh"

namespace relora::cuda {
namespace {

// out(N,C)[n, c] = table(V,C)[tokens[n], c]
__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* table,
                                         int N, int C) {
  GRID_STRIDE_LOOP(i, static_cast<int64_t>(N) * C) {
    const int64_t n = i / C, c = i % C;
    out[i] = table[static_cast<int64_t>(tokens[n]) * C + c];
  }
}

// The gradient scatters, dst[token, c] += src(N,width)[n, c], without atomics. Block
// (i, y): when order[i] starts a token's run (its positions, in position order), one thread
// per column c of slice y adds the run's rows one after the other, as the CPU does, so the
// sums are the CPU's bit for bit; other blocks return at once. dst's element (token, c) is
// at token * token_stride + c * column_stride: the embedding table's rows (C, 1), or the
// embedding adapter A's columns (1, V). The slices split the columns; each thread walks
// its token's whole run.
__global__ void scatter_runs_kernel(float* dst, const float* src, const int32_t* tokens,
                                    const int32_t* order, int N, int width,
                                    int64_t token_stride, int64_t column_stride) {
  const int i = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
  const int32_t token = tokens[order[i]];
  if ((i > 0 && tokens[order[i - 1]] == token) || c >= width) return;
  float* out = dst + token * token_stride + c * column_stride;
  float sum = *out;
  for (int k = i; k < N && tokens[order[k]] == token; ++k)
    sum += src[static_cast<int64_t>(order[k]) * width + c];
  *out = sum;
}

// cols(N,r)[n, j] = a(r,V)[j, tokens[n]]
__global__ void gather_columns_kernel(float* cols, const float* a, const int32_t* tokens, int N,
                                      int r, int V) {
  GRID_STRIDE_LOOP(i, static_cast<int64_t>(N) * r) {
    const int64_t n = i / r, j = i % r;
    cols[i] = a[j * V + tokens[n]];
  }
}

// x(B,T,H,D): one thread per pair (row, h, i), i < D/2, pairing dimension i with i + D/2;
// position t = row % T. (a, b) -> (a cos - b s, b cos + a s), s = direction * sin.
__global__ void rope_kernel(float* x, const float* cos, const float* sin, int B, int T, int H,
                            int D, float direction) {
  const int half = D / 2;
  GRID_STRIDE_LOOP(idx, static_cast<int64_t>(B) * T * H * half) {
    const int64_t i = idx % half;
    const int64_t row_head = idx / half;  // row * H + h
    const int64_t row = row_head / H;
    const int64_t t = row % T;
    float* first = x + row_head * D + i;  // dimension i
    float* second = first + half;         // dimension i + D/2
    const float a = *first, b = *second;
    const float c = cos[t * half + i];
    const float s = direction * sin[t * half + i];
    *first = a * c - b * s;
    *second = b * c + a * s;
  }
}

// out = g sigmoid(g) u
__global__ void swiglu_forward_kernel(float* out, const float* g, const float* u, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const float sig = 1.0f / (1.0f + expf(-g[i]));
    out[i] = g[i] * sig * u[i];
  }
}

// dg = d u sig (1 + g (1 - sig)), du = d g sig
__global__ void swiglu_backward_kernel(float* dg, float* du, const float* d_out, const float* g,
                                       const float* u, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const float gi = g[i], ui = u[i], d = d_out[i];
    const float sig = 1.0f / (1.0f + expf(-gi));
    dg[i] = d * ui * sig * (1.0f + gi * (1.0f - sig));
    du[i] = d * gi * sig;
  }
}

__global__ void scale_kernel(float* x, int64_t n, float s) {
  GRID_STRIDE_LOOP(i, n) x[i] *= s;
}

__global__ void axpy_kernel(float* y, const float* x, int64_t n, float alpha) {
  GRID_STRIDE_LOOP(i, n) y[i] += alpha * x[i];
}

__global__ void to_bf16_kernel(uint16_t* dst, const float* src, int64_t n) {
  GRID_STRIDE_LOOP(i, n) dst[i] = __bfloat16_as_ushort(__float2bfloat16_rn(src[i]));
}

// dst(rows,cols) with row stride dst_ld = scale * src(rows,cols) with row stride src_ld,
// rounded as to_bf16_kernel. Rows by blockIdx.y (grid-stride), columns by the x threads:
// no 64-bit division per element.
__global__ void rows_to_bf16_kernel(uint16_t* dst, int64_t dst_ld, const float* src, int64_t rows,
                                    int cols, int64_t src_ld, float scale) {
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const float* in = src + row * src_ld;
    uint16_t* out = dst + row * dst_ld;
    for (int col = blockIdx.x * blockDim.x + threadIdx.x; col < cols; col += gridDim.x * blockDim.x)
      out[col] = __bfloat16_as_ushort(__float2bfloat16_rn(scale * in[col]));
  }
}

__global__ void from_bf16_kernel(float* dst, const uint16_t* src, int64_t n) {
  GRID_STRIDE_LOOP(i, n) dst[i] = __bfloat162float(__ushort_as_bfloat16(src[i]));
}

// Pass 1: partials[block] = sum over the block's grid-stride share of x[i]^2, in double.
// The grid is always kSumSquaresBlocks blocks, so the split (and the result) is fixed.
__global__ void sum_squares_partial_kernel(double* partials, const float* x, int64_t n) {
  double sum = 0.0;
  GRID_STRIDE_LOOP(i, n) {
    const double xi = x[i];
    sum += xi * xi;
  }
  sum = block_reduce(sum, SumOp{}, 0.0);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// Pass 2 (one block): *result = sum of the partials.
__global__ void sum_squares_final_kernel(double* result, const double* partials) {
  double sum = 0.0;
  for (int i = threadIdx.x; i < kSumSquaresBlocks; i += blockDim.x) sum += partials[i];
  sum = block_reduce(sum, SumOp{}, 0.0);
  if (threadIdx.x == 0) *result = sum;
}

// The peak probes' operands: x[i] uniform in [-0.08, 0.08) from a hash of i, so 8192-term
// dot products stay far inside bf16 range. Random-looking bits, not a short repeating
// pattern with exact zeros: tensor cores draw less power, and clock higher, on such data,
// which would overstate the peak.
__device__ inline float probe_value(int64_t i) {
  uint32_t h = static_cast<uint32_t>(i) * 0x9E3779B1u ^ static_cast<uint32_t>(i >> 32);
  h ^= h >> 15;
  h *= 0x85EBCA77u;
  h ^= h >> 13;
  h *= 0xC2B2AE3Du;
  h ^= h >> 16;
  return (static_cast<float>(h >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * 0.08f;
}
__global__ void fill_bf16_kernel(__nv_bfloat16* x, int64_t n) {
  GRID_STRIDE_LOOP(i, n) x[i] = __float2bfloat16(probe_value(i));
}
__global__ void fill_f32_kernel(float* x, int64_t n) {
  GRID_STRIDE_LOOP(i, n) x[i] = probe_value(i);
}

}  // namespace

void launch_embedding_forward(cudaStream_t stream, float* out, const int32_t* tokens,
                              const float* table, int N, int C) {
  const int64_t total = static_cast<int64_t>(N) * C;
  if (total == 0) return;
  embedding_forward_kernel<<<grid_stride_blocks(total), kElementwiseThreads, 0, stream>>>(
      out, tokens, table, N, C);
  CUDA_CHECK_LAUNCH();
}

namespace {

// scatter_runs_kernel over src(N,width): one block row per entry of order, slices of at
// most 256 threads (whole warps) across the width.
void launch_scatter_runs(cudaStream_t stream, float* dst, const float* src, const int32_t* tokens,
                         const int32_t* order, int N, int width, int64_t token_stride,
                         int64_t column_stride) {
  if (N == 0 || width == 0) return;
  const int threads = std::min(256, (width + 31) / 32 * 32);
  const dim3 blocks(static_cast<unsigned>(N), static_cast<unsigned>((width + threads - 1) / threads));
  scatter_runs_kernel<<<blocks, threads, 0, stream>>>(dst, src, tokens, order, N, width,
                                                      token_stride, column_stride);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_embedding_backward(cudaStream_t stream, float* d_table, const float* d_out,
                               const int32_t* tokens, const int32_t* order, int N, int C) {
  launch_scatter_runs(stream, d_table, d_out, tokens, order, N, C, C, 1);
}

void launch_gather_columns(cudaStream_t stream, float* cols, const float* a, const int32_t* tokens,
                           int N, int r, int V) {
  const int64_t total = static_cast<int64_t>(N) * r;
  if (total == 0) return;
  gather_columns_kernel<<<grid_stride_blocks(total), kElementwiseThreads, 0, stream>>>(
      cols, a, tokens, N, r, V);
  CUDA_CHECK_LAUNCH();
}

void launch_scatter_add_columns(cudaStream_t stream, float* d_a, const float* d_cols,
                                const int32_t* tokens, const int32_t* order, int N, int r, int V) {
  launch_scatter_runs(stream, d_a, d_cols, tokens, order, N, r, 1, V);
}

void launch_rope(cudaStream_t stream, float* x, const float* cos, const float* sin, int B, int T,
                 int H, int D, float direction) {
  const int64_t pairs = static_cast<int64_t>(B) * T * H * (D / 2);
  if (pairs == 0) return;
  rope_kernel<<<grid_stride_blocks(pairs), kElementwiseThreads, 0, stream>>>(x, cos, sin, B, T, H,
                                                                            D, direction);
  CUDA_CHECK_LAUNCH();
}

void launch_swiglu_forward(cudaStream_t stream, float* out, const float* g, const float* u,
                           int64_t n) {
  if (n == 0) return;
  swiglu_forward_kernel<<<grid_stride_blocks(n), kElementwiseThreads, 0, stream>>>(out, g, u, n);
  CUDA_CHECK_LAUNCH();
}

void launch_swiglu_backward(cudaStream_t stream, float* dg, float* du, const float* d_out,
                            const float* g, const float* u, int64_t n) {
  if (n == 0) return;
  swiglu_backward_kernel<<<grid_stride_blocks(n), kElementwiseThreads, 0, stream>>>(dg, du, d_out,
                                                                                    g, u, n);
  CUDA_CHECK_LAUNCH();
}

void launch_scale(cudaStream_t stream, float* x, int64_t n, float s) {
  if (n == 0) return;
  scale_kernel<<<grid_stride_blocks(n), kElementwiseThreads, 0, stream>>>(x, n, s);
  CUDA_CHECK_LAUNCH();
}

void launch_axpy(cudaStream_t stream, float* y, const float* x, int64_t n, float alpha) {
  if (n == 0) return;
  axpy_kernel<<<grid_stride_blocks(n), kElementwiseThreads, 0, stream>>>(y, x, n, alpha);
  CUDA_CHECK_LAUNCH();
}

void launch_to_bf16(cudaStream_t stream, uint16_t* dst, const float* src, int64_t n) {
  if (n == 0) return;
  to_bf16_kernel<<<grid_stride_blocks(n), kElementwiseThreads, 0, stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

void launch_rows_to_bf16(cudaStream_t stream, uint16_t* dst, int64_t dst_ld, const float* src,
                         int64_t rows, int64_t cols, int64_t src_ld, float scale) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  if (dst_ld == cols && src_ld == cols && scale == 1.0f) {
    launch_to_bf16(stream, dst, src, n);
    return;
  }
  // a row's columns over at most 8 blocks; rows over at most 65535 (the y limit), together
  // about as many blocks as grid_stride_blocks gives
  const unsigned column_blocks =
      static_cast<unsigned>(std::min<int64_t>(8, (cols + kElementwiseThreads - 1) / kElementwiseThreads));
  const unsigned row_blocks = static_cast<unsigned>(
      std::min<int64_t>({rows, 65535, std::max<int64_t>(1, grid_stride_blocks(n) / column_blocks)}));
  rows_to_bf16_kernel<<<dim3(column_blocks, row_blocks), kElementwiseThreads, 0, stream>>>(
      dst, dst_ld, src, rows, static_cast<int>(cols), src_ld, scale);
  CUDA_CHECK_LAUNCH();
}

void launch_from_bf16(cudaStream_t stream, float* dst, const uint16_t* src, int64_t n) {
  if (n == 0) return;
  from_bf16_kernel<<<grid_stride_blocks(n), kElementwiseThreads, 0, stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

void launch_sum_squares(cudaStream_t stream, double* result, double* partials, const float* x,
                        int64_t n) {
  // Launched even for n == 0 (the partials are then 0), so *result is always written.
  sum_squares_partial_kernel<<<kSumSquaresBlocks, kElementwiseThreads, 0, stream>>>(partials, x,
                                                                                   n);
  CUDA_CHECK_LAUNCH();
  sum_squares_final_kernel<<<1, kElementwiseThreads, 0, stream>>>(result, partials);
  CUDA_CHECK_LAUNCH();
}

void launch_fill_bf16(cudaStream_t stream, void* x, int64_t n) {
  if (n == 0) return;
  fill_bf16_kernel<<<grid_stride_blocks(n), kElementwiseThreads, 0, stream>>>(
      static_cast<__nv_bfloat16*>(x), n);
  CUDA_CHECK_LAUNCH();
}

void launch_fill_f32(cudaStream_t stream, float* x, int64_t n) {
  if (n == 0) return;
  fill_f32_kernel<<<grid_stride_blocks(n), kElementwiseThreads, 0, stream>>>(x, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace relora::cuda
