// LoraLinear and LoraEmbedding: forward, backward, adapter init and merge.
#include "model/lora_linear.h"

#include <cmath>
#include <memory>
#include <vector>

#include "core/errors.h"
#include "core/rng.h"

namespace relora {
namespace {

RngKey adapter_key(const AdapterInit& init, const std::string& name) {
  return RngKey{init.seed, RngPurpose::adapter, tensor_id(name), static_cast<uint64_t>(init.step)};
}

// Draws on the host (the same numbers on every backend), then copies to the tensor's memory.
void draw_uniform(Param* p, float low, float high, const AdapterInit& init) {
  std::vector<float> host(static_cast<size_t>(p->value.numel()));
  fill_uniform(host.data(), p->value.numel(), low, high, adapter_key(init, p->name));
  p->value.copy_from_host(host.data());
}

void draw_normal(Param* p, float mean, float std, const AdapterInit& init) {
  std::vector<float> host(static_cast<size_t>(p->value.numel()));
  fill_normal(host.data(), p->value.numel(), mean, std, adapter_key(init, p->name));
  p->value.copy_from_host(host.data());
}

}  // namespace

Ops& host_ops() {
  static const std::unique_ptr<Ops> ops = make_cpu_ops();
  return *ops;
}

// ---- LoraLinear -------------------------------------------------------------------------

LoraLinear::LoraLinear(std::string module, Param* weight, int max_rows, uint16_t* product_words)
    : module_(std::move(module)),
      weight_(weight),
      in_(static_cast<int>(weight->value.dim(1))),
      out_(static_cast<int>(weight->value.dim(0))),
      max_rows_(max_rows),
      product_words_(product_words) {}

void LoraLinear::attach(Param* a, Param* b, float scale) {
  RELORA_CHECK(a->value.dim(1) == in_ && b->value.dim(0) == out_ &&
                   a->value.dim(0) == b->value.dim(1),
               module_ << ": adapter shapes " << a->value.shape_str() << ", "
                       << b->value.shape_str());
  a_ = a;
  b_ = b;
  scale_ = scale;
  rank_ = static_cast<int>(a->value.dim(0));
  if (xa_.numel() != static_cast<int64_t>(max_rows_) * rank_)
    xa_ = Tensor::zeros({max_rows_, rank_}, a->value.device());
}

void LoraLinear::init_adapters(const AdapterInit& init) {
  const float bound = 1.0f / std::sqrt(static_cast<float>(in_));
  draw_uniform(a_, -bound, bound, init);
  b_->value.zero();
}

void LoraLinear::merge(Ops& ops) {
  if (master_on_host()) {
    // W(out,in) += s B A on the host master, in fp32 (the CPU backend), then the new bf16 copy
    const Tensor a = a_->value.to_host(), b = b_->value.to_host();
    host_ops().gemm_exact(false, false, out_, in_, rank_, scale_, b.data(), rank_, a.data(), in_,
                          1.0f, weight_->value.data(), in_);
    refresh_bf16_weight();
    return;
  }
  // W(out,in) += s B(out,r) A(r,in), in full fp32
  ops.gemm_exact(false, false, out_, in_, rank_, scale_, b_->value.data(), rank_, a_->value.data(), in_,
           1.0f, weight_->value.data(), in_);
}

void LoraLinear::keep_master_on_host(Ops& ops, uint16_t* words_scratch) {
  RELORA_CHECK(!weight_->trainable() && !master_on_host() && !weight_->value.on_host(),
               module_ << ": only a frozen device weight moves its master to the host");
  words_ = Tensor::zeros(weight_->value.shape(), weight_->value.device(), DType::bf16);
  ops.to_bf16(words_.bf16(), weight_->value.data(), weight_->value.numel());
  Tensor master = Tensor::pinned(weight_->value.shape());
  weight_->value.copy_to_host(master.data());
  weight_->value = master;  // the device fp32 copy is freed
  words_scratch_ = words_scratch;
}

void LoraLinear::refresh_bf16_weight() {
  if (!master_on_host()) return;
  const Tensor& master = weight_->value;
  std::vector<uint16_t> words(static_cast<size_t>(master.numel()));
  host_ops().to_bf16(words.data(), master.data(), master.numel());
  words_.copy_from_host(words.data());
}

void LoraLinear::times_weight(Ops& ops, bool transpose, const float* in, float* out, int N,
                              float beta) {
  // transpose: out(N,out_) = in(N,in_) W^T; else out(N,in_) = in(N,out_) W
  const int cols = transpose ? out_ : in_, inner = transpose ? in_ : out_;
  if (master_on_host())
    ops.gemm_bf16(transpose, N, cols, inner, 1.0f, in, words_.bf16(), in_, beta, out, cols,
                  words_scratch_);
  else
    ops.gemm(false, transpose, N, cols, inner, 1.0f, in, inner, weight_->value.data(), in_, beta,
             out, cols);
}

void LoraLinear::forward(Ops& ops, const float* x, float* y, int N) {
  RELORA_CHECK(N <= max_rows_, module_ << ": " << N << " rows > " << max_rows_);
  if (on_words()) {
    forward_on_words(ops, x, y, N);
    return;
  }
  // y(N,out) = x(N,in) W^T
  times_weight(ops, true, x, y, N, 0.0f);
  if (!a_) return;
  // xa(N,r) = x A^T;  y += s xa B^T
  ops.gemm(false, true, N, rank_, in_, 1.0f, x, in_, a_->value.data(), in_, 0.0f, xa_.data(), rank_);
  ops.gemm(false, true, N, out_, rank_, scale_, xa_.data(), rank_, b_->value.data(), rank_, 1.0f, y,
           out_);
}

void LoraLinear::backward(Ops& ops, const float* x, const float* dy, float* dx, bool accumulate_dx,
                          float* scratch, int N) {
  RELORA_CHECK(N <= max_rows_, module_ << ": " << N << " rows > " << max_rows_);
  float* dy_b = scratch;  // (N,r) = dy B
  if (on_words()) {
    backward_on_words(ops, x, dy, dx, accumulate_dx, dy_b, N);
  } else {
    // dx(N,in) (+)= dy(N,out) W(out,in);  dW(out,in) += dy^T x
    times_weight(ops, false, dy, dx, N, accumulate_dx ? 1.0f : 0.0f);
    if (weight_->trainable())
      ops.gemm(true, false, out_, in_, N, 1.0f, dy, out_, x, in_, 1.0f, weight_->grad.data(), in_);
    if (a_) {
      ops.gemm(false, false, N, rank_, out_, 1.0f, dy, out_, b_->value.data(), rank_, 0.0f, dy_b, rank_);
      // dx += s dy_b A;  dB(out,r) += s dy^T xa
      ops.gemm(false, false, N, in_, rank_, scale_, dy_b, rank_, a_->value.data(), in_, 1.0f, dx, in_);
      ops.gemm(true, false, out_, rank_, N, scale_, dy, out_, xa_.data(), rank_, 1.0f,
               b_->grad.data(), rank_);
    }
  }
  // dA(r,in) += s dy_b^T x
  if (a_)
    ops.gemm(true, false, rank_, in_, N, scale_, dy_b, rank_, x, in_, 1.0f, a_->grad.data(), in_);
}

namespace {
int64_t padded_row(int64_t n) { return (n + 7) / 8 * 8; }          // n words, padded to 16 bytes
int64_t aligned_block(int64_t n) { return (n + 127) / 128 * 128; }  // n words, to 256 bytes
}  // namespace

int64_t LoraLinear::words_for_products(int N, int in, int out, int r) {
  const int64_t forward = aligned_block(N * padded_row(in + r)) + aligned_block(out * padded_row(in + r)) +
                          r * padded_row(in);
  const int64_t backward = aligned_block(N * padded_row(out + r)) + aligned_block(out * padded_row(r)) +
                           aligned_block((out + r) * padded_row(in)) + aligned_block(N * padded_row(r)) +
                           N * padded_row(in);
  return std::max(forward, backward);
}

void LoraLinear::forward_on_words(Ops& ops, const float* x, float* y, int N) {
  const int r = a_ ? rank_ : 0;
  const int ld = static_cast<int>(padded_row(in_ + r)), a_ld = static_cast<int>(padded_row(in_));
  uint16_t* xw = product_words_;                             // (N, in+r): [x | xa]
  uint16_t* ww = xw + aligned_block(int64_t{N} * ld);        // (out, in+r): [W | s B]
  uint16_t* aw = ww + aligned_block(int64_t{out_} * ld);     // (r, in): A
  ops.round_rows(xw, ld, x, in_, N, in_, 1.0f);
  ops.round_rows(ww, ld, weight_->value.data(), in_, out_, in_, 1.0f);
  if (r > 0) {
    ops.round_rows(aw, a_ld, a_->value.data(), in_, r, in_, 1.0f);
    // xa(N,r) = x A^T, kept for backward; its words beside x's, s B's beside W's
    ops.gemm_on_words(false, true, N, r, in_, 1.0f, xw, ld, aw, a_ld, 0.0f, xa_.data(), r);
    ops.round_rows(xw + in_, ld, xa_.data(), r, N, r, 1.0f);
    ops.round_rows(ww + in_, ld, b_->value.data(), r, out_, r, scale_);
  }
  // y(N,out) = [x | xa] [W | s B]^T
  ops.gemm_on_words(false, true, N, out_, in_ + r, 1.0f, xw, ld, ww, ld, 0.0f, y, out_);
}

void LoraLinear::backward_on_words(Ops& ops, const float* x, const float* dy, float* dx,
                                   bool accumulate_dx, float* dy_b, int N) {
  const int r = a_ ? rank_ : 0;
  const int ld = static_cast<int>(padded_row(out_ + r)), r_ld = static_cast<int>(padded_row(r)),
            in_ld = static_cast<int>(padded_row(in_));
  uint16_t* dw = product_words_;                                  // (N, out+r): [dy | dy_b]
  uint16_t* bw = dw + aligned_block(int64_t{N} * ld);             // (out, r): B
  uint16_t* vw = bw + aligned_block(int64_t{out_} * r_ld);        // (out+r, in): [W ; s A]
  uint16_t* xaw = vw + aligned_block(int64_t{out_ + r} * in_ld);  // (N, r): xa
  uint16_t* xw = xaw + aligned_block(int64_t{N} * r_ld);          // (N, in): x, for dW
  ops.round_rows(dw, ld, dy, out_, N, out_, 1.0f);
  ops.round_rows(vw, in_ld, weight_->value.data(), in_, out_, in_, 1.0f);
  if (r > 0) {
    ops.round_rows(bw, r_ld, b_->value.data(), r, out_, r, 1.0f);
    // dy_b(N,r) = dy B; its words beside dy's, s A's below W's
    ops.gemm_on_words(false, false, N, r, out_, 1.0f, dw, ld, bw, r_ld, 0.0f, dy_b, r);
    ops.round_rows(dw + out_, ld, dy_b, r, N, r, 1.0f);
    ops.round_rows(vw + int64_t{out_} * in_ld, in_ld, a_->value.data(), in_, r, in_, scale_);
  }
  // dx(N,in) (+)= [dy | dy_b] [W ; s A]
  ops.gemm_on_words(false, false, N, in_, out_ + r, 1.0f, dw, ld, vw, in_ld,
                    accumulate_dx ? 1.0f : 0.0f, dx, in_);
  if (r > 0) {  // dB(out,r) += s dy^T xa
    ops.round_rows(xaw, r_ld, xa_.data(), r, N, r, 1.0f);
    ops.gemm_on_words(true, false, out_, r, N, scale_, dw, ld, xaw, r_ld, 1.0f, b_->grad.data(), r);
  }
  if (weight_->trainable()) {  // dW(out,in) += dy^T x, on dy's words again
    ops.round_rows(xw, in_ld, x, in_, N, in_, 1.0f);
    ops.gemm_on_words(true, false, out_, in_, N, 1.0f, dw, ld, xw, in_ld, 1.0f, weight_->grad.data(), in_);
  }
}

// ---- LoraEmbedding ----------------------------------------------------------------------

LoraEmbedding::LoraEmbedding(Param* table, int max_rows)
    : table_(table),
      vocab_(static_cast<int>(table->value.dim(0))),
      channels_(static_cast<int>(table->value.dim(1))),
      max_rows_(max_rows) {}

void LoraEmbedding::attach(Param* a, Param* b, float scale) {
  RELORA_CHECK(a->value.dim(1) == vocab_ && b->value.dim(0) == channels_ &&
                   a->value.dim(0) == b->value.dim(1),
               "embedding adapter shapes " << a->value.shape_str() << ", " << b->value.shape_str());
  a_ = a;
  b_ = b;
  scale_ = scale;
  rank_ = static_cast<int>(a->value.dim(0));
  if (a_cols_.numel() != static_cast<int64_t>(max_rows_) * rank_)
    a_cols_ = Tensor::zeros({max_rows_, rank_}, table_->value.device());
}

void LoraEmbedding::init_adapters(const AdapterInit& init) {
  a_->value.zero();
  draw_normal(b_, 0.0f, 1.0f, init);
}

void LoraEmbedding::merge(Ops& ops) {
  // E(V,C) += s A^T(V,r) B^T(r,C), in full fp32
  ops.gemm_exact(true, true, vocab_, channels_, rank_, scale_, a_->value.data(), vocab_,
           b_->value.data(), rank_, 1.0f, table_->value.data(), channels_);
}

void LoraEmbedding::forward(Ops& ops, const int32_t* tokens, float* out, int N) {
  RELORA_CHECK(N <= max_rows_, "embedding: " << N << " rows > " << max_rows_);
  ops.embedding_forward(out, tokens, table_->value.data(), N, channels_);
  if (!a_) return;
  // a_cols(N,r)[n, j] = A[j, tokens[n]];  out += s a_cols B^T
  ops.gather_columns(a_cols_.data(), a_->value.data(), tokens, N, rank_, vocab_);
  ops.gemm(false, true, N, channels_, rank_, scale_, a_cols_.data(), rank_, b_->value.data(), rank_, 1.0f, out,
           channels_);
}

void LoraEmbedding::backward(Ops& ops, const int32_t* tokens, const int32_t* order,
                             const float* d_out, float* scratch, int N) {
  if (table_->trainable())
    ops.embedding_backward(table_->grad.data(), d_out, tokens, order, N, channels_);
  if (!a_) return;
  // dB(C,r) += s d_out^T a_cols;  d_cols(N,r) = s d_out B;  dA[j, tokens[n]] += d_cols[n, j]
  ops.gemm(true, false, channels_, rank_, N, scale_, d_out, channels_, a_cols_.data(), rank_, 1.0f,
           b_->grad.data(), rank_);
  float* d_cols = scratch;
  ops.gemm(false, false, N, rank_, channels_, scale_, d_out, channels_, b_->value.data(), rank_,
           0.0f, d_cols, rank_);
  ops.scatter_add_columns(a_->grad.data(), d_cols, tokens, order, N, rank_, vocab_);
}

}  // namespace relora
