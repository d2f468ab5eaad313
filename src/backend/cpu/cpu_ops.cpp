// The CPU backend, fp32: OpenBLAS for matrix products, OpenMP across rows (or, where rows
// would race on a shared gradient, across column ranges), inner loops over contiguous
// channels that the compiler vectorises. Attention lives in attention.cpp.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "backend/cpu/attention.h"
#include "core/bf16.h"
#include "backend/cpu/vec_math.h"
#include "backend/ops.h"
#include "core/errors.h"
#include "core/rng.h"

namespace relora {
namespace {

using cpu::exp_approx;

// Elementwise work below this many elements stays on one thread: starting a parallel
// region costs microseconds.
constexpr int64_t kParallelMin = 1 << 15;

// Columns [begin, end) of C that thread `id` of `threads` owns when threads split the
// channels of a shared (.., C) gradient: 16-float (cache line) multiples, so no two threads
// write the same line of a row whose start is line-aligned.
struct ColumnRange {
  int64_t begin, end;
};
ColumnRange column_range(int64_t C, int id, int threads) {
  constexpr int64_t kLine = 16;
  const int64_t lines = (C + kLine - 1) / kLine;
  const int64_t per_thread = (lines + threads - 1) / threads * kLine;
  const int64_t begin = std::min(C, id * per_thread);
  return {begin, std::min(C, begin + per_thread)};
}

// "cpu (AMD EPYC)": the first model name in /proc/cpuinfo, or just "cpu". Quotes,
// backslashes and control characters are dropped, so the name can go into JSON as it is.
std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    std::string name;
    for (char c : line.substr(colon + 1))
      if (static_cast<unsigned char>(c) >= 0x20 && c != '"' && c != '\\') name += c;
    const size_t start = name.find_first_not_of(' ');
    return start == std::string::npos ? "cpu" : "cpu (" + name.substr(start) + ")";
  }
  return "cpu";
}

class CpuOps final : public Ops {
 public:
  Device device() const override { return Device::cpu; }
  std::string device_name() const override { return cpu_model_name(); }
  void synchronize() override {}  // every call has finished when it returns

  double measure_peak_flops() override { return sgemm_flops(); }
  // The training products are that same sgemm.
  double measure_training_product_flops() override { return sgemm_flops(); }

  // fp32 whatever train.matmul says: no copies.
  void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override {
    fp32_product(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  bool products_on_words() const override { return false; }

  // Products are fp32 already.
  void gemm_exact(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                  int lda, const float* B, int ldb, float beta, float* C, int ldc) override {
    fp32_product(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }

  // The CUDA product's reference: A rounded to bf16 (into a_words, as there), both operands
  // widened to fp32, then sgemm. Allocates its fp32 copies: only the tests call it.
  void gemm_bf16(bool trans_w, int M, int N, int K, float alpha, const float* A,
                 const uint16_t* W, int ldw, float beta, float* C, int ldc,
                 uint16_t* a_words) override {
    RELORA_CHECK(M >= 0 && N >= 0 && K >= 0 && ldw >= std::max(1, trans_w ? K : N),
                 "gemm_bf16 sizes M=" << M << " N=" << N << " K=" << K << " ldw=" << ldw);
    const int64_t a_count = static_cast<int64_t>(M) * K;
    const int64_t w_count = static_cast<int64_t>(trans_w ? N : K) * ldw;
    to_bf16(a_words, A, a_count);
    std::vector<float> a(static_cast<size_t>(a_count)), w(static_cast<size_t>(w_count));
    from_bf16(a.data(), a_words, a_count);
    from_bf16(w.data(), W, w_count);
    fp32_product(false, trans_w, M, N, K, alpha, a.data(), std::max(1, K), w.data(), ldw, beta, C,
                 ldc);
  }

  void round_rows(uint16_t* dst, int64_t dst_ld, const float* src, int64_t src_ld, int rows, int cols,
                  float scale) override {
    RELORA_CHECK(rows >= 0 && cols >= 0 && dst_ld >= cols && src_ld >= cols,
                 "round_rows sizes rows=" << rows << " cols=" << cols << " dst_ld=" << dst_ld
                                          << " src_ld=" << src_ld);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) dst[i * dst_ld + j] = float_to_bf16(scale * src[i * src_ld + j]);
  }

  // The CUDA product's reference: both operands widened to fp32, then sgemm. Allocates its
  // fp32 copies: only the tests call it (the CPU's products make no copies).
  void gemm_on_words(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const uint16_t* A,
                     int lda, const uint16_t* B, int ldb, float beta, float* C, int ldc) override {
    RELORA_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm_on_words sizes M=" << M << " N=" << N << " K=" << K);
    // each operand's words up to its last element: (rows - 1) * ld + cols
    auto extent = [](int64_t rows, int64_t cols, int64_t ld) { return rows > 0 && cols > 0 ? (rows - 1) * ld + cols : 0; };
    const int64_t a_count = extent(trans_a ? K : M, trans_a ? M : K, lda);
    const int64_t b_count = extent(trans_b ? N : K, trans_b ? K : N, ldb);
    std::vector<float> a(static_cast<size_t>(a_count)), b(static_cast<size_t>(b_count));
    from_bf16(a.data(), A, a_count);
    from_bf16(b.data(), B, b_count);
    fp32_product(trans_a, trans_b, M, N, K, alpha, a.data(), lda, b.data(), ldb, beta, C, ldc);
  }

  // out(N,C) = table(V,C)[tokens(N)]
  void embedding_forward(float* out, const int32_t* tokens, const float* table, int N,
                         int C) override {
    check_tokens(tokens, N);
    const bool parallel = static_cast<int64_t>(N) * C >= kParallelMin;
#pragma omp parallel for schedule(static) if (parallel)
    for (int n = 0; n < N; ++n) {
      std::memcpy(out + static_cast<int64_t>(n) * C, table + static_cast<int64_t>(tokens[n]) * C,
                  sizeof(float) * C);
    }
  }

  // d_table(V,C)[tokens[n]] += d_out(N,C)[n], repeated tokens' rows in position order.
  // One run of `order` (a token's positions) per iteration: its rows go into the token's
  // row in position order; runs touch different rows, so they spread over threads freely.
  void embedding_backward(float* d_table, const float* d_out, const int32_t* tokens,
                          const int32_t* order, int N, int C) override {
    check_order(tokens, order, N);
#pragma omp parallel for schedule(dynamic, 64) if (static_cast<int64_t>(N) * C >= kParallelMin)
    for (int i = 0; i < N; ++i) {
      const int32_t token = tokens[order[i]];
      if (i > 0 && tokens[order[i - 1]] == token) continue;  // not the start of a run
      float* dst = d_table + static_cast<int64_t>(token) * C;
      for (int k = i; k < N && tokens[order[k]] == token; ++k) {
        const float* src = d_out + static_cast<int64_t>(order[k]) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
      }
    }
  }

  // cols(N,r)[n, j] = a(r,V)[j, tokens[n]]
  void gather_columns(float* cols, const float* a, const int32_t* tokens, int N, int r,
                      int V) override {
    check_tokens(tokens, N);
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * r >= kParallelMin)
    for (int n = 0; n < N; ++n)
      for (int j = 0; j < r; ++j)
        cols[static_cast<int64_t>(n) * r + j] = a[static_cast<int64_t>(j) * V + tokens[n]];
  }

  // d_a(r,V)[j, tokens[n]] += d_cols(N,r)[n, j]: as embedding_backward, one run of `order`
  // per iteration; a run writes its token's column of d_a, which no other run touches.
  void scatter_add_columns(float* d_a, const float* d_cols, const int32_t* tokens,
                           const int32_t* order, int N, int r, int V) override {
    check_order(tokens, order, N);
#pragma omp parallel for schedule(dynamic, 64) if (static_cast<int64_t>(N) * r >= kParallelMin)
    for (int i = 0; i < N; ++i) {
      const int32_t token = tokens[order[i]];
      if (i > 0 && tokens[order[i - 1]] == token) continue;  // not the start of a run
      for (int k = i; k < N && tokens[order[k]] == token; ++k) {
        const float* src = d_cols + static_cast<int64_t>(order[k]) * r;
        for (int j = 0; j < r; ++j) d_a[static_cast<int64_t>(j) * V + token] += src[j];
      }
    }
  }

  // x(N,C), w(C) -> out(N,C), rstd(N)
  void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C,
                       float eps) override {
    RELORA_CHECK(N >= 0 && C > 0, "rmsnorm N=" << N << " C=" << C);
    const bool parallel = static_cast<int64_t>(N) * C >= kParallelMin;
#pragma omp parallel for schedule(static) if (parallel)
    for (int n = 0; n < N; ++n) {
      const float* x_row = x + static_cast<int64_t>(n) * C;
      float* out_row = out + static_cast<int64_t>(n) * C;
      float sum_sq = 0.0f;
#pragma omp simd reduction(+ : sum_sq)
      for (int c = 0; c < C; ++c) sum_sq += x_row[c] * x_row[c];
      const float r = 1.0f / std::sqrt(sum_sq / static_cast<float>(C) + eps);
      rstd[n] = r;
#pragma omp simd
      for (int c = 0; c < C; ++c) out_row[c] = x_row[c] * r * w[c];
    }
  }

  // With r = rstd[n] and dot = sum_c d_out[c] w[c] x[c]:
  //   dx[c] = r * (d_out[c] w[c] - x[c] r^2 dot / C),   dw[c] += sum_n d_out[c] x[c] r.
  // dw first (threads split channels), then dx (threads split rows), so dx may alias d_out.
  void rmsnorm_backward(float* dx, float* dw, const float* d_out, const float* x, const float* w,
                        const float* rstd, int N, int C) override {
    RELORA_CHECK(N >= 0 && C > 0, "rmsnorm N=" << N << " C=" << C);
    const bool parallel = static_cast<int64_t>(N) * C >= kParallelMin;
    if (dw != nullptr) {
#pragma omp parallel if (parallel)
      {
        const ColumnRange cols = column_range(C, omp_get_thread_num(), omp_get_num_threads());
        for (int n = 0; n < N; ++n) {
          const float* d_out_row = d_out + static_cast<int64_t>(n) * C;
          const float* x_row = x + static_cast<int64_t>(n) * C;
          const float r = rstd[n];
#pragma omp simd
          for (int64_t c = cols.begin; c < cols.end; ++c) dw[c] += d_out_row[c] * x_row[c] * r;
        }
      }
    }
#pragma omp parallel for schedule(static) if (parallel)
    for (int n = 0; n < N; ++n) {
      const float* d_out_row = d_out + static_cast<int64_t>(n) * C;
      const float* x_row = x + static_cast<int64_t>(n) * C;
      float* dx_row = dx + static_cast<int64_t>(n) * C;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < C; ++c) dot += d_out_row[c] * w[c] * x_row[c];
      const float r = rstd[n];
      const float x_coeff = r * r * dot / static_cast<float>(C);
#pragma omp simd
      for (int c = 0; c < C; ++c) dx_row[c] = r * (d_out_row[c] * w[c] - x_row[c] * x_coeff);
    }
  }

  // x(B,T,H,D) in place: (a, b) -> (a cos - b sin, b cos + a sin)
  void rope_forward(float* x, const float* cos, const float* sin, int B, int T, int H,
                    int D) override {
    rotate(x, cos, sin, B, T, H, D, 1.0f);
  }

  // dx(B,T,H,D) in place: (a, b) -> (a cos + b sin, b cos - a sin)
  void rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int H,
                     int D) override {
    rotate(dx, cos, sin, B, T, H, D, -1.0f);
  }

  // saved = the probabilities att(B,H,T,T); forward writes them in place, without scratch.
  void attention_forward(float* out, float* saved, const float* q, const float* k, const float* v,
                         float* /*scratch*/, int B, int T, int H, int D) override {
    cpu::attention_forward(out, saved, q, k, v, B, T, H, D);
  }

  void attention_backward(float* dq, float* dk, float* dv, const float* d_out,
                          const float* /*out: the probabilities are saved*/, const float* saved,
                          const float* q, const float* k, const float* v, float* scratch, int B,
                          int T, int H, int D) override {
    cpu::attention_backward(dq, dk, dv, d_out, saved, q, k, v, scratch, B, T, H, D);
  }

  int64_t attention_saved_floats(int B, int T, int H) const override {
    return static_cast<int64_t>(B) * H * T * T;
  }

  int64_t attention_scratch_floats(int /*B*/, int T, int /*H*/, int /*D*/) const override {
    return cpu::attention_scratch_floats(T);
  }

  // out = g sigmoid(g) u
  void swiglu_forward(float* out, const float* g, const float* u, int64_t n) override {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const float sig = 1.0f / (1.0f + exp_approx(-g[i]));
      out[i] = g[i] * sig * u[i];
    }
  }

  // d silu(g)/dg = sig (1 + g (1 - sig))
  void swiglu_backward(float* dg, float* du, const float* d_out, const float* g, const float* u,
                       int64_t n) override {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i], ui = u[i], d = d_out[i];
      const float sig = 1.0f / (1.0f + exp_approx(-gi));
      dg[i] = d * ui * sig * (1.0f + gi * (1.0f - sig));
      du[i] = d * gi * sig;
    }
  }

  // Per row: loss = log(sum_j exp(l_j - max)) + max - l_target. d_logits first holds
  // exp(l_j - max) and is then scaled, so it may alias logits (the target logit is read
  // before the row is overwritten).
  double cross_entropy(float* d_logits, float* losses, const float* logits, const int32_t* targets,
                       int N, int V, float d_loss_scale) override {
    RELORA_CHECK(N >= 0 && V > 0, "cross_entropy N=" << N << " V=" << V);
    for (int n = 0; n < N; ++n) {
      RELORA_CHECK(targets[n] >= 0 && targets[n] < V, "cross_entropy target "
                                                          << targets[n] << " at row " << n
                                                          << " outside [0, " << V << ")");
    }
    const bool parallel = static_cast<int64_t>(N) * V >= kParallelMin;
#pragma omp parallel for schedule(static) if (parallel)
    for (int n = 0; n < N; ++n) {
      const float* row = logits + static_cast<int64_t>(n) * V;
      const float target_logit = row[targets[n]];
      float max_logit = row[0];
#pragma omp simd reduction(max : max_logit)
      for (int j = 0; j < V; ++j) max_logit = row[j] > max_logit ? row[j] : max_logit;
      double sum_exp = 0.0;
      if (d_logits != nullptr) {
        float* d_row = d_logits + static_cast<int64_t>(n) * V;
#pragma omp simd reduction(+ : sum_exp)
        for (int j = 0; j < V; ++j) {
          const float e = exp_approx(row[j] - max_logit);
          d_row[j] = e;
          sum_exp += e;
        }
        const float factor = static_cast<float>(d_loss_scale / sum_exp);
#pragma omp simd
        for (int j = 0; j < V; ++j) d_row[j] *= factor;
        d_row[targets[n]] -= d_loss_scale;
      } else {
#pragma omp simd reduction(+ : sum_exp)
        for (int j = 0; j < V; ++j) sum_exp += exp_approx(row[j] - max_logit);
      }
      const double loss =
          std::log(sum_exp) + static_cast<double>(max_logit) - static_cast<double>(target_logit);
      losses[n] = static_cast<float>(loss);
    }
    // Summed in row order, not by an OpenMP reduction: the result must not depend on
    // which thread finished first (bit-identical runs).
    double total = 0.0;
    for (int n = 0; n < N; ++n) total += losses[n];
    return total;
  }

  void adamw(const std::vector<AdamwTensor>& tensors, const AdamwHyper& h) override {
    for (const AdamwTensor& t : tensors)  // all checked before any is updated
      RELORA_CHECK(t.step >= 1 && t.n >= 0,
                   "adamw step " << t.step << " n=" << t.n << " (steps count from 1)");
    for (const AdamwTensor& t : tensors) {
      const float m_correction = adamw_bias_correction(h.beta1, t.step);
      const float v_correction = adamw_bias_correction(h.beta2, t.step);
      float* param = t.param;
      float* m = t.m;
      float* v = t.v;
      const float* grad = t.grad;
#pragma omp parallel for simd schedule(static) if (t.n >= kParallelMin)
      for (int64_t i = 0; i < t.n; ++i) {
        const float g = grad[i];
        const float m_new = h.beta1 * m[i] + (1.0f - h.beta1) * g;
        const float v_new = h.beta2 * v[i] + (1.0f - h.beta2) * g * g;
        m[i] = m_new;
        v[i] = v_new;
        const float m_hat = m_new / m_correction;
        const float v_hat = v_new / v_correction;
        param[i] -= h.lr * (m_hat / (std::sqrt(v_hat) + h.eps) + t.weight_decay * param[i]);
      }
    }
  }

  // nth_element on a copy of the magnitudes (selection, linear on average), then one pass
  // in index order. Magnitudes are compared as the bit patterns of |m|, which order like
  // the values and put NaN above infinity: a total order (so a diverged run's NaN moments
  // cannot break the selection), the same one the CUDA radix selection uses.
  void prune_smallest(float* m, float* v, int64_t n, int64_t k) override {
    RELORA_CHECK(k >= 0 && k <= n, "prune_smallest k=" << k << " of n=" << n);
    if (k == 0) return;
    const auto magnitude_bits = [](float x) {
      uint32_t bits;
      const float a = std::fabs(x);
      std::memcpy(&bits, &a, sizeof bits);
      return bits;
    };
    std::vector<uint32_t> magnitude(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) magnitude[i] = magnitude_bits(m[i]);
    std::nth_element(magnitude.begin(), magnitude.begin() + (k - 1), magnitude.end());
    const uint32_t threshold = magnitude[k - 1];  // the k-th smallest |m|
    int64_t below = 0;
    for (int64_t i = 0; i < n; ++i) below += magnitude_bits(m[i]) < threshold;
    int64_t ties_to_zero = k - below;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t a = magnitude_bits(m[i]);
      if (a < threshold || (a == threshold && ties_to_zero-- > 0)) {
        m[i] = 0.0f;
        v[i] = 0.0f;
      }
    }
  }

  // A fixed split into kPieces pieces, summed in piece order: the result is the same for
  // any thread count and schedule (an OpenMP reduction combines in finishing order).
  double sum_squares(const float* x, int64_t n) override {
    constexpr int kPieces = 64;
    double partial[kPieces];
    const int64_t piece = (n + kPieces - 1) / kPieces;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int p = 0; p < kPieces; ++p) {
      const int64_t begin = std::min(n, p * piece), end = std::min(n, begin + piece);
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = begin; i < end; ++i) sum += static_cast<double>(x[i]) * x[i];
      partial[p] = sum;
    }
    double total = 0.0;
    for (int p = 0; p < kPieces; ++p) total += partial[p];
    return total;
  }

  void scale(float* x, int64_t n, float s) override {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) x[i] *= s;
  }

  void axpy(float* y, const float* x, int64_t n, float alpha) override {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
  }

  void to_bf16(uint16_t* dst, const float* src, int64_t n) override {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
  }

  void from_bf16(float* dst, const uint16_t* src, int64_t n) override {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
  }

 private:
  // C = alpha op(A) op(B) + beta C by OpenBLAS's sgemm.
  void fp32_product(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                    int lda, const float* B, int ldb, float beta, float* C, int ldc) {
    RELORA_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm sizes M=" << M << " N=" << N << " K=" << K);
    RELORA_CHECK(lda >= std::max(1, trans_a ? M : K) && ldb >= std::max(1, trans_b ? K : N) &&
                     ldc >= std::max(1, N),
                 "gemm strides lda=" << lda << " ldb=" << ldb << " ldc=" << ldc << " for M=" << M
                                     << " N=" << N << " K=" << K);
    if (M == 0 || N == 0) return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }

  // FLOP/s of a 2048^3 sgemm on this process's threads: one untimed call, then the best of three.
  double sgemm_flops() {
    constexpr int kSize = 2048;
    const size_t elements = static_cast<size_t>(kSize) * kSize;
    std::vector<float> a(elements), b(elements), c(elements);
    fill_uniform(a.data(), static_cast<int64_t>(elements), -1.0f, 1.0f,
                 RngKey{1, RngPurpose::test, tensor_id("bench.a"), 0});
    fill_uniform(b.data(), static_cast<int64_t>(elements), -1.0f, 1.0f,
                 RngKey{1, RngPurpose::test, tensor_id("bench.b"), 0});
    double best_s = 0.0;
    for (int trial = 0; trial < 4; ++trial) {
      const auto t = std::chrono::steady_clock::now();
      fp32_product(false, false, kSize, kSize, kSize, 1.0f, a.data(), kSize, b.data(), kSize, 0.0f,
                   c.data(), kSize);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
      if (trial > 0 && (best_s == 0.0 || s < best_s)) best_s = s;
    }
    return 2.0 * kSize * kSize * kSize / best_s;
  }

  static void check_tokens(const int32_t* tokens, int N) {
    for (int n = 0; n < N; ++n) {
      RELORA_CHECK(tokens[n] >= 0, "embedding token " << tokens[n] << " at row " << n);
    }
  }

  // order groups the tokens (token_order()): in range and sorted by token, else two runs of
  // one token would race.
  static void check_order(const int32_t* tokens, const int32_t* order, int N) {
    check_tokens(tokens, N);
    for (int i = 0; i < N; ++i) {
      RELORA_CHECK(order[i] >= 0 && order[i] < N && (i == 0 || tokens[order[i - 1]] <= tokens[order[i]]),
                   "token order entry " << i << " = " << order[i] << " does not sort the " << N
                                        << " tokens (token_order makes it)");
    }
  }

  // Rotates each (i, i + D/2) pair of x(B,T,H,D) by +angle (direction 1) or -angle (-1).
  static void rotate(float* x, const float* cos, const float* sin, int B, int T, int H, int D,
                     float direction) {
    RELORA_CHECK(
        B > 0 && T > 0 && H > 0 && D > 0 && D % 2 == 0,
        "rope shape B=" << B << " T=" << T << " H=" << H << " D=" << D << " (D must be even)");
    const int half = D / 2;
    const int64_t rows = static_cast<int64_t>(B) * T;
#pragma omp parallel for schedule(static) if (rows * H * D >= kParallelMin)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t t = row % T;
      const float* cos_t = cos + t * half;
      const float* sin_t = sin + t * half;
      for (int h = 0; h < H; ++h) {
        float* first = x + (row * H + h) * D;  // dimensions [0, D/2)
        float* second = first + half;          // dimensions [D/2, D)
#pragma omp simd
        for (int i = 0; i < half; ++i) {
          const float a = first[i], b = second[i];
          const float s = direction * sin_t[i];
          first[i] = a * cos_t[i] - b * s;
          second[i] = b * cos_t[i] + a * s;
        }
      }
    }
  }
};

}  // namespace

std::unique_ptr<Ops> make_cpu_ops() {
  // Debian-style systems install several libopenblas.so.0 and the dynamic loader may pick the
  // pthreads build over the OpenMP one this program links; its own thread pool then fights
  // the OpenMP regions (attention runs about 20x slower), so refuse to run on it.
  constexpr int kOpenBlasOpenMp = 2;  // openblas_get_parallel(): 0 sequential, 1 pthreads
  RELORA_CHECK(openblas_get_parallel() == kOpenBlasOpenMp,
               "the OpenBLAS loaded at run time ("
                   << openblas_get_config()
                   << ") is not the OpenMP build; put the OpenMP build's directory (e.g. "
                      "/usr/lib/x86_64-linux-gnu/openblas-openmp) first in LD_LIBRARY_PATH");
  return std::make_unique<CpuOps>();
}

void rope_tables(float* cos, float* sin, int T, int D, float theta) {
  RELORA_CHECK(T > 0 && D > 0 && D % 2 == 0 && theta > 0,
               "rope_tables T=" << T << " D=" << D << " theta=" << theta);
  const int half = D / 2;
  for (int i = 0; i < half; ++i) {
    const double inverse_frequency = std::pow(static_cast<double>(theta), -2.0 * i / D);
    for (int t = 0; t < T; ++t) {
      const double angle = t * inverse_frequency;
      cos[static_cast<int64_t>(t) * half + i] = static_cast<float>(std::cos(angle));
      sin[static_cast<int64_t>(t) * half + i] = static_cast<float>(std::sin(angle));
    }
  }
}

void token_order(int32_t* order, const int32_t* tokens, int N) {
  std::iota(order, order + N, 0);
  std::stable_sort(order, order + N, [tokens](int32_t a, int32_t b) { return tokens[a] < tokens[b]; });
}

}  // namespace relora
