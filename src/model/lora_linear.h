// LoraLinear: y = x W^T + s (x A^T) B^T with W(out,in) and, while adapters are on,
// A(r,in), B(out,r), s = alpha/r. A frozen W can live as a bf16 copy on the device with its
// fp32 master in pinned host memory (relora.master_on_host): products then take the bf16
// copy, merges update the host master in fp32 and round it to bf16 again. LoraEmbedding: the token embedding with PEFT's adapter
// shapes, out[n] = E[tok] + s * B A[:, tok] with E(V,C), A(r,V), B(C,r).
// Both keep what backward needs (x A^T, or the gathered columns of A) in buffers sized once
// for the largest batch, so a training step allocates nothing.
#pragma once
#include <cstdint>
#include <string>

#include "backend/ops.h"
#include "model/params.h"

namespace relora {

// The CPU backend that merges masters kept on the host (made on first use; throws where the
// CPU backend cannot run, e.g. the wrong OpenBLAS).
Ops& host_ops();

// How adapters are (re-)initialised: fresh draws keyed by (seed, adapter, tensor, step).
struct AdapterInit {
  uint64_t seed = 0;
  int64_t step = 0;  // the update after which the draw happens (0 at the start)
};

class LoraLinear {
 public:
  // weight: the (out,in) base weight, owned by the model. max_rows: largest N of any call.
  // product_words: the model's scratch for the bf16 copies of the products' operands
  // (product_scratch_words) where Ops::products_on_words, else null. With it (and W on the
  // device) the products run on bf16 words, the adapters joined to W along K (below).
  LoraLinear(std::string module, Param* weight, int max_rows, uint16_t* product_words);

  // bf16 words of product_words the products of a linear in -> out with rank-r adapters
  // (r = 0: none) take for N rows: forward [x | xa] (N, in+r), [W | s B] (out, in+r) and A
  // (r, in); backward [dy | dy_b] (N, out+r), B (out, r), [W ; s A] (out+r, in), xa (N, r)
  // and x (N, in); rows padded to 8 words (16 bytes, for cuBLAS's vectorised kernels, even
  // at llama_1b's width 5461), blocks 128-word (256-byte) aligned.
  static int64_t words_for_products(int N, int in, int out, int r);

  const std::string& module() const { return module_; }
  Param* weight() { return weight_; }
  Param* lora_a() { return a_; }
  Param* lora_b() { return b_; }
  bool has_adapters() const { return a_ != nullptr; }
  float scale() const { return scale_; }
  int in_features() const { return in_; }
  int out_features() const { return out_; }

  // Attaches adapters a(r,in), b(out,r) (owned by the model) and the scale; allocates the
  // saved-activation buffer (max_rows, r).
  void attach(Param* a, Param* b, float scale);
  // A ~ U(-1/sqrt(in), 1/sqrt(in)) (Kaiming uniform with a = sqrt(5)), B = 0.
  void init_adapters(const AdapterInit& init);
  // W += s B A (fp32).
  void merge(Ops& ops);

  // Moves the (frozen) weight's fp32 value to pinned host memory, the weight's Param::value
  // from now on, and keeps a bf16 copy in ops' memory for the products. words_scratch:
  // max_rows * max(in, out) bf16 words, shared by the model's linears.
  void keep_master_on_host(Ops& ops, uint16_t* words_scratch);
  bool master_on_host() const { return !words_.empty(); }
  // Rounds the host master into the bf16 copy again (after a load or a broadcast).
  void refresh_bf16_weight();

  // x(N,in) -> y(N,out)
  void forward(Ops& ops, const float* x, float* y, int N);
  // dy(N,out) -> dx(N,in) (written, or added to when accumulate_dx), and the gradients of
  // the trainable tensors among W, A, B (added to). scratch: at least N*r floats.
  void backward(Ops& ops, const float* x, const float* dy, float* dx, bool accumulate_dx,
                float* scratch, int N);

 private:
  std::string module_;
  Param* weight_;
  Param* a_ = nullptr;
  Param* b_ = nullptr;
  float scale_ = 0.0f;
  // y(N,out) (beta 0) or dx(N,in) (beta 0 or 1) through W: fp32 W, or its bf16 copy.
  void times_weight(Ops& ops, bool transpose, const float* in, float* out, int N, float beta);
  // Under bf16 copies (product_words_) with W on the device: every product on bf16 words
  // (Ops::round_rows, Ops::gemm_on_words), y = [x | xa] [W | s B]^T and
  // dx (+)= [dy | dy_b] [W ; s A] one product each with adapters (no thin product reads,
  // adds to and writes back y or dx), xa = x A^T, dy_b = dy B, dB = s dy^T xa and
  // dW = dy^T x reading the copies of x and dy (dy rounded once for dx and dW).
  bool on_words() const { return product_words_ != nullptr && !master_on_host(); }
  void forward_on_words(Ops& ops, const float* x, float* y, int N);
  // dx, dB, dW (if it trains), and dy_b(N,r) = dy B (for dA)
  void backward_on_words(Ops& ops, const float* x, const float* dy, float* dx, bool accumulate_dx,
                         float* dy_b, int N);

  int in_, out_, rank_ = 0, max_rows_;
  Tensor xa_;     // (max_rows, r): x A^T of the last forward
  Tensor words_;  // (out,in) bf16 copy of a weight whose master is on the host; else empty
  uint16_t* words_scratch_ = nullptr;
  uint16_t* product_words_;  // the products' bf16 copies (words_for_products), or null
};

class LoraEmbedding {
 public:
  LoraEmbedding(Param* table, int max_rows);

  Param* table() { return table_; }
  Param* lora_a() { return a_; }
  Param* lora_b() { return b_; }
  bool has_adapters() const { return a_ != nullptr; }

  // a(r,V), b(C,r) owned by the model.
  void attach(Param* a, Param* b, float scale);
  // PEFT's embedding init: A = 0, B ~ N(0, 1).
  void init_adapters(const AdapterInit& init);
  // E(V,C) += s (B A)^T = s A^T B^T (fp32).
  void merge(Ops& ops);

  // tokens(N) -> out(N,C)
  void forward(Ops& ops, const int32_t* tokens, float* out, int N);
  // d_out(N,C) -> gradients of the trainable tensors among E, A, B (added to).
  // order(N): token_order() of tokens. scratch: at least N*r floats.
  void backward(Ops& ops, const int32_t* tokens, const int32_t* order, const float* d_out,
                float* scratch, int N);

 private:
  Param* table_;
  Param* a_ = nullptr;
  Param* b_ = nullptr;
  float scale_ = 0.0f;
  int vocab_, channels_, rank_ = 0, max_rows_;
  Tensor a_cols_;  // (max_rows, r): A[:, tokens[n]] of the last forward
};

}  // namespace relora
