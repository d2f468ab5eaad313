// CudaOps: the Ops interface (backend/ops.h) on one CUDA device, fp32 storage everywhere.
// This file holds the process's CUDA context (device, compute stream, cuBLAS handle,
// reduction scratch), argument checks, the entry points of cuda_backend.h and the peak-FLOP
// probe; the kernels live in kernels_*.cu, attention.cu, flash_attention.cu and gemm.cu.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "backend/cuda/check.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/stream.h"

namespace relora::cuda {
namespace {

// Everything one process needs on its device. Created once by make_cuda_ops and never
// destroyed: tensors (and their DeviceMemory, which synchronises this stream) may outlive
// every CudaOps.
struct Context {
  int device = -1;
  std::string name;  // "cuda:0 (NVIDIA H200)"
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  // kSumSquaresBlocks partial sums, then the result (sum_squares)
  double* reduce_scratch = nullptr;
  unsigned long long* prune_histogram = nullptr;  // 256 counters (prune_smallest)
  void* cublas_workspace = nullptr;               // kCublasWorkspaceBytes, set on the handle
  int smem_per_block = 0;  // shared memory a block may opt into (sharedMemPerBlockOptin)
};

// cuBLAS's workspace, given to it at start-up so that no product allocates: 32 MiB, what
// NVIDIA recommends for Hopper (4 MiB before it), with one buffer for every architecture.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

std::atomic<Context*> g_context{nullptr};
std::mutex g_context_mutex;  // make_cuda_ops

// Device set-up failures: the device is not usable, an InputError naming the device.
void setup_check(cudaError_t err, const char* call, int index) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    RELORA_INPUT_ERROR("CUDA device " << index << " is not usable: " << call << ": "
                                      << cudaGetErrorString(err));
  }
}
void setup_check(cublasStatus_t status, const char* call, int index) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    RELORA_INPUT_ERROR("CUDA device " << index << " is not usable: " << call << ": "
                                      << cublasGetStatusString(status));
  }
}

// A device allocation of the FLOP probes, freed on scope exit (after the stream's work),
// errors ignored there. A device without the memory is an InputError, as for the arena.
class ScopedDeviceBuffer {
 public:
  ScopedDeviceBuffer(size_t bytes, cudaStream_t stream) : stream_(stream) {
    const cudaError_t err = cudaMalloc(&p_, bytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear the (non-sticky) allocation error
      p_ = nullptr;
      size_t free_bytes = 0, total_bytes = 0;
      if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) cudaGetLastError();
      char sizes[160];
      std::snprintf(sizes, sizeof(sizes), "%.2f GB more (%.2f GB free of %.2f)", bytes / 1e9,
                    free_bytes / 1e9, total_bytes / 1e9);
      RELORA_INPUT_ERROR("the speed probes (large square products, before the run's memory is "
                         "reserved) cannot allocate their operands on the device: "
                         << sizes << "; they need about 1 GB: free the GPU of other processes' "
                                     "memory, or use another GPU");
    }
    CUDA_CHECK(err);
  }
  ~ScopedDeviceBuffer() {
    cudaStreamSynchronize(stream_);
    cudaFree(p_);
  }
  ScopedDeviceBuffer(const ScopedDeviceBuffer&) = delete;
  ScopedDeviceBuffer& operator=(const ScopedDeviceBuffer&) = delete;
  void* get() const { return p_; }

 private:
  void* p_ = nullptr;
  cudaStream_t stream_;
};

class ScopedEvent {
 public:
  ScopedEvent() { CUDA_CHECK(cudaEventCreate(&event_)); }
  ~ScopedEvent() { cudaEventDestroy(event_); }
  ScopedEvent(const ScopedEvent&) = delete;
  ScopedEvent& operator=(const ScopedEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// RELORA_ATTENTION=products turns the fused attention kernels off (the cuBLAS products of
// attention.cu for every head size): for diagnosing a GPU run, and for gpu_check to still
// measure everything else when the fused kernels fail. Unset or "fused": fused where
// supported.
bool fused_attention_allowed() {
  const char* value = std::getenv("RELORA_ATTENTION");
  if (value == nullptr || std::strcmp(value, "fused") == 0) return true;
  if (std::strcmp(value, "products") == 0) return false;
  RELORA_INPUT_ERROR("RELORA_ATTENTION=" << value << " is not a choice: unset it, or set fused or products");
}

class CudaOps final : public Ops {
 public:
  CudaOps(Context* context, GemmPrecision training)
      : ctx_(context), training_(training), allow_fused_attention_(fused_attention_allowed()) {}

  Device device() const override { return Device::cuda; }
  std::string device_name() const override { return ctx_->name; }

  void synchronize() override {
    bind();
    CUDA_CHECK(cudaStreamSynchronize(ctx_->stream));
  }

  // bf16 x bf16 -> bf16 with fp32 accumulation, 8192^3, sustained (probe_flops).
  double measure_peak_flops() override {
    bind();
    const size_t bytes = static_cast<size_t>(kProbeElements) * 2;  // bf16
    ScopedDeviceBuffer a(bytes, ctx_->stream), b(bytes, ctx_->stream), c(bytes, ctx_->stream);
    launch_fill_bf16(ctx_->stream, a.get(), kProbeElements);
    launch_fill_bf16(ctx_->stream, b.get(), kProbeElements);
    const float alpha = 1.0f, beta = 0.0f;
    return probe_flops([&] {
      CUBLAS_CHECK(cublasGemmEx(ctx_->cublas, CUBLAS_OP_N, CUBLAS_OP_N, kProbeSize, kProbeSize,
                                kProbeSize, &alpha, a.get(), CUDA_R_16BF, kProbeSize, b.get(),
                                CUDA_R_16BF, kProbeSize, &beta, c.get(), CUDA_R_16BF, kProbeSize,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    });
  }

  // The same 8192^3 product on fp32 storage as training makes its weight products: gemm()
  // in the training precision, or under bf16_copy both operands rounded into bf16 words
  // (the rounding included), then gemm_on_words.
  double measure_training_product_flops() override {
    bind();
    const size_t bytes = static_cast<size_t>(kProbeElements) * sizeof(float);
    const size_t word_bytes = products_on_words() ? 2 * static_cast<size_t>(kProbeElements) * 2 : 1;
    ScopedDeviceBuffer a(bytes, ctx_->stream), b(bytes, ctx_->stream), c(bytes, ctx_->stream);
    ScopedDeviceBuffer words(word_bytes, ctx_->stream);
    float* fa = static_cast<float*>(a.get());
    float* fb = static_cast<float*>(b.get());
    float* fc = static_cast<float*>(c.get());
    launch_fill_f32(ctx_->stream, fa, kProbeElements);
    launch_fill_f32(ctx_->stream, fb, kProbeElements);
    uint16_t* wa = static_cast<uint16_t*>(words.get());
    uint16_t* wb = wa + kProbeElements;
    const int n = kProbeSize;
    return probe_flops([&] {
      if (!products_on_words()) {
        gemm(false, false, n, n, n, 1.0f, fa, n, fb, n, 0.0f, fc, n);
        return;
      }
      round_rows(wa, n, fa, n, n, n, 1.0f);
      round_rows(wb, n, fb, n, n, n, 1.0f);
      gemm_on_words(false, false, n, n, n, 1.0f, wa, n, wb, n, 0.0f, fc, n);
    });
  }

  // ---- matrix products ---------------------------------------------------------------------
  // fp32 operands as stored, in the training precision (bf16_copy's as bf16: FAST_16BF
  // rounds inside its kernels; the weight products' copies are LoraLinear's).
  void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override {
    product(stored_precision(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  bool products_on_words() const override { return training_ == GemmPrecision::bf16_copy; }

  void round_rows(uint16_t* dst, int64_t dst_ld, const float* src, int64_t src_ld, int rows, int cols,
                  float scale) override {
    RELORA_CHECK(rows >= 0 && cols >= 0 && dst_ld >= cols && src_ld >= cols,
                 "round_rows sizes rows=" << rows << " cols=" << cols << " dst_ld=" << dst_ld
                                          << " src_ld=" << src_ld);
    bind();
    launch_rows_to_bf16(ctx_->stream, dst, dst_ld, src, rows, cols, src_ld, scale);
  }

  void gemm_on_words(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const uint16_t* A,
                     int lda, const uint16_t* B, int ldb, float beta, float* C, int ldc) override {
    check_product(trans_a, trans_b, M, N, K, lda, ldb, ldc);
    if (M == 0 || N == 0) return;
    bind();
    if (K == 0) {
      launch_scale_matrix(ctx_->stream, C, M, N, ldc, beta);
      return;
    }
    gemm_rowmajor(ctx_->cublas, GemmPrecision::bf16_words, trans_a, trans_b, M, N, K, alpha, A, lda, 0,
                  B, ldb, 0, beta, C, ldc, 0, 1);
  }

  void gemm_exact(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                  int lda, const float* B, int ldb, float beta, float* C, int ldc) override {
    product(GemmPrecision::fp32, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }

  void gemm_bf16(bool trans_w, int M, int N, int K, float alpha, const float* A,
                 const uint16_t* W, int ldw, float beta, float* C, int ldc,
                 uint16_t* a_words) override {
    RELORA_CHECK(M >= 0 && N >= 0 && K >= 0 && ldw >= std::max(1, trans_w ? K : N) &&
                     ldc >= std::max(1, N),
                 "gemm_bf16 sizes M=" << M << " N=" << N << " K=" << K << " ldw=" << ldw
                                      << " ldc=" << ldc);
    if (M == 0 || N == 0) return;
    bind();
    if (K == 0) {
      launch_scale_matrix(ctx_->stream, C, M, N, ldc, beta);
      return;
    }
    launch_to_bf16(ctx_->stream, a_words, A, static_cast<int64_t>(M) * K);
    gemm_rowmajor(ctx_->cublas, GemmPrecision::bf16_words, false, trans_w, M, N, K, alpha, a_words,
                  K, 0, W, ldw, 0, beta, C, ldc, 0, 1);
  }

  // ---- embedding -----------------------------------------------------------------------------
  void embedding_forward(float* out, const int32_t* tokens, const float* table, int N,
                         int C) override {
    RELORA_CHECK(N >= 0 && C >= 0, "embedding N=" << N << " C=" << C);
    bind();
    launch_embedding_forward(ctx_->stream, out, tokens, table, N, C);
  }

  void embedding_backward(float* d_table, const float* d_out, const int32_t* tokens,
                          const int32_t* order, int N, int C) override {
    RELORA_CHECK(N >= 0 && C >= 0, "embedding N=" << N << " C=" << C);
    bind();
    launch_embedding_backward(ctx_->stream, d_table, d_out, tokens, order, N, C);
  }

  void gather_columns(float* cols, const float* a, const int32_t* tokens, int N, int r,
                      int V) override {
    RELORA_CHECK(N >= 0 && r >= 0 && V >= 0, "gather_columns N=" << N << " r=" << r << " V=" << V);
    bind();
    launch_gather_columns(ctx_->stream, cols, a, tokens, N, r, V);
  }

  void scatter_add_columns(float* d_a, const float* d_cols, const int32_t* tokens,
                           const int32_t* order, int N, int r, int V) override {
    RELORA_CHECK(N >= 0 && r >= 0 && V >= 0,
                 "scatter_add_columns N=" << N << " r=" << r << " V=" << V);
    bind();
    launch_scatter_add_columns(ctx_->stream, d_a, d_cols, tokens, order, N, r, V);
  }

  // ---- RMSNorm -------------------------------------------------------------------------------
  void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C,
                       float eps) override {
    RELORA_CHECK(N >= 0 && C > 0, "rmsnorm N=" << N << " C=" << C);
    bind();
    launch_rmsnorm_forward(ctx_->stream, out, rstd, x, w, N, C, eps);
  }

  void rmsnorm_backward(float* dx, float* dw, const float* d_out, const float* x, const float* w,
                        const float* rstd, int N, int C) override {
    RELORA_CHECK(N >= 0 && C > 0, "rmsnorm N=" << N << " C=" << C);
    bind();
    launch_rmsnorm_backward(ctx_->stream, dx, dw, d_out, x, w, rstd, N, C);
  }

  // ---- RoPE ----------------------------------------------------------------------------------
  void rope_forward(float* x, const float* cos, const float* sin, int B, int T, int H,
                    int D) override {
    check_rope(B, T, H, D);
    bind();
    launch_rope(ctx_->stream, x, cos, sin, B, T, H, D, 1.0f);
  }

  void rope_backward(float* dx, const float* cos, const float* sin, int B, int T, int H,
                     int D) override {
    check_rope(B, T, H, D);
    bind();
    launch_rope(ctx_->stream, dx, cos, sin, B, T, H, D, -1.0f);
  }

  // ---- attention -----------------------------------------------------------------------------
  // Fused on tensor cores (flash_attention.cu) for head sizes 32..128 (multiples of 16) in
  // bf16 whose kernels fit the device's shared memory, unless RELORA_ATTENTION=products; else cuBLAS products over (T,T) scratch in
  // passes of heads (attention.cu).
  void attention_forward(float* out, float* saved, const float* q, const float* k, const float* v,
                         float* scratch, int B, int T, int H, int D) override {
    check_attention(B, T, H, D);
    bind();
    if (fused_attention(D))
      flash_attention_forward(ctx_->stream, out, saved, q, k, v, B, T, H, D);
    else
      cuda::attention_forward(ctx_->cublas, ctx_->stream, stored_precision(), out, saved, q, k,
                              v, scratch, B, T, H, D);
  }

  void attention_backward(float* dq, float* dk, float* dv, const float* d_out, const float* out,
                          const float* saved, const float* q, const float* k, const float* v,
                          float* scratch, int B, int T, int H, int D) override {
    check_attention(B, T, H, D);
    bind();
    if (fused_attention(D))
      flash_attention_backward(ctx_->stream, dq, dk, dv, d_out, out, saved, q, k, v, scratch, B, T,
                               H, D);
    else
      cuda::attention_backward(ctx_->cublas, ctx_->stream, stored_precision(), dq, dk, dv,
                               d_out, saved, q, k, v, scratch, B, T, H, D);
  }

  // The row log-sum-exps lse(B,H,T), on either path.
  int64_t attention_saved_floats(int B, int T, int H) const override {
    return static_cast<int64_t>(B) * H * T;
  }

  // Fused: delta(B,H,T). cuBLAS: S(G,T,T) and dP(G,T,T) for the G heads of one pass.
  int64_t attention_scratch_floats(int B, int T, int H, int D) const override {
    if (fused_attention(D)) return static_cast<int64_t>(B) * H * T;
    return 2 * static_cast<int64_t>(cuda::attention_heads_per_pass(T, H)) * T * T;
  }

  // ---- SwiGLU --------------------------------------------------------------------------------
  void swiglu_forward(float* out, const float* g, const float* u, int64_t n) override {
    RELORA_CHECK(n >= 0, "swiglu n=" << n);
    bind();
    launch_swiglu_forward(ctx_->stream, out, g, u, n);
  }

  void swiglu_backward(float* dg, float* du, const float* d_out, const float* g, const float* u,
                       int64_t n) override {
    RELORA_CHECK(n >= 0, "swiglu n=" << n);
    bind();
    launch_swiglu_backward(ctx_->stream, dg, du, d_out, g, u, n);
  }

  // ---- cross-entropy -------------------------------------------------------------------------
  // The per-row losses come back to the host and are summed in row order in double, as the
  // CPU backend sums them (this waits for the stream).
  double cross_entropy(float* d_logits, float* losses, const float* logits, const int32_t* targets,
                       int N, int V, float d_loss_scale) override {
    RELORA_CHECK(N >= 0 && V > 0, "cross_entropy N=" << N << " V=" << V);
    if (N == 0) return 0.0;
    bind();
    launch_cross_entropy(ctx_->stream, d_logits, losses, logits, targets, N, V, d_loss_scale);
    std::vector<float> host(static_cast<size_t>(N));
    CUDA_CHECK(cudaMemcpyAsync(host.data(), losses, host.size() * sizeof(float),
                               cudaMemcpyDeviceToHost, ctx_->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx_->stream));
    double total = 0.0;
    for (int n = 0; n < N; ++n) total += host[n];
    return total;
  }

  // ---- optimizer and reductions --------------------------------------------------------------
  void adamw(const std::vector<AdamwTensor>& tensors, const AdamwHyper& hyper) override {
    for (const AdamwTensor& t : tensors)
      RELORA_CHECK(t.step >= 1 && t.n >= 0,
                   "adamw step " << t.step << " n=" << t.n << " (steps count from 1)");
    bind();
    launch_adamw(ctx_->stream, tensors, hyper);
  }

  void prune_smallest(float* m, float* v, int64_t n, int64_t k) override {
    RELORA_CHECK(k >= 0 && k <= n, "prune_smallest k=" << k << " of n=" << n);
    bind();
    launch_prune_smallest(ctx_->stream, m, v, n, k, ctx_->prune_histogram);
  }

  // Two fixed-shape passes in double on the device, then 8 bytes to the host (waits).
  double sum_squares(const float* x, int64_t n) override {
    RELORA_CHECK(n >= 0, "sum_squares n=" << n);
    bind();
    double* partials = ctx_->reduce_scratch;
    double* result = ctx_->reduce_scratch + kSumSquaresBlocks;
    launch_sum_squares(ctx_->stream, result, partials, x, n);
    double host = 0.0;
    CUDA_CHECK(cudaMemcpyAsync(&host, result, sizeof(double), cudaMemcpyDeviceToHost,
                               ctx_->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx_->stream));
    return host;
  }

  void scale(float* x, int64_t n, float s) override {
    RELORA_CHECK(n >= 0, "scale n=" << n);
    bind();
    launch_scale(ctx_->stream, x, n, s);
  }

  void axpy(float* y, const float* x, int64_t n, float alpha) override {
    RELORA_CHECK(n >= 0, "axpy n=" << n);
    bind();
    launch_axpy(ctx_->stream, y, x, n, alpha);
  }

  void to_bf16(uint16_t* dst, const float* src, int64_t n) override {
    RELORA_CHECK(n >= 0, "to_bf16 n=" << n);
    bind();
    launch_to_bf16(ctx_->stream, dst, src, n);
  }

  void from_bf16(float* dst, const uint16_t* src, int64_t n) override {
    RELORA_CHECK(n >= 0, "from_bf16 n=" << n);
    bind();
    launch_from_bf16(ctx_->stream, dst, src, n);
  }

 private:
  // The calling thread's current device: ops may be called from any host thread.
  void bind() const { CUDA_CHECK(cudaSetDevice(ctx_->device)); }

  static void check_product(bool trans_a, bool trans_b, int M, int N, int K, int lda, int ldb,
                            int ldc) {
    RELORA_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm sizes M=" << M << " N=" << N << " K=" << K);
    RELORA_CHECK(lda >= std::max(1, trans_a ? M : K) && ldb >= std::max(1, trans_b ? K : N) &&
                     ldc >= std::max(1, N),
                 "gemm strides lda=" << lda << " ldb=" << ldb << " ldc=" << ldc << " for M=" << M
                                     << " N=" << N << " K=" << K);
  }

  // gemm in one cuBLAS call on fp32 storage (fp32 for merges; bf16 or tf32 for training).
  void product(GemmPrecision precision, bool trans_a, bool trans_b, int M, int N, int K,
               float alpha, const float* A, int lda, const float* B, int ldb, float beta, float* C,
               int ldc) {
    check_product(trans_a, trans_b, M, N, K, lda, ldb, ldc);
    if (M == 0 || N == 0) return;
    bind();
    if (K == 0) {  // an empty sum: C = beta C, done here rather than relying on cuBLAS
      launch_scale_matrix(ctx_->stream, C, M, N, ldc, beta);
      return;
    }
    gemm_rowmajor(ctx_->cublas, precision, trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0,
                  beta, C, ldc, 0, 1);
  }

  static void check_rope(int B, int T, int H, int D) {
    RELORA_CHECK(
        B > 0 && T > 0 && H > 0 && D > 0 && D % 2 == 0,
        "rope shape B=" << B << " T=" << T << " H=" << H << " D=" << D << " (D must be even)");
  }

  // The training precision of products on fp32 operands as stored: bf16_copy's without
  // copies, and attention's cuBLAS path (copies of its (T,T) scratch would be more
  // scratch), multiply as bf16.
  GemmPrecision stored_precision() const {
    return training_ == GemmPrecision::bf16_copy ? GemmPrecision::bf16 : training_;
  }

  bool fused_attention(int D) const {
    return allow_fused_attention_ && training_ != GemmPrecision::fp32 &&
           flash_attention_supported(D, ctx_->smem_per_block);
  }

  static void check_attention(int B, int T, int H, int D) {
    RELORA_CHECK(B > 0 && T > 0 && H > 0 && D > 0,
                 "attention shape B=" << B << " T=" << T << " H=" << H << " D=" << D);
  }

#ifdef RELORA_CUDA_EMULATED
  // The emulator multiplies on the CPU, where an 8192^3 product takes minutes: a size that
  // runs the probes' code in a moment (their figures mean nothing there).
  static constexpr int kProbeSize = 256;
#else
  static constexpr int kProbeSize = 8192;
#endif
  static constexpr int64_t kProbeElements = static_cast<int64_t>(kProbeSize) * kProbeSize;

  // Sustained FLOP/s of kProbeSize^3 products: they run back to back for at least
  // kProbeWarmupMs first (kernel selection, and an idle GPU's clocks take that long to come
  // up: a few products timed from idle would understate the peak and overstate MFU), then
  // kProbeTimed of them between one pair of events.
  static constexpr double kProbeWarmupMs = 300.0;
  static constexpr int kProbeTimed = 20;
  template <typename Product>
  double probe_flops(const Product& product) {
    const auto warmup_start = std::chrono::steady_clock::now();
    do {
      for (int i = 0; i < 5; ++i) product();
      CUDA_CHECK(cudaStreamSynchronize(ctx_->stream));
    } while (std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - warmup_start).count() <
             kProbeWarmupMs);
    ScopedEvent start, stop;
    CUDA_CHECK(cudaEventRecord(start.get(), ctx_->stream));
    for (int i = 0; i < kProbeTimed; ++i) product();
    CUDA_CHECK(cudaEventRecord(stop.get(), ctx_->stream));
    CUDA_CHECK(cudaEventSynchronize(stop.get()));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
    RELORA_CHECK(ms > 0.0f && std::isfinite(ms), "probe timing " << ms << " ms");
    return kProbeTimed * 2.0 * kProbeSize * static_cast<double>(kProbeSize) * kProbeSize /
           (static_cast<double>(ms) * 1e-3);
  }

  Context* const ctx_;
  const GemmPrecision training_;  // of gemm and attention; merges are always fp32
  const bool allow_fused_attention_;  // RELORA_ATTENTION
};

}  // namespace

cudaStream_t compute_stream() {
  const Context* context = g_context.load();
  return context == nullptr ? nullptr : context->stream;
}

int device_count(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the error state
    if (why != nullptr) *why = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
    return 0;
  }
  if (count == 0 && why != nullptr) *why = "cudaGetDeviceCount: no CUDA device";
  return count;
}

bool select_device(int index) {
  if (cudaSetDevice(index) == cudaSuccess) return true;
  cudaGetLastError();
  return false;
}

std::unique_ptr<Ops> make_cuda_ops(int index, const std::string& matmul) {
  RELORA_CHECK(matmul == "bf16" || matmul == "bf16_copy" || matmul == "tf32" || matmul == "fp32",
               "train.matmul '" << matmul << "' reached the CUDA backend unvalidated");
  const GemmPrecision training = matmul == "fp32"        ? GemmPrecision::fp32
                                 : matmul == "tf32"      ? GemmPrecision::tf32
                                 : matmul == "bf16_copy" ? GemmPrecision::bf16_copy
                                                         : GemmPrecision::bf16;
  std::lock_guard<std::mutex> lock(g_context_mutex);
  if (Context* existing = g_context.load()) {  // a later CudaOps shares the process's context
    if (existing->device != index) {
      RELORA_INPUT_ERROR("CUDA device " << index << " requested, but this process already uses "
                                        << "device " << existing->device
                                        << " (one device per process)");
    }
    setup_check(cudaSetDevice(index), "cudaSetDevice", index);
    set_device_memory(process_device_memory(index));  // (again: someone may have removed it)
    return std::make_unique<CudaOps>(existing, training);
  }
  std::string why;
  const int count = device_count(&why);
  if (count == 0) RELORA_INPUT_ERROR("CUDA device " << index << " requested, but " << why);
  if (index < 0 || index >= count) {
    RELORA_INPUT_ERROR("CUDA device " << index << " requested, but this process sees " << count
                                      << " CUDA device(s) (indices 0.." << count - 1 << ")");
  }
  // Resources made before a failure below are not freed: the process reports the
  // InputError and exits.
  auto context = std::make_unique<Context>();
  context->device = index;
  setup_check(cudaSetDevice(index), "cudaSetDevice", index);
  cudaDeviceProp prop{};
  setup_check(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties", index);
  context->name = "cuda:" + std::to_string(index) + " (" + prop.name + ")";
  context->smem_per_block = static_cast<int>(prop.sharedMemPerBlockOptin);
  setup_check(cudaStreamCreateWithFlags(&context->stream, cudaStreamNonBlocking),
              "cudaStreamCreateWithFlags", index);
  setup_check(cublasCreate(&context->cublas), "cublasCreate", index);
  setup_check(cublasSetStream(context->cublas, context->stream), "cublasSetStream", index);
  setup_check(cudaMalloc(&context->cublas_workspace, kCublasWorkspaceBytes), "cudaMalloc", index);
  setup_check(cublasSetWorkspace(context->cublas, context->cublas_workspace, kCublasWorkspaceBytes),
              "cublasSetWorkspace", index);
  setup_check(cudaMalloc(reinterpret_cast<void**>(&context->reduce_scratch),
                         (kSumSquaresBlocks + 1) * sizeof(double)),
              "cudaMalloc", index);
  setup_check(cudaMalloc(reinterpret_cast<void**>(&context->prune_histogram),
                         256 * sizeof(unsigned long long)),
              "cudaMalloc", index);
  Context* installed = context.release();  // lives until the process ends
  g_context.store(installed);
  set_device_memory(process_device_memory(index));
  return std::make_unique<CudaOps>(installed, training);
}

}  // namespace relora::cuda
