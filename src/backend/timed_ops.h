// TimedOps: an Ops that hands every call to another backend and adds up, per kind of call,
// how many there were and how long they took. It synchronises the backend before and after
// each call, so a GPU's figure is the kernels' time plus one launch latency, not the time
// to queue them. For `relora bench --profile`: where a step's time goes. Products are kept
// apart by shape ("gemm NT 4096x1024x1024" = M x N x K), with their FLOPs.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backend/ops.h"

namespace relora {

struct OpTime {
  std::string op;        // "rmsnorm_forward", "gemm NT 4096x1024x1024", ...
  int64_t calls = 0;
  double seconds = 0.0;
  double flops = 0.0;    // products only (2 M N K per call), else 0
};

class TimedOps final : public Ops {
 public:
  explicit TimedOps(Ops& inner) : inner_(inner) {}

  // The totals since the last reset, largest time first.
  std::vector<OpTime> times() const;
  void reset() { times_.clear(); }

  Device device() const override { return inner_.device(); }
  std::string device_name() const override { return inner_.device_name(); }
  void synchronize() override { inner_.synchronize(); }
  double measure_peak_flops() override { return inner_.measure_peak_flops(); }
  double measure_training_product_flops() override {
    return inner_.measure_training_product_flops();
  }

  void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override;
  bool products_on_words() const override { return inner_.products_on_words(); }
  void gemm_exact(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                  int lda, const float* B, int ldb, float beta, float* C, int ldc) override;
  void gemm_bf16(bool trans_w, int M, int N, int K, float alpha, const float* A,
                 const uint16_t* W, int ldw, float beta, float* C, int ldc,
                 uint16_t* a_words) override;
  void round_rows(uint16_t* dst, int64_t dst_ld, const float* src, int64_t src_ld, int rows, int cols,
                  float scale) override;
  void gemm_on_words(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const uint16_t* A,
                     int lda, const uint16_t* B, int ldb, float beta, float* C, int ldc) override;
  void embedding_forward(float* out, const int32_t* tokens, const float* table, int N,
                         int C) override;
  void embedding_backward(float* d_table, const float* d_out, const int32_t* tokens,
                          const int32_t* order, int N, int C) override;
  void gather_columns(float* cols, const float* a, const int32_t* tokens, int N, int r,
                      int V) override;
  void scatter_add_columns(float* d_a, const float* d_cols, const int32_t* tokens,
                           const int32_t* order, int N, int r, int V) override;
  void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C,
                       float eps) override;
  void rmsnorm_backward(float* dx, float* dw, const float* d_out, const float* x, const float* w,
                        const float* rstd, int N, int C) override;
  void rope_forward(float* x, const float* cos, const float* sin, int B, int T, int H,
                    int D) override;
  void rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int H,
                     int D) override;
  void attention_forward(float* out, float* saved, const float* q, const float* k, const float* v,
                         float* scratch, int B, int T, int H, int D) override;
  void attention_backward(float* dq, float* dk, float* dv, const float* d_out, const float* out,
                          const float* saved,
                          const float* q, const float* k, const float* v, float* scratch, int B,
                          int T, int H, int D) override;
  int64_t attention_saved_floats(int B, int T, int H) const override {
    return inner_.attention_saved_floats(B, T, H);
  }
  int64_t attention_scratch_floats(int B, int T, int H, int D) const override {
    return inner_.attention_scratch_floats(B, T, H, D);
  }
  void swiglu_forward(float* out, const float* g, const float* u, int64_t n) override;
  void swiglu_backward(float* dg, float* du, const float* d_out, const float* g, const float* u,
                       int64_t n) override;
  double cross_entropy(float* d_logits, float* losses, const float* logits,
                       const int32_t* targets, int N, int V, float d_loss_scale) override;
  void adamw(const std::vector<AdamwTensor>& tensors, const AdamwHyper& hyper) override;
  void prune_smallest(float* m, float* v, int64_t n, int64_t k) override;
  double sum_squares(const float* x, int64_t n) override;
  void scale(float* x, int64_t n, float s) override;
  void axpy(float* y, const float* x, int64_t n, float alpha) override;
  void to_bf16(uint16_t* dst, const float* src, int64_t n) override;
  void from_bf16(float* dst, const uint16_t* src, int64_t n) override;

 private:
  // Runs call() between two synchronisations and adds its time to `op`.
  template <typename Call>
  auto timed(const std::string& op, double flops, const Call& call);

  Ops& inner_;
  std::map<std::string, OpTime> times_;
};

}  // namespace relora
