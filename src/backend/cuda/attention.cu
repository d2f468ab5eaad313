// Causal self-attention from cuBLAS strided-batched products and two row kernels.
//
// Layout: q, k, v, out (B,T,H,D) with rows of C = H*D floats. For batch index b and head h,
// Q_h = the (T,D) row-major matrix starting at q + b*T*C + h*D with row stride C; the next
// head starts D floats later. So one strided-batched product per (b, pass) covers the G
// heads of a pass: lda = C, stride between batch entries = D. A pass takes as many heads as
// keep its (T,T) matrices within kScratchBytes (all H for usual lengths; fewer for long
// sequences, at least one), in scratch as S(G,T,T) (row stride T, head stride T*T);
// backward's dP(G,T,T) follows S.
//
// Forward, per b and pass (scale = 1/sqrt(D)):
//   S_h = scale * Q_h K_h^T                          (M=T, N=T, K=D; B operand transposed)
//   P_h = causal softmax of S_h's rows, in place;    lse[b,h,t] = max + log(sum exp(s - max))
//   out_h = P_h V_h                                  (M=T, N=D, K=T)
// Backward, per b and pass, recomputing the probabilities from the saved lse:
//   S_h = scale * Q_h K_h^T;   P_h = exp(S_h - lse) for j <= t, 0 above the diagonal
//   dV_h = P_h^T dO_h                                (M=T, N=D, K=T; A operand transposed)
//   dP_h = dO_h V_h^T                                (M=T, N=T, K=D; B operand transposed)
//   dS_h = P_h .* (dP_h - rowsum(P_h .* dP_h)), in place over dP
//   dQ_h = scale * dS_h K_h                          (M=T, N=D, K=T)
//   dK_h = scale * dS_h^T Q_h                        (M=T, N=D, K=T; A operand transposed)
// Products run in the backend's training precision (bf16 or TF32 inputs with fp32
// accumulation, or fp32 with train.matmul: fp32), softmax in fp32. The
// full (T,T) products are computed (the upper triangle is wasted work, masked by the kernels).
#include <algorithm>
#include <cmath>

#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/reduce.cuh"

namespace relora::cuda {
namespace {

constexpr int kSoftmaxThreads = 256;
constexpr int64_t kScratchBytes = int64_t{1} << 30;  // S and dP of one pass together

// S(rows, T), row = h*T + t: the causal softmax of s[0..t] in place (0 for j > t) and
// lse[row] = max + log(sum_j<=t exp(s_j - max)). The reductions' reads finish before the
// second block_reduce returns; the final loop reads and writes each element in one thread.
__global__ void causal_softmax_kernel(float* S, float* lse, int T) {
  const int64_t row = blockIdx.x;
  const int t = static_cast<int>(row % T);
  float* s = S + row * T;
  float max_score = -INFINITY;
  for (int j = threadIdx.x; j <= t; j += blockDim.x) max_score = fmaxf(max_score, s[j]);
  max_score = block_reduce(max_score, MaxOp{}, -INFINITY);
  float sum = 0.0f;
  for (int j = threadIdx.x; j <= t; j += blockDim.x) sum += expf(s[j] - max_score);
  sum = block_reduce(sum, SumOp{}, 0.0f);
  const float inv_sum = 1.0f / sum;
  for (int j = threadIdx.x; j < T; j += blockDim.x) {
    s[j] = j <= t ? expf(s[j] - max_score) * inv_sum : 0.0f;
  }
  if (threadIdx.x == 0) lse[row] = max_score + logf(sum);
}

// S(rows, T) scores -> probabilities exp(s - lse[row]) for j <= t = row % T, 0 for j > t.
__global__ void recompute_probabilities_kernel(float* S, const float* lse, int64_t rows, int T) {
  const int64_t total = rows * T;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / T;
    const int j = static_cast<int>(i % T);
    const int t = static_cast<int>(row % T);
    S[i] = j <= t ? expf(S[i] - lse[row]) : 0.0f;
  }
}

// dP(rows, T) -> dS in place: ds_j = p_j (dp_j - sum_{i<=t} p_i dp_i) for j <= t, 0 above.
__global__ void softmax_backward_kernel(float* dP, const float* P, int T) {
  const int64_t row = blockIdx.x;
  const int t = static_cast<int>(row % T);
  float* dp = dP + row * T;
  const float* p = P + row * T;
  float dot = 0.0f;
  for (int j = threadIdx.x; j <= t; j += blockDim.x) dot += p[j] * dp[j];
  dot = block_reduce(dot, SumOp{}, 0.0f);
  for (int j = threadIdx.x; j < T; j += blockDim.x) dp[j] = j <= t ? p[j] * (dp[j] - dot) : 0.0f;
}

// Per-head products for batch index b: Out_h = op(X_h) op(Y_h) over the H heads, where
// X/Y are either (T,T) scratch matrices (ld T, head stride T*T) or (T,D) head slices of a
// (B,T,H,D) tensor (ld C, head stride D).
struct HeadMatrix {
  const float* p;
  int ld;
  int64_t stride;
};

void per_head_gemm(cublasHandle_t handle, GemmPrecision precision, bool trans_a, bool trans_b,
                   int M, int N, int K, float alpha, HeadMatrix A, HeadMatrix B, float* out,
                   int ldc, int64_t stride_c, int H) {
  gemm_rowmajor(handle, precision, trans_a, trans_b, M, N, K, alpha, A.p, A.ld,
                A.stride, B.p, B.ld, B.stride, 0.0f, out, ldc, stride_c, H);
}

}  // namespace

int attention_heads_per_pass(int T, int H) {
  const int64_t per_head = 2 * static_cast<int64_t>(T) * T * static_cast<int64_t>(sizeof(float));
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(H, kScratchBytes / per_head)));
}

void attention_forward(cublasHandle_t handle, cudaStream_t stream, GemmPrecision precision,
                       float* out, float* lse,
                       const float* q, const float* k, const float* v, float* scratch, int B,
                       int T, int H, int D) {
  const int C = H * D;
  const int64_t TT = static_cast<int64_t>(T) * T;
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  const int G = attention_heads_per_pass(T, H);
  float* S = scratch;  // (G,T,T)
  for (int b = 0; b < B; ++b) {
    for (int h0 = 0; h0 < H; h0 += G) {
      const int heads = std::min(G, H - h0);
      const int64_t offset = static_cast<int64_t>(b) * T * C + static_cast<int64_t>(h0) * D;  // (b, 0, h0, 0)
      const HeadMatrix Q{q + offset, C, D}, K{k + offset, C, D}, V{v + offset, C, D};
      // S_h(T,T) = scale * Q_h(T,D) K_h(T,D)^T
      per_head_gemm(handle, precision, false, true, T, T, D, scale, Q, K, S, T, TT, heads);
      // P_h = softmax rows of S_h; lse(b, h, t)
      causal_softmax_kernel<<<heads * T, kSoftmaxThreads, 0, stream>>>(
          S, lse + (static_cast<int64_t>(b) * H + h0) * T, T);
      CUDA_CHECK_LAUNCH();
      // out_h(T,D) = P_h(T,T) V_h(T,D)
      per_head_gemm(handle, precision, false, false, T, D, T, 1.0f, HeadMatrix{S, T, TT}, V, out + offset, C,
                    D, heads);
    }
  }
}

void attention_backward(cublasHandle_t handle, cudaStream_t stream, GemmPrecision precision,
                        float* dq, float* dk,
                        float* dv, const float* d_out, const float* lse, const float* q,
                        const float* k, const float* v, float* scratch, int B, int T, int H,
                        int D) {
  const int C = H * D;
  const int64_t TT = static_cast<int64_t>(T) * T;
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  const int G = attention_heads_per_pass(T, H);
  float* S = scratch;            // (G,T,T): scores, then probabilities P
  float* dP = scratch + G * TT;  // (G,T,T): dP, then dS
  for (int b = 0; b < B; ++b) {
    for (int h0 = 0; h0 < H; h0 += G) {
      const int heads = std::min(G, H - h0);
      const int64_t offset = static_cast<int64_t>(b) * T * C + static_cast<int64_t>(h0) * D;
      const HeadMatrix Q{q + offset, C, D}, K{k + offset, C, D}, V{v + offset, C, D};
      const HeadMatrix dO{d_out + offset, C, D};
      const HeadMatrix P{S, T, TT}, dS{dP, T, TT};
      // S_h = scale * Q_h K_h^T, then P_h = exp(S_h - lse) (causal)
      per_head_gemm(handle, precision, false, true, T, T, D, scale, Q, K, S, T, TT, heads);
      const int64_t rows = static_cast<int64_t>(heads) * T;
      recompute_probabilities_kernel<<<grid_stride_blocks(rows * T), kElementwiseThreads, 0,
                                       stream>>>(S, lse + (static_cast<int64_t>(b) * H + h0) * T, rows, T);
      CUDA_CHECK_LAUNCH();
      // dV_h(T,D) = P_h(T,T)^T dO_h(T,D)
      per_head_gemm(handle, precision, true, false, T, D, T, 1.0f, P, dO, dv + offset, C, D, heads);
      // dP_h(T,T) = dO_h(T,D) V_h(T,D)^T
      per_head_gemm(handle, precision, false, true, T, T, D, 1.0f, dO, V, dP, T, TT, heads);
      // dS_h = P_h .* (dP_h - rowsum(P_h .* dP_h)), in place
      softmax_backward_kernel<<<heads * T, kSoftmaxThreads, 0, stream>>>(dP, S, T);
      CUDA_CHECK_LAUNCH();
      // dQ_h(T,D) = scale * dS_h(T,T) K_h(T,D)
      per_head_gemm(handle, precision, false, false, T, D, T, scale, dS, K, dq + offset, C, D, heads);
      // dK_h(T,D) = scale * dS_h(T,T)^T Q_h(T,D)
      per_head_gemm(handle, precision, true, false, T, D, T, scale, dS, Q, dk + offset, C, D, heads);
    }
  }
}

}  // namespace relora::cuda
