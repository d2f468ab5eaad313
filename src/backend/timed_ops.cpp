// TimedOps: every call timed between two synchronisations of the wrapped backend.
#include "backend/timed_ops.h"

#include <algorithm>
#include <type_traits>

namespace relora {
namespace {

std::string gemm_key(const char* name, bool trans_a, bool trans_b, int M, int N, int K) {
  return std::string(name) + " " + (trans_a ? "T" : "N") + (trans_b ? "T" : "N") + " " +
         std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K);
}

}  // namespace

// Records after the call returns (a call that throws, e.g. on a device error, is not
// counted, and nothing that can throw runs in a destructor).
template <typename Call>
auto TimedOps::timed(const std::string& op, double flops, const Call& call) {
  inner_.synchronize();
  const auto start = std::chrono::steady_clock::now();
  const auto record = [&] {
    inner_.synchronize();
    OpTime& t = times_[op];
    t.op = op;
    t.calls += 1;
    t.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    t.flops += flops;
  };
  if constexpr (std::is_void_v<decltype(call())>) {
    call();
    record();
  } else {
    const auto result = call();
    record();
    return result;
  }
}

std::vector<OpTime> TimedOps::times() const {
  std::vector<OpTime> out;
  for (const auto& entry : times_) out.push_back(entry.second);
  std::sort(out.begin(), out.end(),
            [](const OpTime& a, const OpTime& b) { return a.seconds > b.seconds; });
  return out;
}

void TimedOps::gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                    int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  timed(gemm_key("gemm", trans_a, trans_b, M, N, K), 2.0 * M * N * K, [&] {
    inner_.gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  });
}
void TimedOps::gemm_bf16(bool trans_w, int M, int N, int K, float alpha, const float* A,
                         const uint16_t* W, int ldw, float beta, float* C, int ldc,
                         uint16_t* a_words) {
  timed(gemm_key("gemm_bf16", false, trans_w, M, N, K), 2.0 * M * N * K, [&] {
    inner_.gemm_bf16(trans_w, M, N, K, alpha, A, W, ldw, beta, C, ldc, a_words);
  });
}
void TimedOps::round_rows(uint16_t* dst, int64_t dst_ld, const float* src, int64_t src_ld, int rows,
                          int cols, float scale) {
  timed("round_rows " + std::to_string(rows) + "x" + std::to_string(cols), 0,
        [&] { inner_.round_rows(dst, dst_ld, src, src_ld, rows, cols, scale); });
}
void TimedOps::gemm_on_words(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                             const uint16_t* A, int lda, const uint16_t* B, int ldb, float beta, float* C,
                             int ldc) {
  timed(gemm_key("gemm_on_words", trans_a, trans_b, M, N, K), 2.0 * M * N * K, [&] {
    inner_.gemm_on_words(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  });
}
void TimedOps::gemm_exact(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                          const float* A, int lda, const float* B, int ldb, float beta, float* C,
                          int ldc) {
  timed(gemm_key("gemm_exact", trans_a, trans_b, M, N, K), 2.0 * M * N * K, [&] {
    inner_.gemm_exact(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  });
}
void TimedOps::embedding_forward(float* out, const int32_t* tokens, const float* table, int N,
                                 int C) {
  timed("embedding_forward", 0, [&] { inner_.embedding_forward(out, tokens, table, N, C); });
}
void TimedOps::embedding_backward(float* d_table, const float* d_out, const int32_t* tokens,
                                  const int32_t* order, int N, int C) {
  timed("embedding_backward", 0,
        [&] { inner_.embedding_backward(d_table, d_out, tokens, order, N, C); });
}
void TimedOps::gather_columns(float* cols, const float* a, const int32_t* tokens, int N, int r,
                              int V) {
  timed("gather_columns", 0, [&] { inner_.gather_columns(cols, a, tokens, N, r, V); });
}
void TimedOps::scatter_add_columns(float* d_a, const float* d_cols, const int32_t* tokens,
                                   const int32_t* order, int N, int r, int V) {
  timed("scatter_add_columns", 0,
        [&] { inner_.scatter_add_columns(d_a, d_cols, tokens, order, N, r, V); });
}
void TimedOps::rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N,
                               int C, float eps) {
  timed("rmsnorm_forward", 0, [&] { inner_.rmsnorm_forward(out, rstd, x, w, N, C, eps); });
}
void TimedOps::rmsnorm_backward(float* dx, float* dw, const float* d_out, const float* x,
                                const float* w, const float* rstd, int N, int C) {
  timed("rmsnorm_backward", 0, [&] { inner_.rmsnorm_backward(dx, dw, d_out, x, w, rstd, N, C); });
}
void TimedOps::rope_forward(float* x, const float* cos, const float* sin, int B, int T, int H,
                            int D) {
  timed("rope_forward", 0, [&] { inner_.rope_forward(x, cos, sin, B, T, H, D); });
}
void TimedOps::rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int H,
                             int D) {
  timed("rope_backward", 0, [&] { inner_.rope_backward(dx, cos, sin, B, T, H, D); });
}
// Attention's FLOPs as model_flops_per_token counts them: q k^T and p v over the whole
// T x T (2 products of 2 B H T T D), twice that for backward.
void TimedOps::attention_forward(float* out, float* saved, const float* q, const float* k,
                                 const float* v, float* scratch, int B, int T, int H, int D) {
  timed("attention_forward", 4.0 * B * H * static_cast<double>(T) * T * D, [&] {
    inner_.attention_forward(out, saved, q, k, v, scratch, B, T, H, D);
  });
}
void TimedOps::attention_backward(float* dq, float* dk, float* dv, const float* d_out,
                                  const float* out, const float* saved, const float* q, const float* k,
                                  const float* v, float* scratch, int B, int T, int H, int D) {
  timed("attention_backward", 8.0 * B * H * static_cast<double>(T) * T * D, [&] {
    inner_.attention_backward(dq, dk, dv, d_out, out, saved, q, k, v, scratch, B, T, H, D);
  });
}
void TimedOps::swiglu_forward(float* out, const float* g, const float* u, int64_t n) {
  timed("swiglu_forward", 0, [&] { inner_.swiglu_forward(out, g, u, n); });
}
void TimedOps::swiglu_backward(float* dg, float* du, const float* d_out, const float* g,
                               const float* u, int64_t n) {
  timed("swiglu_backward", 0, [&] { inner_.swiglu_backward(dg, du, d_out, g, u, n); });
}
double TimedOps::cross_entropy(float* d_logits, float* losses, const float* logits,
                               const int32_t* targets, int N, int V, float d_loss_scale) {
  return timed("cross_entropy", 0, [&] {
    return inner_.cross_entropy(d_logits, losses, logits, targets, N, V, d_loss_scale);
  });
}
void TimedOps::adamw(const std::vector<AdamwTensor>& tensors, const AdamwHyper& hyper) {
  timed("adamw", 0, [&] { inner_.adamw(tensors, hyper); });
}
void TimedOps::prune_smallest(float* m, float* v, int64_t n, int64_t k) {
  timed("prune_smallest", 0, [&] { inner_.prune_smallest(m, v, n, k); });
}
double TimedOps::sum_squares(const float* x, int64_t n) {
  return timed("sum_squares", 0, [&] { return inner_.sum_squares(x, n); });
}
void TimedOps::scale(float* x, int64_t n, float s) {
  timed("scale", 0, [&] { inner_.scale(x, n, s); });
}
void TimedOps::axpy(float* y, const float* x, int64_t n, float alpha) {
  timed("axpy", 0, [&] { inner_.axpy(y, x, n, alpha); });
}
void TimedOps::to_bf16(uint16_t* dst, const float* src, int64_t n) {
  timed("to_bf16", 0, [&] { inner_.to_bf16(dst, src, n); });
}
void TimedOps::from_bf16(float* dst, const uint16_t* src, int64_t n) {
  timed("from_bf16", 0, [&] { inner_.from_bf16(dst, src, n); });
}

}  // namespace relora
