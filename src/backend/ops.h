// The op set the model needs, forward and backward. One interface, one implementation per
// device (cpu/ and cuda/). Pointers are raw, row-major, contiguous unless a leading
// dimension says otherwise, and point into the backend's memory (device()): host memory for
// the CPU backend, device memory for CUDA, token ids included. Calls are queued in order on
// one stream; results that come back as numbers (cross_entropy, sum_squares) wait for it,
// and synchronize() waits for everything queued. Shapes are in the comments: N = rows (B*T), C = channels,
// V = vocabulary, F = MLP width, H = heads, D = head size (C = H*D), T = sequence length.
// Conventions: a "forward" writes its outputs (=). A "backward" writes input gradients (=)
// and ACCUMULATES parameter gradients (+=), so gradient accumulation over micro-batches
// needs no copies. Each call does a whole layer's worth of work: no per-element dispatch.
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace relora {

// One tensor of an AdamW update (Ops::adamw): param, grad, m, v all of n floats.
struct AdamwTensor {
  float* param;
  const float* grad;
  float* m;
  float* v;
  int64_t n;
  float weight_decay;  // 0 for norms
  int64_t step;        // this tensor's update count, from 1 (bias correction)
};
struct AdamwHyper {
  float lr, beta1, beta2, eps;
};
// 1 - beta^step in double, rounded to float: AdamW's bias correction on every backend.
inline float adamw_bias_correction(float beta, int64_t step) {
  return static_cast<float>(1.0 - std::pow(static_cast<double>(beta), static_cast<double>(step)));
}

class Ops {
 public:
  virtual ~Ops() = default;

  // Where this backend's pointers live, and its name for logs ("cpu", "cuda:0 (NVIDIA H200)").
  virtual Device device() const = 0;
  virtual std::string device_name() const = 0;
  // Waits until every queued call has finished (host timing, host reads).
  virtual void synchronize() = 0;
  // FLOP/s of the backend's fastest large square product (CPU: fp32 sgemm 2048^3; CUDA:
  // bf16 8192^3 with fp32 accumulation, whatever train.matmul says): the denominator of MFU.
  // Allocates and frees its own operands; takes about a second.
  virtual double measure_peak_flops() = 0;
  // FLOP/s of Ops::gemm itself on a large square product of fp32 tensors (CPU: the same
  // 2048^3 sgemm; CUDA: 8192^3 in the training precision on fp32 storage): how close the
  // training products come to the peak.
  virtual double measure_training_product_flops() = 0;

  // ---- matrix products -------------------------------------------------------------
  // C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C, row-major, op(X) = X or X^T.
  // lda/ldb/ldc are the row strides of A, B, C as stored. fp32 operands and result; the
  // products may run in the backend's training precision (CUDA: bf16 inputs, fp32
  // accumulation; under train.matmul bf16_copy as under bf16, rounded inside the product).
  virtual void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                    int lda, const float* B, int ldb, float beta, float* C, int ldc) = 0;
  // Whether the weight products should be made on bf16 copies of their operands
  // (round_rows, then gemm_on_words: CUDA under train.matmul bf16_copy), as LoraLinear does.
  virtual bool products_on_words() const = 0;
  // The same product in full fp32 (no reduced-precision inputs): ReLoRA merges.
  virtual void gemm_exact(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                          const float* A, int lda, const float* B, int ldb, float beta, float* C,
                          int ldc) = 0;

  // C(M,N) = alpha * A(M,K) op(W) + beta * C with W a weight stored as bf16 words
  // (relora.master_on_host): op(W) = W(K,N), or with trans_w W(N,K)^T; ldw its row stride.
  // A (contiguous fp32) is first rounded to bf16 into a_words (M*K words of scratch); the
  // products are exact, the sums fp32 — gemm's bf16 products of A and the fp32 weight,
  // summed in another order.
  virtual void gemm_bf16(bool trans_w, int M, int N, int K, float alpha, const float* A,
                         const uint16_t* W, int ldw, float beta, float* C, int ldc,
                         uint16_t* a_words) = 0;

  // ---- products of bf16 words (under bf16_copy: LoraLinear's weight products) -------
  // dst(rows,cols) with row stride dst_ld = bf16(scale * src(rows,cols) with row stride
  // src_ld): nearest, ties to even, as to_bf16; dst's other words are not written.
  virtual void round_rows(uint16_t* dst, int64_t dst_ld, const float* src, int64_t src_ld, int rows,
                          int cols, float scale) = 0;
  // C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C as gemm, with A and B bf16 words
  // (row strides lda, ldb): exact products, fp32 sums and C.
  virtual void gemm_on_words(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                             const uint16_t* A, int lda, const uint16_t* B, int ldb, float beta, float* C,
                             int ldc) = 0;

  // ---- embedding -------------------------------------------------------------------
  // out(N,C) = table(V,C)[tokens(N)]
  virtual void embedding_forward(float* out, const int32_t* tokens, const float* table, int N,
                                 int C) = 0;
  // d_table(V,C)[tokens[n]] += d_out(N,C)[n]   (repeated tokens add up)
  // order(N): token_order() of tokens. Each token's rows are added in position order, one
  // after the other (no atomics), so every backend gives the same bits.
  virtual void embedding_backward(float* d_table, const float* d_out, const int32_t* tokens,
                                  const int32_t* order, int N, int C) = 0;
  // The embedding adapter's columns: cols(N,r)[n, j] = a(r,V)[j, tokens[n]]
  virtual void gather_columns(float* cols, const float* a, const int32_t* tokens, int N, int r,
                              int V) = 0;
  // d_a(r,V)[j, tokens[n]] += d_cols(N,r)[n, j]   (repeated tokens add up, in position
  // order along order(N) = token_order() of tokens, as embedding_backward)
  virtual void scatter_add_columns(float* d_a, const float* d_cols, const int32_t* tokens,
                                   const int32_t* order, int N, int r, int V) = 0;

  // ---- RMSNorm: out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps) -------------------
  // x(N,C), w(C) -> out(N,C), rstd(N) (saved for backward)
  virtual void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N,
                               int C, float eps) = 0;
  // dx(N,C) written; dw(C) accumulated (may be null: weight frozen)
  virtual void rmsnorm_backward(float* dx, float* dw, const float* d_out, const float* x,
                                const float* w, const float* rstd, int N, int C) = 0;

  // ---- RoPE, rotate-half convention ------------------------------------------------
  // x(B,T,H,D) in place (rows of H*D floats, position t = row % T). Dimension i < D/2 pairs
  // with i + D/2: (a, b) -> (a cos - b sin, b cos + a sin), angle = t * theta^(-2i/D).
  // cos/sin(T, D/2) are tables from rope_tables().
  virtual void rope_forward(float* x, const float* cos, const float* sin, int B, int T, int H,
                            int D) = 0;
  // dx(B,T,H,D) in place: the inverse rotation (the transpose of forward's).
  virtual void rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int H,
                             int D) = 0;

  // ---- causal self-attention ---------------------------------------------------------
  // q,k,v(B,T,H,D) (rows of H*D) -> out(B,T,H,D) = softmax(q k^T / sqrt(D), causal) v.
  // saved: attention_saved_floats(B,T,H) floats that backward needs besides q, k, v (CPU:
  // the probabilities (B,H,T,T); CUDA: the row log-sum-exps (B,H,T), probabilities are
  // recomputed). scratch: attention_scratch_floats(B,T,H,D) floats, free again after the
  // call.
  virtual void attention_forward(float* out, float* saved, const float* q, const float* k,
                                 const float* v, float* scratch, int B, int T, int H,
                                 int D) = 0;
  // dq, dk, dv(B,T,H,D) written from d_out, forward's output `out` and its saved state.
  virtual void attention_backward(float* dq, float* dk, float* dv, const float* d_out,
                                  const float* out, const float* saved, const float* q,
                                  const float* k, const float* v, float* scratch, int B, int T,
                                  int H, int D) = 0;
  virtual int64_t attention_saved_floats(int B, int T, int H) const = 0;
  // Scratch either attention call needs, for batches of up to B sequences.
  virtual int64_t attention_scratch_floats(int B, int T, int H, int D) const = 0;

  // ---- SwiGLU: out = silu(g) * u, silu(z) = z / (1 + exp(-z)) ------------------------
  // g,u(n) -> out(n)
  virtual void swiglu_forward(float* out, const float* g, const float* u, int64_t n) = 0;
  // dg, du(n) written
  virtual void swiglu_backward(float* dg, float* du, const float* d_out, const float* g,
                               const float* u, int64_t n) = 0;

  // ---- fused softmax + cross-entropy -------------------------------------------------
  // logits(N,V), targets(N) -> losses(N) = -log softmax(logits)[target].
  // If d_logits is not null: d_logits(N,V) = (softmax - onehot(target)) * d_loss_scale
  // (d_logits may alias logits). Returns the sum of losses, accumulated in double.
  virtual double cross_entropy(float* d_logits, float* losses, const float* logits,
                               const int32_t* targets, int N, int V, float d_loss_scale) = 0;

  // ---- optimizer and reductions ------------------------------------------------------
  // One AdamW update of every tensor in the list, each with its own step and decay (CUDA:
  // a few launches for the whole model, not one per tensor). Per tensor, with bias
  // correction for its `step`:
  //   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
  //   p -= lr * ( (m/(1-b1^step)) / (sqrt(v/(1-b2^step)) + eps) + weight_decay * p )
  virtual void adamw(const std::vector<AdamwTensor>& tensors, const AdamwHyper& hyper) = 0;
  // ReLoRA's moment pruning: zeroes m(n) and v(n) where |m| is among the k smallest,
  // 0 <= k <= n. Ties at the threshold go in index order, so exactly k elements are
  // zeroed. The threshold is found by selection, not by a sort.
  virtual void prune_smallest(float* m, float* v, int64_t n, int64_t k) = 0;
  // sum of x[i]^2, accumulated in double
  virtual double sum_squares(const float* x, int64_t n) = 0;
  // x *= s
  virtual void scale(float* x, int64_t n, float s) = 0;
  // y += alpha * x
  virtual void axpy(float* y, const float* x, int64_t n, float alpha) = 0;

  // ---- bf16 words (the staging of a bf16 gradient all-reduce) ------------------------
  // dst(n) = src rounded to bf16: nearest, ties to even, every NaN the canonical 0x7fff
  // (core/bf16.h).
  virtual void to_bf16(uint16_t* dst, const float* src, int64_t n) = 0;
  // dst(n) = src widened to fp32 (exact).
  virtual void from_bf16(float* dst, const uint16_t* src, int64_t n) = 0;
};

// The CPU backend: BLAS for products, OpenMP across rows/heads.
std::unique_ptr<Ops> make_cpu_ops();

// order(N) = the positions 0..N-1 sorted by tokens[position], ties by position (a stable
// sort), on the host: the walk of embedding_backward and scatter_add_columns. A token's
// positions are then one run of order, its first entry where the token changes.
void token_order(int32_t* order, const int32_t* tokens, int N);

// cos/sin(T, D/2) tables for rope_*: angle(t, i) = t * theta^(-2i/D), computed in double.
void rope_tables(float* cos, float* sin, int T, int D, float theta);

}  // namespace relora
