// Test doubles around the real CPU backend: ForwardingOps hands every call to it (and can
// claim to be a device backend), HostDeviceMemory serves Device::cuda tensors from host
// memory and counts the bytes, so the model's device code paths run and are measured on the CPU.
#pragma once
#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "core/arena.h"
#include "core/errors.h"
#include "core/tensor.h"

namespace relora::testing {

// Every call forwarded to the CPU backend. device() says `device`: with Device::cuda the
// model keeps its tensors in whatever DeviceMemory is installed (host memory in the tests),
// so the code paths of a device backend run on the CPU. gemm_copies: products_on_words as
// CUDA's train.matmul: bf16_copy says, so the model sizes its scratch and makes its
// products on bf16 words as there (counted: word_products), with the CPU's round_rows and
// gemm_on_words.
class ForwardingOps : public Ops {
 public:
  explicit ForwardingOps(Device device = Device::cpu, bool gemm_copies = false)
      : device_(device), gemm_copies_(gemm_copies) {}
  int64_t word_products = 0;  // gemm_on_words calls

  Device device() const override { return device_; }
  std::string device_name() const override { return "forwarding"; }
  void synchronize() override {}
  double measure_peak_flops() override { return cpu_->measure_peak_flops(); }
  double measure_training_product_flops() override { return cpu_->measure_training_product_flops(); }
  void gemm_exact(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                  const float* B, int ldb, float beta, float* C, int ldc) override {
    cpu_->gemm_exact(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void gather_columns(float* cols, const float* a, const int32_t* tokens, int N, int r, int V) override {
    cpu_->gather_columns(cols, a, tokens, N, r, V);
  }
  void scatter_add_columns(float* d_a, const float* d_cols, const int32_t* tokens,
                           const int32_t* order, int N, int r, int V) override {
    cpu_->scatter_add_columns(d_a, d_cols, tokens, order, N, r, V);
  }
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override {
    cpu_->gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  bool products_on_words() const override { return gemm_copies_; }
  void gemm_bf16(bool trans_w, int M, int N, int K, float alpha, const float* A, const uint16_t* W,
                 int ldw, float beta, float* C, int ldc, uint16_t* a_words) override {
    cpu_->gemm_bf16(trans_w, M, N, K, alpha, A, W, ldw, beta, C, ldc, a_words);
  }
  void round_rows(uint16_t* dst, int64_t dst_ld, const float* src, int64_t src_ld, int rows, int cols,
                  float scale) override {
    cpu_->round_rows(dst, dst_ld, src, src_ld, rows, cols, scale);
  }
  void gemm_on_words(bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t* A, int lda,
                     const uint16_t* B, int ldb, float beta, float* C, int ldc) override {
    ++word_products;
    cpu_->gemm_on_words(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void embedding_forward(float* out, const int32_t* tokens, const float* table, int N, int C) override {
    cpu_->embedding_forward(out, tokens, table, N, C);
  }
  void embedding_backward(float* d_table, const float* d_out, const int32_t* tokens,
                          const int32_t* order, int N, int C) override {
    cpu_->embedding_backward(d_table, d_out, tokens, order, N, C);
  }
  void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps) override {
    cpu_->rmsnorm_forward(out, rstd, x, w, N, C, eps);
  }
  void rmsnorm_backward(float* dx, float* dw, const float* d_out, const float* x, const float* w,
                        const float* rstd, int N, int C) override {
    cpu_->rmsnorm_backward(dx, dw, d_out, x, w, rstd, N, C);
  }
  void rope_forward(float* x, const float* cos, const float* sin, int B, int T, int H, int D) override {
    cpu_->rope_forward(x, cos, sin, B, T, H, D);
  }
  void rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int H, int D) override {
    cpu_->rope_backward(dx, cos, sin, B, T, H, D);
  }
  void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                         float* scratch, int B, int T, int H, int D) override {
    cpu_->attention_forward(out, att, q, k, v, scratch, B, T, H, D);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* d_out, const float* out,
                          const float* att,
                          const float* q, const float* k, const float* v, float* scratch, int B, int T,
                          int H, int D) override {
    cpu_->attention_backward(dq, dk, dv, d_out, out, att, q, k, v, scratch, B, T, H, D);
  }
  int64_t attention_saved_floats(int B, int T, int H) const override {
    return cpu_->attention_saved_floats(B, T, H);
  }
  int64_t attention_scratch_floats(int B, int T, int H, int D) const override {
    return cpu_->attention_scratch_floats(B, T, H, D);
  }
  void swiglu_forward(float* out, const float* g, const float* u, int64_t n) override {
    cpu_->swiglu_forward(out, g, u, n);
  }
  void swiglu_backward(float* dg, float* du, const float* d_out, const float* g, const float* u,
                       int64_t n) override {
    cpu_->swiglu_backward(dg, du, d_out, g, u, n);
  }
  double cross_entropy(float* d_logits, float* losses, const float* logits, const int32_t* targets, int N,
                       int V, float d_loss_scale) override {
    return cpu_->cross_entropy(d_logits, losses, logits, targets, N, V, d_loss_scale);
  }
  void adamw(const std::vector<AdamwTensor>& tensors, const AdamwHyper& hyper) override {
    cpu_->adamw(tensors, hyper);
  }
  void prune_smallest(float* m, float* v, int64_t n, int64_t k) override {
    cpu_->prune_smallest(m, v, n, k);
  }
  double sum_squares(const float* x, int64_t n) override { return cpu_->sum_squares(x, n); }
  void scale(float* x, int64_t n, float s) override { cpu_->scale(x, n, s); }
  void axpy(float* y, const float* x, int64_t n, float alpha) override { cpu_->axpy(y, x, n, alpha); }
  void to_bf16(uint16_t* dst, const float* src, int64_t n) override { cpu_->to_bf16(dst, src, n); }
  void from_bf16(float* dst, const uint16_t* src, int64_t n) override { cpu_->from_bf16(dst, src, n); }

 private:
  Device device_;
  bool gemm_copies_;
  std::unique_ptr<Ops> cpu_ = make_cpu_ops();
};

// Device memory in host memory, from an Arena like the CUDA backend's, counting the bytes
// requested (now and at most).
class HostDeviceMemory final : public DeviceMemory {
 public:
  void reserve(int64_t bytes, int64_t /*keep_free*/) override {
    if (arena_ && arena_->capacity() >= bytes) return;
    RELORA_CHECK(!arena_ || arena_->in_use() == 0, "growing an arena in use");
    block_.assign(static_cast<size_t>(bytes), 0);
    arena_ = std::make_unique<Arena>(bytes);
  }
  void release_arena() override {
    RELORA_CHECK(!arena_ || arena_->in_use() == 0, "releasing an arena in use");
    arena_.reset();
    block_.clear();
  }
  void* allocate(size_t bytes) override {
    RELORA_CHECK(arena_ != nullptr, "allocation before reserve");
    char* p = block_.data() + arena_->allocate(static_cast<int64_t>(bytes));
    std::memset(p, 0, bytes);
    peak_ = std::max(peak_, bytes_in_use());
    return p;
  }
  void release(void* p) override { arena_->release(static_cast<char*>(p) - block_.data()); }
  void copy_to_device(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy_to_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void zero(void* p, size_t bytes) override { std::memset(p, 0, bytes); }
  int64_t bytes_in_use() const override { return arena_ ? arena_->requested_in_use() : 0; }
  int64_t reserved_bytes() const override { return arena_ ? arena_->capacity() : 0; }
  int64_t peak_bytes_in_use() const { return peak_; }  // the most bytes_in_use has been
  // Pinning is bookkeeping here: the host bytes pinned now.
  void pin(void* p, size_t bytes) override { pinned_[p] = static_cast<int64_t>(bytes); }
  void unpin(void* p) noexcept override { pinned_.erase(p); }
  int64_t pinned_bytes() const {
    int64_t total = 0;
    for (const auto& entry : pinned_) total += entry.second;
    return total;
  }

 private:
  int64_t peak_ = 0;
  std::map<void*, int64_t> pinned_;
  std::vector<char> block_;
  std::unique_ptr<Arena> arena_;
};

}  // namespace relora::testing
