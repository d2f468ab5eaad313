// Causal self-attention on the CPU. Threads split the (batch, head) pairs; each pair's
// products are single-threaded OpenBLAS calls (OpenBLAS runs on one thread inside an OpenMP
// region) that read q, k, v in place with row stride C = H*D. The causal structure is used
// block by block: rows [r0, r1) of a (T,T) matrix only need columns [0, r1), which does about
// half the work of full (T,T) products once T spans a few blocks.
#include "backend/cpu/attention.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/vec_math.h"
#include "core/errors.h"

namespace relora::cpu {
namespace {

// Rows per causal block: small enough to skip most of the upper triangle, large enough
// for efficient products.
constexpr int kBlock = 64;

void check_shape(int B, int T, int H, int D) {
  RELORA_CHECK(B > 0 && T > 0 && H > 0 && D > 0,
               "attention shape B=" << B << " T=" << T << " H=" << H << " D=" << D);
}

// Row t of att(T,T) holds scores in [0, t]: softmax them in place, zero the rest of the row.
void causal_softmax_row(float* row, int t, int T) {
  float max_score = row[0];
#pragma omp simd reduction(max : max_score)
  for (int j = 0; j <= t; ++j) max_score = row[j] > max_score ? row[j] : max_score;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j <= t; ++j) {
    const float e = exp_approx(row[j] - max_score);
    row[j] = e;
    sum += e;
  }
  const float inv_sum = 1.0f / sum;
#pragma omp simd
  for (int j = 0; j <= t; ++j) row[j] *= inv_sum;
  std::fill(row + t + 1, row + T, 0.0f);
}

// Row t of the score gradient: ds[j] = p[j] (dp[j] - sum_i p[i] dp[i]) for j <= t (in place
// over dp), 0 for t < j < row_end (so products over the block's columns see zeros).
void softmax_backward_row(float* dp, const float* p, int t, int row_end) {
  float p_dot_dp = 0.0f;
#pragma omp simd reduction(+ : p_dot_dp)
  for (int j = 0; j <= t; ++j) p_dot_dp += p[j] * dp[j];
#pragma omp simd
  for (int j = 0; j <= t; ++j) dp[j] = p[j] * (dp[j] - p_dot_dp);
  std::fill(dp + t + 1, dp + row_end, 0.0f);
}

}  // namespace

void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       int B, int T, int H, int D) {
  check_shape(B, T, H, D);
  const int64_t C = static_cast<int64_t>(H) * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      const int64_t offset = static_cast<int64_t>(b) * T * C + h * D;  // (b, t=0, h, d=0)
      const float* q_bh = q + offset;
      const float* k_bh = k + offset;
      const float* v_bh = v + offset;
      float* out_bh = out + offset;
      float* att_bh = att + (static_cast<int64_t>(b) * H + h) * T * T;
      for (int r0 = 0; r0 < T; r0 += kBlock) {
        const int r1 = std::min(r0 + kBlock, T);
        float* att_rows = att_bh + static_cast<int64_t>(r0) * T;
        // att[r0:r1, 0:r1] = scale * q[r0:r1] k[0:r1]^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, r1, D, scale, q_bh + r0 * C,
                    C, k_bh, C, 0.0f, att_rows, T);
        for (int t = r0; t < r1; ++t)
          causal_softmax_row(att_bh + static_cast<int64_t>(t) * T, t, T);
        // out[r0:r1] = att[r0:r1, 0:r1] v[0:r1]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, D, r1, 1.0f, att_rows, T,
                    v_bh, C, 0.0f, out_bh + r0 * C, C);
      }
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* d_out, const float* att,
                        const float* q, const float* k, const float* v, float* scratch, int B,
                        int T, int H, int D) {
  check_shape(B, T, H, D);
  const int64_t C = static_cast<int64_t>(H) * D;
  const int64_t TT = static_cast<int64_t>(T) * T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      const int64_t offset = static_cast<int64_t>(b) * T * C + h * D;
      const float* q_bh = q + offset;
      const float* k_bh = k + offset;
      const float* v_bh = v + offset;
      const float* d_out_bh = d_out + offset;
      float* dq_bh = dq + offset;
      float* dk_bh = dk + offset;
      float* dv_bh = dv + offset;
      const float* p = att + (static_cast<int64_t>(b) * H + h) * TT;  // (T,T)
      float* ds = scratch + omp_get_thread_num() * TT;                // (T,T) score gradient
      for (int r0 = 0; r0 < T; r0 += kBlock) {
        const int r1 = std::min(r0 + kBlock, T);
        float* ds_rows = ds + static_cast<int64_t>(r0) * T;
        // dp[r0:r1, 0:r1] = d_out[r0:r1] v[0:r1]^T, then ds from dp and p row by row
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, r1, D, 1.0f,
                    d_out_bh + r0 * C, C, v_bh, C, 0.0f, ds_rows, T);
        for (int t = r0; t < r1; ++t) {
          softmax_backward_row(ds + static_cast<int64_t>(t) * T, p + static_cast<int64_t>(t) * T, t,
                               r1);
        }
        // dq[r0:r1] = scale * ds[r0:r1, 0:r1] k[0:r1]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, D, r1, scale, ds_rows, T,
                    k_bh, C, 0.0f, dq_bh + r0 * C, C);
      }
      // Column block [j0, j1) of p and ds is non-zero only in rows [j0, T).
      for (int j0 = 0; j0 < T; j0 += kBlock) {
        const int j1 = std::min(j0 + kBlock, T);
        const int64_t corner = static_cast<int64_t>(j0) * T + j0;  // (j0, j0)
        // dv[j0:j1] = p[j0:T, j0:j1]^T d_out[j0:T]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j1 - j0, D, T - j0, 1.0f, p + corner,
                    T, d_out_bh + j0 * C, C, 0.0f, dv_bh + j0 * C, C);
        // dk[j0:j1] = scale * ds[j0:T, j0:j1]^T q[j0:T]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j1 - j0, D, T - j0, scale, ds + corner,
                    T, q_bh + j0 * C, C, 0.0f, dk_bh + j0 * C, C);
      }
    }
  }
}

int64_t attention_scratch_floats(int T) {
  return static_cast<int64_t>(omp_get_max_threads()) * T * T;
}

}  // namespace relora::cpu
