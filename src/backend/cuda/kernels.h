// The CUDA backend's internal interface between its .cu files: host-side launchers of the
// kernels and products, and the process's DeviceMemory (the .cu files by topic define them). All pointers are device pointers, row-major fp32 unless said otherwise; every
// launcher queues its work on `stream`, launches nothing for empty inputs and checks the
// launch (InternalError on failure). CudaOps (cuda_ops.cu) validates shapes before calling.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "backend/ops.h"
#include "core/tensor.h"

namespace relora::cuda {

// ---- memory.cu ----------------------------------------------------------------------------
// The process's DeviceMemory for `device`, created on the first call and never destroyed
// (tensors may be freed after every Ops object, even during exit). Its copies and zeroing
// run on compute_stream().
DeviceMemory* process_device_memory(int device);

// Threads per block of the elementwise (grid-stride) kernels, and their grid: one thread per
// element up to 65536 blocks, then each thread loops.
constexpr int kElementwiseThreads = 256;
inline unsigned grid_stride_blocks(int64_t n) {
  const int64_t blocks = (n + kElementwiseThreads - 1) / kElementwiseThreads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}
// Device code: for (i over [0, n)) spread over the whole grid, int64 indices.
#define GRID_STRIDE_LOOP(i, n)                                                                 \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// ---- gemm.cu: cuBLAS products, row-major ------------------------------------------------
// Precision of a product's multiplications: fp32 operands rounded to bf16 inside cuBLAS
// (train.matmul: bf16) or to TF32 (train.matmul: tf32), both on tensor cores with fp32
// accumulation; pure fp32 (ReLoRA merges, train.matmul: fp32); or operands stored as bf16
// words (a frozen weight kept in bf16, and the copies of train.matmul: bf16_copy, the
// default, whose CudaOps::gemm rounds both fp32 operands of a weight product into bf16
// first; fp32 accumulation). C is fp32 in every case. bf16_copy is Ops-level only:
// gemm_rowmajor takes its copies as bf16_words, and its products without copies (the
// adapters', attention's cuBLAS path on fp32 scratch) run as bf16.
enum class GemmPrecision { bf16, tf32, fp32, bf16_words, bf16_copy };
// For b in [0, batch): C_b(M,N) = alpha op(A_b) op(B_b) + beta C_b with X_b = X + b*stride_x,
// lda/ldb/ldc the row strides as stored, strides in elements. A and B are float, or bf16
// words for bf16_words. Sizes must be validated by the caller; M, N, K > 0.
void gemm_rowmajor(cublasHandle_t handle, GemmPrecision precision, bool trans_a, bool trans_b,
                   int M, int N, int K, float alpha, const void* A, int lda, int64_t stride_a,
                   const void* B, int ldb, int64_t stride_b, float beta, float* C, int ldc,
                   int64_t stride_c, int batch);
// C(M,N) with row stride ldc: C = beta * C (exact zeros when beta == 0): a product with K == 0.
void launch_scale_matrix(cudaStream_t stream, float* C, int M, int N, int ldc, float beta);

// ---- kernels_elementwise.cu ---------------------------------------------------------------
void launch_embedding_forward(cudaStream_t stream, float* out, const int32_t* tokens,
                              const float* table, int N, int C);
// Blocks (N, ceil(C / 256)) over the runs of order (Ops::embedding_backward); order is
// trusted (the CPU backend checks it); C <= 65535 * 256.
void launch_embedding_backward(cudaStream_t stream, float* d_table, const float* d_out,
                               const int32_t* tokens, const int32_t* order, int N, int C);
void launch_gather_columns(cudaStream_t stream, float* cols, const float* a, const int32_t* tokens,
                           int N, int r, int V);
void launch_scatter_add_columns(cudaStream_t stream, float* d_a, const float* d_cols,
                                const int32_t* tokens, const int32_t* order, int N, int r, int V);
// direction +1: forward rotation, -1: inverse rotation
void launch_rope(cudaStream_t stream, float* x, const float* cos, const float* sin, int B, int T,
                 int H, int D, float direction);
void launch_swiglu_forward(cudaStream_t stream, float* out, const float* g, const float* u,
                           int64_t n);
void launch_swiglu_backward(cudaStream_t stream, float* dg, float* du, const float* d_out,
                            const float* g, const float* u, int64_t n);
void launch_scale(cudaStream_t stream, float* x, int64_t n, float s);
void launch_axpy(cudaStream_t stream, float* y, const float* x, int64_t n, float alpha);
// Ops::to_bf16 (__float2bfloat16_rn) and Ops::from_bf16; dst and src do not overlap.
void launch_to_bf16(cudaStream_t stream, uint16_t* dst, const float* src, int64_t n);
void launch_from_bf16(cudaStream_t stream, float* dst, const uint16_t* src, int64_t n);
// dst(rows,cols) with row stride dst_ld >= cols = scale * src(rows,cols) with row stride
// src_ld >= cols, rounded as to_bf16; dst's padding is not written.
void launch_rows_to_bf16(cudaStream_t stream, uint16_t* dst, int64_t dst_ld, const float* src,
                         int64_t rows, int64_t cols, int64_t src_ld, float scale);
// *result = sum x[i]^2 in double; partials holds kSumSquaresBlocks doubles of scratch.
constexpr int kSumSquaresBlocks = 256;
void launch_sum_squares(cudaStream_t stream, double* result, double* partials, const float* x,
                        int64_t n);
// x[i] = small deterministic values, bf16 (as raw 16-bit words) or fp32: operands of the
// peak and training-product probes.
void launch_fill_bf16(cudaStream_t stream, void* x, int64_t n);
void launch_fill_f32(cudaStream_t stream, float* x, int64_t n);

// ---- kernels_optim.cu ------------------------------------------------------------------------
// Ops::adamw for every tensor of the list, steps >= 1 (checked by the caller).
void launch_adamw(cudaStream_t stream, const std::vector<AdamwTensor>& tensors,
                  const AdamwHyper& hyper);
// Ops::prune_smallest, 0 <= k <= n. histogram: 256 counters of device scratch. Waits for
// the stream (the selection reads four histograms back).
void launch_prune_smallest(cudaStream_t stream, float* m, float* v, int64_t n, int64_t k,
                           unsigned long long* histogram);

// ---- kernels_norm.cu: row kernels ---------------------------------------------------------
void launch_rmsnorm_forward(cudaStream_t stream, float* out, float* rstd, const float* x,
                            const float* w, int N, int C, float eps);
// dw (if not null) first, then dx, so dx may alias d_out.
void launch_rmsnorm_backward(cudaStream_t stream, float* dx, float* dw, const float* d_out,
                             const float* x, const float* w, const float* rstd, int N, int C);
// losses(N) written, d_logits(N,V) too when not null (may alias logits).
void launch_cross_entropy(cudaStream_t stream, float* d_logits, float* losses,
                          const float* logits, const int32_t* targets, int N, int V,
                          float d_loss_scale);

// ---- flash_attention.cu: fused causal attention on tensor cores ------------------------------
// Shared memory per block the kernels need at head size D (the larger of forward and
// backward: 61440 and 82432 bytes at D = 48, 156160 at D = 128), bytes; 0 for a head size
// without kernels (they exist for multiples of 16 from 32 to 128).
int flash_attention_smem_bytes(int D);
// Whether the fused kernels take head size D on a device whose blocks may opt into
// smem_per_block bytes of shared memory (cudaDeviceProp::sharedMemPerBlockOptin: 227 KiB
// on H100/H200, 163 KiB on A100, 99 KiB on sm_86/sm_89 parts such as RTX 30/40 and L4,
// which take D <= 64); the bf16 training precision only.
bool flash_attention_supported(int D, int smem_per_block);
// out(B,T,H,D) and lse(B,H,T) written.
void flash_attention_forward(cudaStream_t stream, float* out, float* lse, const float* q,
                             const float* k, const float* v, int B, int T, int H, int D);
// dq, dk, dv written; out and lse from the forward; delta: B*H*T floats of scratch.
void flash_attention_backward(cudaStream_t stream, float* dq, float* dk, float* dv,
                              const float* d_out, const float* out, const float* lse,
                              const float* q, const float* k, const float* v, float* delta, int B,
                              int T, int H, int D);

// ---- attention.cu -------------------------------------------------------------------------
// lse(B,H,T) saved; scratch holds 2*G*T*T floats, G = attention_heads_per_pass(T, H).
int attention_heads_per_pass(int T, int H);
void attention_forward(cublasHandle_t handle, cudaStream_t stream, GemmPrecision precision,
                       float* out, float* lse,
                       const float* q, const float* k, const float* v, float* scratch, int B,
                       int T, int H, int D);
void attention_backward(cublasHandle_t handle, cudaStream_t stream, GemmPrecision precision,
                        float* dq, float* dk,
                        float* dv, const float* d_out, const float* lse, const float* q,
                        const float* k, const float* v, float* scratch, int B, int T, int H,
                        int D);

}  // namespace relora::cuda
