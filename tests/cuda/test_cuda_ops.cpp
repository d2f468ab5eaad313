// Tests of the CUDA op set against the CPU backend: every op runs on the same random inputs
// on both, and the CUDA results (copied back) must match the CPU ones. Tolerances:
// products in bf16 (gemm, attention): 2e-2 of the largest |reference| value, in TF32
// (train.matmul: tf32) 2e-3; pure fp32
// kernels: 1e-5 relative + 1e-6 absolute per element, or 1e-5 of the largest |reference|
// where a result is a sum whose order differs between the backends (gemm_exact, RMSNorm
// backward). Without a usable CUDA device every test that runs a kernel is skipped.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/kernels.h"
#include "backend/ops.h"
#include "core/bf16.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "emulator_errors.h"
#include "kernel_checks.h"

namespace relora {
namespace {

// A device copy of host floats / token ids, and the way back.
Tensor upload(const Floats& x) {
  Tensor t = Tensor::zeros({static_cast<int64_t>(x.size())}, Device::cuda);
  t.copy_from_host(x.data());
  return t;
}
Tensor upload(const Tokens& x) {
  Tensor t = Tensor::zeros({static_cast<int64_t>(x.size())}, Device::cuda, DType::i32);
  t.copy_from_host(x.data());
  return t;
}
Floats download(const Tensor& t) {
  Floats x(static_cast<size_t>(t.numel()));
  t.copy_to_host(x.data());
  return x;
}

// got (CUDA) against want (CPU), element by element (kernel_checks.h).
void expect_close(const Tensor& got, const Floats& want, Tolerance tol, const std::string& what) {
  expect_close(download(got), want, tol, what);
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (cuda::device_count(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
    gpu = cuda::make_cuda_ops(0, "bf16");
    device_memory()->reserve(int64_t{256} << 20, 0);  // every test's tensors fit in 256 MiB
    cpu = make_cpu_ops();
  }
  void TearDown() override { expect_no_emulator_errors(); }
  std::unique_ptr<Ops> gpu, cpu;
};

TEST_F(CudaOps, DeviceAndMemory) {
  EXPECT_EQ(gpu->device(), Device::cuda);
  EXPECT_EQ(gpu->device_name().rfind("cuda:0 (", 0), 0u) << gpu->device_name();
  DeviceMemory* memory = device_memory();
  ASSERT_NE(memory, nullptr);
  const int64_t before = memory->bytes_in_use();
  {
    Tensor t = Tensor::zeros({1000}, Device::cuda);
    EXPECT_EQ(memory->bytes_in_use(), before + 4000);
    EXPECT_EQ(download(t), Floats(1000, 0.0f));  // zero-filled
    const Floats x = random_floats(1000, 1);
    t.copy_from_host(x.data());
    EXPECT_EQ(download(t), x);
    t.zero();
    EXPECT_EQ(download(t), Floats(1000, 0.0f));
  }
  EXPECT_EQ(memory->bytes_in_use(), before);
  gpu->synchronize();
}

TEST_F(CudaOps, PeakFlops) {
#ifdef RELORA_CUDA_EMULATED
  GTEST_SKIP() << "the emulator multiplies on the CPU: its FLOP/s are no GPU's (and its probes are 256^3)";
#endif
  const double flops = gpu->measure_peak_flops();
  EXPECT_GT(flops, 1e12);
  EXPECT_LT(flops, 1e17);
}

// The product on bf16 copies, as LoraLinear makes its weight products under bf16_copy:
// op(A) and op(B) as stored (rows x cols, row stride ld) rounded into device words with rows
// padded to 8 (Ops::round_rows), then Ops::gemm_on_words.
void gemm_on_copies(Ops& ops, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                    const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  const int a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
  const int b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
  const int a_ld = (a_cols + 7) / 8 * 8, b_ld = (b_cols + 7) / 8 * 8;
  Tensor a = Tensor::zeros({std::max<int64_t>(1, int64_t{a_rows} * a_ld)}, Device::cuda, DType::bf16);
  Tensor b = Tensor::zeros({std::max<int64_t>(1, int64_t{b_rows} * b_ld)}, Device::cuda, DType::bf16);
  ops.round_rows(a.bf16(), a_ld, A, lda, a_rows, a_cols, 1.0f);
  ops.round_rows(b.bf16(), b_ld, B, ldb, b_rows, b_cols, 1.0f);
  ops.gemm_on_words(trans_a, trans_b, M, N, K, alpha, a.bf16(), std::max(1, a_ld), b.bf16(),
                    std::max(1, b_ld), beta, C, ldc);
}

// A's (rows * ld) floats rounded to bf16 and widened again, on the CPU (core/bf16.h).
Floats bf16_rounded(Ops& cpu, const Floats& a) {
  std::vector<uint16_t> words(a.size());
  Floats out(a.size());
  cpu.to_bf16(words.data(), a.data(), static_cast<int64_t>(a.size()));
  cpu.from_bf16(out.data(), words.data(), static_cast<int64_t>(a.size()));
  return out;
}

// One precision, all transposes, padded rows, beta != 0, on both backends: `gpu`'s gemm (or
// gemm_exact) against the CPU's fp32 sgemm within `tol` (with copies, the product on bf16
// copies, gemm_on_copies, and the reference the sgemm of A and B rounded to bf16 first).
// Returns the largest error over all cases, relative to each case's largest |reference|.
double check_gemm(Ops& gpu, Ops& cpu, bool exact, Tolerance tol, bool copies = false) {
  const float alpha = 0.75f, beta = 0.5f;
  struct Size {
    int M, N, K;
  };
  double worst = 0.0;
  for (Size size : {Size{6, 5, 4}, Size{67, 45, 33}, Size{130, 70, 300}}) {
    const int M = size.M, N = size.N, K = size.K;
    for (bool trans_a : {false, true}) {
      for (bool trans_b : {false, true}) {
        const int a_rows = trans_a ? K : M, lda = (trans_a ? M : K) + 3;
        const int b_rows = trans_b ? N : K, ldb = (trans_b ? K : N) + 2;
        const int ldc = N + 5;
        const Floats A = random_floats(static_cast<size_t>(a_rows) * lda, 1);
        const Floats B = random_floats(static_cast<size_t>(b_rows) * ldb, 2);
        const Floats C0 = random_floats(static_cast<size_t>(M) * ldc, 3);
        Floats want = C0;
        const Floats ref_a = copies ? bf16_rounded(cpu, A) : A;
        const Floats ref_b = copies ? bf16_rounded(cpu, B) : B;
        cpu.gemm(trans_a, trans_b, M, N, K, alpha, ref_a.data(), lda, ref_b.data(), ldb, beta,
                 want.data(), ldc);
        const Tensor dA = upload(A), dB = upload(B);
        Tensor dC = upload(C0);
        if (exact) {
          gpu.gemm_exact(trans_a, trans_b, M, N, K, alpha, dA.data(), lda, dB.data(), ldb, beta,
                         dC.data(), ldc);
        } else if (copies) {
          gemm_on_copies(gpu, trans_a, trans_b, M, N, K, alpha, dA.data(), lda, dB.data(), ldb, beta,
                         dC.data(), ldc);
        } else {
          gpu.gemm(trans_a, trans_b, M, N, K, alpha, dA.data(), lda, dB.data(), ldb, beta,
                   dC.data(), ldc);
        }
        const Floats got = download(dC);
        const std::string what = std::string(exact ? "gemm_exact " : "gemm ") +
                                 std::to_string(M) + "x" + std::to_string(N) + "x" +
                                 std::to_string(K) + (trans_a ? " A^T" : " A") +
                                 (trans_b ? " B^T" : " B");
        expect_close(got, want, tol, what);
        double max_want = 0.0, max_diff = 0.0;
        for (size_t i = 0; i < want.size(); ++i) {
          max_want = std::max(max_want, std::fabs(static_cast<double>(want[i])));
          max_diff = std::max(max_diff, std::fabs(static_cast<double>(got[i]) - want[i]));
        }
        worst = std::max(worst, max_diff / max_want);
        for (int i = 0; i < M; ++i)  // the padding of C's rows stays untouched
          for (int j = N; j < ldc; ++j)
            EXPECT_EQ(got[i * ldc + j], C0[i * ldc + j]) << what << " padding";
      }
    }
  }
  return worst;
}

TEST_F(CudaOps, Gemm) { check_gemm(*gpu, *cpu, false, kBf16); }
TEST_F(CudaOps, GemmExact) { check_gemm(*gpu, *cpu, true, kFp32Sum); }

// The input precision a product used, read off one value: every entry of A (256,256) is
// kProbe = 1 + 2^-9 + 2^-12, B the identity, so C = A exactly in fp32, 1 + 2^-9 where the
// inputs were rounded to TF32 (2^-12 is a quarter of its last place: rounded and truncated
// alike), and 1 where they were rounded to bf16 (2^-9 + 2^-12 is under half of its last
// place). Sizes aligned and large enough for tensor-core kernels; every entry must agree.
constexpr float kProbe = 1.0f + 0x1p-9f + 0x1p-12f, kProbeTf32 = 1.0f + 0x1p-9f, kProbeBf16 = 1.0f;
float probe_product(Ops& ops, bool exact, bool copies = false) {
  constexpr int n = 256;
  Floats identity(static_cast<size_t>(n) * n, 0.0f);
  for (int i = 0; i < n; ++i) identity[static_cast<size_t>(i) * n + i] = 1.0f;
  const Tensor A = upload(Floats(identity.size(), kProbe)), B = upload(identity);
  Tensor C = upload(Floats(identity.size(), 0.0f));
  if (exact) {
    ops.gemm_exact(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n);
  } else if (copies) {
    gemm_on_copies(ops, false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n);
  } else {
    ops.gemm(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n);
  }
  const Floats got = download(C);
  for (float x : got) EXPECT_EQ(x, got[0]) << "probe entries differ";
  return got[0];
}
const char* precision_name(float probe) {
  return probe == kProbe ? "fp32" : probe == kProbeTf32 ? "TF32" : probe == kProbeBf16 ? "bf16" : "unknown";
}

// train.matmul: tf32. Random products within TF32's bound of fp32's (measured in the
// emulator: 3.3e-4 of the largest value rounding, 7.4e-4 truncating; bf16 2.8e-3), merges
// (gemm_exact) fp32 on the same ops, and the probe above. The emulator rounds as the
// compute types say. cuBLAS may pick a more precise kernel than a compute type allows
// (FAST_16BF allows bf16 or TF32; FAST_TF32 allows TF32; NVIDIA_TF32_OVERRIDE=0 turns
// TF32 off), never a less precise one: on a GPU that is what is checked, and the
// precisions found are printed.
TEST_F(CudaOps, GemmTf32) {
  const std::unique_ptr<Ops> tf32 = cuda::make_cuda_ops(0, "tf32");
  check_gemm(*tf32, *cpu, false, kTf32);
  check_gemm(*tf32, *cpu, true, kFp32Sum);
  EXPECT_EQ(probe_product(*tf32, true), kProbe) << "gemm_exact must multiply in fp32";
  const float with_tf32 = probe_product(*tf32, false), with_bf16 = probe_product(*gpu, false);
  std::printf("CudaOps.GemmTf32: products with train.matmul tf32 read their inputs as %s, with bf16 as %s\n",
              precision_name(with_tf32), precision_name(with_bf16));
#ifdef RELORA_CUDA_EMULATED
  EXPECT_EQ(with_tf32, kProbeTf32);
  EXPECT_EQ(with_bf16, kProbeBf16);
#else
  EXPECT_TRUE(with_tf32 == kProbeTf32 || with_tf32 == kProbe) << precision_name(with_tf32);
  EXPECT_TRUE(with_bf16 == kProbeBf16 || with_bf16 == kProbeTf32 || with_bf16 == kProbe)
      << precision_name(with_bf16);
#endif
}

// The two steps of a product on bf16 copies, as LoraLinear's concatenated products use them
// on their own layouts: round_rows into a wider strided block (every word as the CPU's,
// scaled, the block's other words untouched), and gemm_on_words with every transpose and
// padded strides against the CPU's (exact products, fp32 sums in another order).
TEST_F(CudaOps, RoundRowsAndGemmOnWords) {
  const int rows = 7, cols = 13, src_ld = 17, dst_ld = 24;
  const Floats src = random_floats(static_cast<size_t>(rows) * src_ld, 4);
  for (float scale : {1.0f, 0.3f}) {
    std::vector<uint16_t> want(static_cast<size_t>(rows) * dst_ld, 0xabcd), got(want.size());
    cpu->round_rows(want.data(), dst_ld, src.data(), src_ld, rows, cols, scale);
    Tensor words = Tensor::zeros({static_cast<int64_t>(want.size())}, Device::cuda, DType::bf16);
    words.copy_from_host(std::vector<uint16_t>(want.size(), 0xabcd).data());
    gpu->round_rows(words.bf16(), dst_ld, upload(src).data(), src_ld, rows, cols, scale);
    words.copy_to_host(got.data());
    EXPECT_EQ(got, want) << "scale " << scale;
    EXPECT_EQ(want[cols], 0xabcd);  // past a row's columns: untouched
  }
  const float alpha = 0.75f, beta = 0.5f;
  const int M = 9, N = 5, K = 21;
  for (bool trans_a : {false, true}) {
    for (bool trans_b : {false, true}) {
      const int a_rows = trans_a ? K : M, lda = (trans_a ? M : K) + 3;
      const int b_rows = trans_b ? N : K, ldb = (trans_b ? K : N) + 6, ldc = N + 2;
      std::vector<uint16_t> a(static_cast<size_t>(a_rows) * lda), b(static_cast<size_t>(b_rows) * ldb);
      cpu->to_bf16(a.data(), random_floats(a.size(), 5).data(), static_cast<int64_t>(a.size()));
      cpu->to_bf16(b.data(), random_floats(b.size(), 6).data(), static_cast<int64_t>(b.size()));
      const Floats c0 = random_floats(static_cast<size_t>(M) * ldc, 7);
      Floats want = c0;
      cpu->gemm_on_words(trans_a, trans_b, M, N, K, alpha, a.data(), lda, b.data(), ldb, beta, want.data(), ldc);
      Tensor da = Tensor::zeros({static_cast<int64_t>(a.size())}, Device::cuda, DType::bf16);
      Tensor db = Tensor::zeros({static_cast<int64_t>(b.size())}, Device::cuda, DType::bf16);
      da.copy_from_host(a.data());
      db.copy_from_host(b.data());
      Tensor dc = upload(c0);
      gpu->gemm_on_words(trans_a, trans_b, M, N, K, alpha, da.bf16(), lda, db.bf16(), ldb, beta, dc.data(), ldc);
      const Floats got = download(dc);
      const std::string what = std::string("gemm_on_words") + (trans_a ? " A^T" : " A") + (trans_b ? " B^T" : " B");
      expect_close(got, want, kFp32Sum, what);
      for (int i = 0; i < M; ++i)  // the padding of C's rows stays untouched
        for (int j = N; j < ldc; ++j) EXPECT_EQ(got[i * ldc + j], c0[i * ldc + j]) << what << " padding";
    }
  }
}

// train.matmul: bf16_copy. The weight products are made on bf16 copies of both operands
// (nearest, ties to even: core/bf16.h), multiplied exactly with fp32 sums, so every product
// agrees with the CPU's sgemm of the rounded inputs to fp32 summation order, on a GPU too
// (bf16 storage leaves cuBLAS no other precision): all transposes, padded rows (the
// copies' rows padded to 8 words), beta != 0; the probe reads bf16. gemm itself (the
// adapters' thin products without copies, attention's) runs as bf16's, within bf16's
// bound. Merges stay fp32. K = 0 scales C.
TEST_F(CudaOps, GemmBf16Copy) {
  const std::unique_ptr<Ops> copy = cuda::make_cuda_ops(0, "bf16_copy");
  EXPECT_FALSE(gpu->products_on_words());
  EXPECT_TRUE(copy->products_on_words());
  const double worst = check_gemm(*copy, *cpu, false, kFp32Sum, true);
  std::printf("CudaOps.GemmBf16Copy: largest difference from the CPU's sgemm of bf16-rounded "
              "inputs %.2g of the largest value\n", worst);
  check_gemm(*copy, *cpu, false, kBf16);
  check_gemm(*copy, *cpu, true, kFp32Sum);
  EXPECT_EQ(probe_product(*copy, false, true), kProbeBf16);
  EXPECT_EQ(probe_product(*copy, true), kProbe) << "gemm_exact must multiply in fp32";
  const Tensor A = upload(Floats{1, 2, 3, 4}), B = upload(Floats{5, 6, 7, 8});  // (2,2) each
  Tensor C = upload(Floats{1, 1, 1, 1});
  gemm_on_copies(*copy, false, false, 2, 2, 0, 1.0f, A.data(), 1, B.data(), 2, 0.5f, C.data(), 2);
  EXPECT_EQ(download(C), Floats(4, 0.5f)) << "K = 0 scales C, multiplying nothing";
}

// A bf16 weight (relora.master_on_host): both backends multiply the same bf16 values
// exactly and sum in fp32, so they agree to fp32 summation order; the input's rounding
// (a_words) is bit for bit the CPU's. W padded (ldw), C padded (ldc), beta 1.
TEST_F(CudaOps, GemmBf16) {
  for (bool trans_w : {false, true}) {
    const int M = 67, N = 45, K = 300, ldw = (trans_w ? K : N) + 3, ldc = N + 5;
    const Floats A = random_floats(static_cast<size_t>(M) * K, 4);
    const Floats W = random_floats(static_cast<size_t>(trans_w ? N : K) * ldw, 5);
    const Floats C0 = random_floats(static_cast<size_t>(M) * ldc, 6);
    std::vector<uint16_t> w_words(W.size()), want_a_words(A.size()), got_a_words(A.size());
    cpu->to_bf16(w_words.data(), W.data(), static_cast<int64_t>(W.size()));
    Floats want = C0;
    cpu->gemm_bf16(trans_w, M, N, K, 0.5f, A.data(), w_words.data(), ldw, 1.0f, want.data(), ldc,
                   want_a_words.data());
    Tensor d_w = Tensor::zeros({static_cast<int64_t>(W.size())}, Device::cuda, DType::bf16);
    d_w.copy_from_host(w_words.data());
    Tensor d_a_words = Tensor::zeros({static_cast<int64_t>(A.size())}, Device::cuda, DType::bf16);
    Tensor C = upload(C0);
    gpu->gemm_bf16(trans_w, M, N, K, 0.5f, upload(A).data(), d_w.bf16(), ldw, 1.0f, C.data(), ldc,
                   d_a_words.bf16());
    expect_close(C, want, kFp32Sum, trans_w ? "gemm_bf16 W^T" : "gemm_bf16 W");
    d_a_words.copy_to_host(got_a_words.data());
    EXPECT_EQ(got_a_words, want_a_words);
  }
}

TEST_F(CudaOps, GemmEmptyKScalesAndBetaZeroIgnoresOldContents) {
  const Tensor A = upload(Floats{1, 2, 3, 4}), B = upload(Floats{5, 6, 7, 8});  // (2,2) each
  Tensor C = upload(Floats(4, NAN));
  gpu->gemm(false, false, 2, 2, 2, 1.0f, A.data(), 2, B.data(), 2, 0.0f, C.data(), 2);
  expect_close(C, Floats{19, 22, 43, 50}, kBf16, "beta 0");  // small integers: exact in bf16
  gpu->gemm(false, false, 2, 2, 0, 1.0f, A.data(), 1, B.data(), 2, 0.5f, C.data(), 2);
  EXPECT_EQ(download(C), (Floats{9.5f, 11, 21.5f, 25}));
  gpu->gemm_exact(false, false, 2, 2, 0, 1.0f, A.data(), 1, B.data(), 2, 0.0f, C.data(), 2);
  EXPECT_EQ(download(C), Floats(4, 0.0f));
}

// Backward adds each token's rows in position order (no atomics): the CPU's bits exactly.
// C = 300: more channels than a block's 256 threads.
TEST_F(CudaOps, Embedding) {
  const int V = 11, C = 300;
  Tokens tokens;
  for (int n = 0; n < 29; ++n) tokens.push_back((n * 7) % 5 + (n % 3 == 0 ? 6 : 0));  // repeats
  const int N = static_cast<int>(tokens.size());
  const Floats table = random_floats(static_cast<size_t>(V) * C, 10);
  const Tensor d_tokens = upload(tokens), d_table = upload(table);

  Floats want_out(static_cast<size_t>(N) * C);
  cpu->embedding_forward(want_out.data(), tokens.data(), table.data(), N, C);
  Tensor out = Tensor::zeros({N, C}, Device::cuda);
  gpu->embedding_forward(out.data(), d_tokens.i32(), d_table.data(), N, C);
  expect_close(out, want_out, kFp32, "embedding out");

  const Floats d_out = random_floats(static_cast<size_t>(N) * C, 11);
  Floats want_grad = random_floats(static_cast<size_t>(V) * C, 12);  // accumulates onto this
  Tensor grad = upload(want_grad);
  Tokens order(tokens.size());
  token_order(order.data(), tokens.data(), N);
  cpu->embedding_backward(want_grad.data(), d_out.data(), tokens.data(), order.data(), N, C);
  gpu->embedding_backward(grad.data(), upload(d_out).data(), d_tokens.i32(), upload(order).i32(), N, C);
  EXPECT_EQ(download(grad), want_grad);
}

TEST_F(CudaOps, GatherScatterColumns) {
  const int V = 23, r = 6;
  Tokens tokens;
  for (int n = 0; n < 31; ++n) tokens.push_back((n * 5) % 9 + (n % 4 == 0 ? 14 : 0));  // repeats
  const int N = static_cast<int>(tokens.size());
  const Floats a = random_floats(static_cast<size_t>(r) * V, 20);
  const Tensor d_tokens = upload(tokens);

  Floats want_cols(static_cast<size_t>(N) * r);
  cpu->gather_columns(want_cols.data(), a.data(), tokens.data(), N, r, V);
  Tensor cols = Tensor::zeros({N, r}, Device::cuda);
  gpu->gather_columns(cols.data(), upload(a).data(), d_tokens.i32(), N, r, V);
  expect_close(cols, want_cols, kFp32, "gather_columns");

  const Floats d_cols = random_floats(static_cast<size_t>(N) * r, 21);
  Floats want_da = random_floats(static_cast<size_t>(r) * V, 22);  // accumulates onto this
  Tensor da = upload(want_da);
  Tokens order(tokens.size());
  token_order(order.data(), tokens.data(), N);
  cpu->scatter_add_columns(want_da.data(), d_cols.data(), tokens.data(), order.data(), N, r, V);
  gpu->scatter_add_columns(da.data(), upload(d_cols).data(), d_tokens.i32(), upload(order).i32(), N, r,
                           V);
  EXPECT_EQ(download(da), want_da);  // in position order, as the CPU
}

TEST_F(CudaOps, Rmsnorm) {
  const float eps = 1e-5f;
  for (int C : {70, 1000}) {
    const int N = 13;
    const std::string tag = " C=" + std::to_string(C);
    const Floats x = random_floats(static_cast<size_t>(N) * C, 30);
    const Floats w = random_floats(C, 31, 0.5f, 1.5f);
    Floats want_out(x.size()), want_rstd(N);
    cpu->rmsnorm_forward(want_out.data(), want_rstd.data(), x.data(), w.data(), N, C, eps);
    const Tensor dx_in = upload(x), dw_in = upload(w);
    Tensor out = Tensor::zeros({N, C}, Device::cuda), rstd = Tensor::zeros({N}, Device::cuda);
    gpu->rmsnorm_forward(out.data(), rstd.data(), dx_in.data(), dw_in.data(), N, C, eps);
    expect_close(out, want_out, kFp32, "rmsnorm out" + tag);
    expect_close(rstd, want_rstd, kFp32, "rmsnorm rstd" + tag);

    // the CPU reference backward runs on the CPU's own rstd
    const Floats d_out = random_floats(x.size(), 32);
    const Floats dw_start = random_floats(C, 33);
    Floats want_dx(x.size()), want_dw = dw_start;
    cpu->rmsnorm_backward(want_dx.data(), want_dw.data(), d_out.data(), x.data(), w.data(),
                          want_rstd.data(), N, C);
    const Tensor cpu_rstd = upload(want_rstd);

    // with dw (accumulated onto a non-zero start), dx separate
    Tensor dx = Tensor::zeros({N, C}, Device::cuda), dw = upload(dw_start);
    gpu->rmsnorm_backward(dx.data(), dw.data(), upload(d_out).data(), dx_in.data(), dw_in.data(),
                          cpu_rstd.data(), N, C);
    expect_close(dx, want_dx, kFp32Sum, "rmsnorm dx" + tag);
    expect_close(dw, want_dw, kFp32Sum, "rmsnorm dw" + tag);

    // with dw, dx aliasing d_out
    Tensor in_place = upload(d_out), dw2 = upload(dw_start);
    gpu->rmsnorm_backward(in_place.data(), dw2.data(), in_place.data(), dx_in.data(),
                          dw_in.data(), cpu_rstd.data(), N, C);
    expect_close(in_place, want_dx, kFp32Sum, "rmsnorm dx in place" + tag);
    expect_close(dw2, want_dw, kFp32Sum, "rmsnorm dw (dx in place)" + tag);

    // frozen weight (dw null), dx aliasing d_out
    Tensor frozen = upload(d_out);
    gpu->rmsnorm_backward(frozen.data(), nullptr, frozen.data(), dx_in.data(), dw_in.data(),
                          cpu_rstd.data(), N, C);
    expect_close(frozen, want_dx, kFp32Sum, "rmsnorm dx frozen" + tag);
  }
}

TEST_F(CudaOps, Rope) {
  const int B = 2, T = 5, H = 3, D = 8;
  Floats cos(T * D / 2), sin(T * D / 2);
  rope_tables(cos.data(), sin.data(), T, D, 100.0f);
  const Tensor d_cos = upload(cos), d_sin = upload(sin);
  const Floats x = random_floats(static_cast<size_t>(B) * T * H * D, 40);

  Floats want = x;
  cpu->rope_forward(want.data(), cos.data(), sin.data(), B, T, H, D);
  Tensor got = upload(x);
  gpu->rope_forward(got.data(), d_cos.data(), d_sin.data(), B, T, H, D);
  expect_close(got, want, kFp32, "rope forward");

  const Floats dx = random_floats(x.size(), 41);
  Floats want_dx = dx;
  cpu->rope_backward(want_dx.data(), cos.data(), sin.data(), B, T, H, D);
  Tensor got_dx = upload(dx);
  gpu->rope_backward(got_dx.data(), d_cos.data(), d_sin.data(), B, T, H, D);
  expect_close(got_dx, want_dx, kFp32, "rope backward");
}

// Forward (out, and the saved lse against a double computation) and backward against the CPU.
void check_attention(Ops& gpu, Ops& cpu, int B, int T, int H, int D) {
  const std::string tag = " B=" + std::to_string(B) + " T=" + std::to_string(T) +
                          " H=" + std::to_string(H) + " D=" + std::to_string(D);
  const size_t n = static_cast<size_t>(B) * T * H * D;
  const int C = H * D;
  const Floats q = random_floats(n, 50, -2.0f, 2.0f), k = random_floats(n, 51, -2.0f, 2.0f);
  const Floats v = random_floats(n, 52);
  Floats want_out(n), cpu_saved(cpu.attention_saved_floats(B, T, H));
  Floats cpu_scratch(cpu.attention_scratch_floats(B, T, H, D));
  cpu.attention_forward(want_out.data(), cpu_saved.data(), q.data(), k.data(), v.data(),
                        cpu_scratch.data(), B, T, H, D);

  const Tensor dq_in = upload(q), dk_in = upload(k), dv_in = upload(v);
  ASSERT_EQ(gpu.attention_saved_floats(B, T, H), static_cast<int64_t>(B) * H * T);
  Tensor out = Tensor::zeros({static_cast<int64_t>(n)}, Device::cuda);
  Tensor saved = Tensor::zeros({gpu.attention_saved_floats(B, T, H)}, Device::cuda);
  Tensor scratch = Tensor::zeros({gpu.attention_scratch_floats(B, T, H, D)}, Device::cuda);
  scratch.copy_from_host(Floats(scratch.numel(), NAN).data());  // scratch holds nothing useful
  gpu.attention_forward(out.data(), saved.data(), dq_in.data(), dk_in.data(), dv_in.data(),
                        scratch.data(), B, T, H, D);
  expect_close(out, want_out, kBf16, "attention out" + tag);

  Floats want_lse(static_cast<size_t>(B) * H * T);  // (B,H,T)
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        std::vector<double> s(t + 1);
        for (int j = 0; j <= t; ++j) {
          double dot = 0.0;
          for (int d = 0; d < D; ++d) {
            dot += static_cast<double>(q[(static_cast<size_t>(b) * T + t) * C + h * D + d]) *
                   k[(static_cast<size_t>(b) * T + j) * C + h * D + d];
          }
          s[j] = dot / std::sqrt(static_cast<double>(D));
        }
        const double max_s = *std::max_element(s.begin(), s.end());
        double sum = 0.0;
        for (double sj : s) sum += std::exp(sj - max_s);
        want_lse[(static_cast<size_t>(b) * H + h) * T + t] = static_cast<float>(max_s + std::log(sum));
      }
  expect_close(saved, want_lse, kBf16, "attention lse" + tag);

  const Floats d_out = random_floats(n, 53);
  Floats want_dq(n), want_dk(n), want_dv(n);
  cpu.attention_backward(want_dq.data(), want_dk.data(), want_dv.data(), d_out.data(),
                         want_out.data(), cpu_saved.data(), q.data(), k.data(), v.data(),
                         cpu_scratch.data(), B, T, H, D);
  Tensor dq = Tensor::zeros({static_cast<int64_t>(n)}, Device::cuda);
  Tensor dk = Tensor::zeros({static_cast<int64_t>(n)}, Device::cuda);
  Tensor dv = Tensor::zeros({static_cast<int64_t>(n)}, Device::cuda);
  scratch.copy_from_host(Floats(scratch.numel(), NAN).data());
  gpu.attention_backward(dq.data(), dk.data(), dv.data(), upload(d_out).data(), out.data(),
                         saved.data(), dq_in.data(), dk_in.data(), dv_in.data(), scratch.data(), B,
                         T, H, D);
  // dq, dk: with T = 1 the reference is exactly 0 (one key), so bf16 noise needs a floor
  const Tolerance bf16_floor{kBf16.rel, 1e-4, true};
  expect_close(dq, want_dq, bf16_floor, "attention dq" + tag);
  expect_close(dk, want_dk, bf16_floor, "attention dk" + tag);
  expect_close(dv, want_dv, kBf16, "attention dv" + tag);
}

// Head sizes 16 and 8 take the cuBLAS path; 32..128 the fused kernels (tiles of 64: one
// partial tile, several with a partial last one, a single position).
TEST_F(CudaOps, Attention) { check_attention(*gpu, *cpu, 2, 64, 4, 16); }
TEST_F(CudaOps, FusedAttention) {
  check_attention(*gpu, *cpu, 2, 37, 3, 64);
  check_attention(*gpu, *cpu, 2, 200, 2, 64);
  check_attention(*gpu, *cpu, 1, 130, 2, 128);
  check_attention(*gpu, *cpu, 3, 1, 2, 64);
  check_attention(*gpu, *cpu, 2, 100, 2, 48);  // llama_250m's head size
  check_attention(*gpu, *cpu, 1, 70, 3, 32);
}
TEST_F(CudaOps, AttentionSingleHeadOddSizes) { check_attention(*gpu, *cpu, 3, 37, 1, 8); }
TEST_F(CudaOps, AttentionOnePosition) { check_attention(*gpu, *cpu, 2, 1, 4, 16); }
// T = 6144: one head's scores and their gradient take 302 MB, so a 1 GiB pass holds 3 of
// the 4 heads: passes of 3 heads and 1 (the CPU reference keeps 604 MB of probabilities).
TEST_F(CudaOps, AttentionLongSequenceInSeveralPasses) {
#ifdef RELORA_CUDA_EMULATED
  GTEST_SKIP() << "about 3 minutes in the emulator (113M threads): GPU only";
#endif
  device_memory()->reserve(int64_t{3} << 30, 0);
  check_attention(*gpu, *cpu, 1, 6144, 4, 8);
}

TEST_F(CudaOps, Swiglu) {
  const int64_t n = 1003;
  const Floats g = random_floats(n, 60, -4.0f, 4.0f), u = random_floats(n, 61, -2.0f, 2.0f);
  const Tensor d_g = upload(g), d_u = upload(u);
  Floats want(n);
  cpu->swiglu_forward(want.data(), g.data(), u.data(), n);
  Tensor out = Tensor::zeros({n}, Device::cuda);
  gpu->swiglu_forward(out.data(), d_g.data(), d_u.data(), n);
  expect_close(out, want, kFp32, "swiglu out");

  const Floats d_out = random_floats(n, 62);
  Floats want_dg(n), want_du(n);
  cpu->swiglu_backward(want_dg.data(), want_du.data(), d_out.data(), g.data(), u.data(), n);
  Tensor dg = Tensor::zeros({n}, Device::cuda), du = Tensor::zeros({n}, Device::cuda);
  gpu->swiglu_backward(dg.data(), du.data(), upload(d_out).data(), d_g.data(), d_u.data(), n);
  expect_close(dg, want_dg, kFp32, "swiglu dg");
  expect_close(du, want_du, kFp32, "swiglu du");
}

TEST_F(CudaOps, CrossEntropy) {
  const int N = 7, V = 1000;
  const float d_loss_scale = 0.25f;
  const Floats logits = random_floats(static_cast<size_t>(N) * V, 70, -5.0f, 5.0f);
  Tokens targets;
  for (int n = 0; n < N; ++n) targets.push_back((n * 389 + 11) % V);
  const Tensor d_targets = upload(targets);

  // d_logits aliasing logits, on both backends
  Floats want_grad = logits, want_losses(N);
  const double want_sum = cpu->cross_entropy(want_grad.data(), want_losses.data(),
                                             want_grad.data(), targets.data(), N, V, d_loss_scale);
  Tensor grad = upload(logits), losses = Tensor::zeros({N}, Device::cuda);
  const double got_sum = gpu->cross_entropy(grad.data(), losses.data(), grad.data(),
                                            d_targets.i32(), N, V, d_loss_scale);
  EXPECT_NEAR(got_sum, want_sum, 1e-5 * std::fabs(want_sum) + 1e-6) << "loss sum (in place)";
  expect_close(losses, want_losses, kFp32, "losses (in place)");
  expect_close(grad, want_grad, kFp32, "d_logits (in place)");

  // no gradient: losses only, logits untouched
  const Tensor d_logits_in = upload(logits);
  Tensor losses2 = Tensor::zeros({N}, Device::cuda);
  const double got_sum2 = gpu->cross_entropy(nullptr, losses2.data(), d_logits_in.data(),
                                             d_targets.i32(), N, V, d_loss_scale);
  EXPECT_NEAR(got_sum2, want_sum, 1e-5 * std::fabs(want_sum) + 1e-6) << "loss sum (no grad)";
  expect_close(losses2, want_losses, kFp32, "losses (no grad)");
  EXPECT_EQ(download(d_logits_in), logits);
}

// 70 tensors (more than one launch holds), sizes 0 to 300007, each with its own step and
// decay, in one call.
TEST_F(CudaOps, AdamwManyTensors) {
  const AdamwHyper hyper{1e-3f, 0.9f, 0.95f, 1e-8f};
  const int kTensors = 70;
  std::vector<Floats> param(kTensors), grad(kTensors), m(kTensors), v(kTensors);
  std::vector<Tensor> d_param, d_grad, d_m, d_v;
  std::vector<AdamwTensor> on_cpu, on_gpu;
  for (int t = 0; t < kTensors; ++t) {
    const size_t n = t == 0 ? 0 : t == 1 ? 300007 : (t * 1237) % 9000 + 1;
    const int64_t step = 1 + t % 9;
    param[t] = random_floats(n, 80 + 4 * t);
    grad[t] = random_floats(n, 81 + 4 * t);
    m[t] = random_floats(n, 82 + 4 * t, -0.1f, 0.1f);
    v[t] = random_floats(n, 83 + 4 * t, 0.0f, 0.01f);
    if (step == 1) {  // the first step starts from zero moments
      std::fill(m[t].begin(), m[t].end(), 0.0f);
      std::fill(v[t].begin(), v[t].end(), 0.0f);
    }
    d_param.push_back(upload(param[t]));
    d_grad.push_back(upload(grad[t]));
    d_m.push_back(upload(m[t]));
    d_v.push_back(upload(v[t]));
    const float decay = t % 2 ? 0.1f : 0.0f;
    on_cpu.push_back({param[t].data(), grad[t].data(), m[t].data(), v[t].data(),
                      static_cast<int64_t>(n), decay, step});
    on_gpu.push_back({d_param[t].data(), d_grad[t].data(), d_m[t].data(), d_v[t].data(),
                      static_cast<int64_t>(n), decay, step});
  }
  cpu->adamw(on_cpu, hyper);
  gpu->adamw(on_gpu, hyper);
  for (int t = 0; t < kTensors; ++t) {
    const std::string tag = " tensor " + std::to_string(t);
    expect_close(d_param[t], param[t], kFp32, "adamw param" + tag);
    expect_close(d_m[t], m[t], kFp32, "adamw m" + tag);
    expect_close(d_v[t], v[t], kFp32, "adamw v" + tag);
  }
}

// The same elements zeroed as on the CPU, bit for bit: distinct magnitudes, then heavy
// ties (|m| from {0, 0.5, 1}) where the index order decides, over several tiles.
TEST_F(CudaOps, PruneSmallest) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{262147}}) {
    for (bool ties : {false, true}) {
      Floats m0 = random_floats(n, 95, -1.0f, 1.0f);
      if (ties)
        for (int64_t i = 0; i < n; ++i) m0[i] = 0.5f * static_cast<float>((i * 7919) % 3) * (i % 2 ? 1.0f : -1.0f);
      const Floats v0 = random_floats(n, 96, 0.5f, 1.0f);
      for (int64_t k : {int64_t{0}, n / 3, (n * 99) / 100, n}) {
        const std::string tag =
            " n=" + std::to_string(n) + " k=" + std::to_string(k) + (ties ? " ties" : "");
        Floats m = m0, v = v0;
        Tensor d_m = upload(m0), d_v = upload(v0);
        cpu->prune_smallest(m.data(), v.data(), n, k);
        gpu->prune_smallest(d_m.data(), d_v.data(), n, k);
        EXPECT_EQ(download(d_m), m) << "m" << tag;
        EXPECT_EQ(download(d_v), v) << "v" << tag;
      }
    }
  }
  // non-finite moments (NaN above infinity above numbers), compared bit for bit
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const Floats m0 = {nan, 1.0f, -inf, -0.0f, 2.0f, -nan, inf, 0.0f, -3.0f};
  const int64_t n = static_cast<int64_t>(m0.size());
  for (int64_t k = 0; k <= n; ++k) {
    Floats m = m0, v(m0.size(), 1.0f);
    Tensor d_m = upload(m0), d_v = upload(v);
    cpu->prune_smallest(m.data(), v.data(), n, k);
    gpu->prune_smallest(d_m.data(), d_v.data(), n, k);
    const Floats gpu_m = download(d_m);
    EXPECT_EQ(std::memcmp(gpu_m.data(), m.data(), m.size() * sizeof(float)), 0) << "non-finite k=" << k;
    EXPECT_EQ(download(d_v), v) << "non-finite k=" << k;
  }
}

TEST_F(CudaOps, SumSquares) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{300007}}) {
    const Floats x = random_floats(n, 90, -3.0f, 3.0f);
    const double want = cpu->sum_squares(x.data(), n);
    EXPECT_NEAR(gpu->sum_squares(upload(x).data(), n), want, 1e-10 * want) << "n=" << n;
  }
  EXPECT_EQ(gpu->sum_squares(nullptr, 0), 0.0);
}

TEST_F(CudaOps, ScaleAndAxpy) {
  const int64_t n = 1001;
  const Floats x = random_floats(n, 100), y = random_floats(n, 101);
  Floats want_scaled = x;
  cpu->scale(want_scaled.data(), n, -0.37f);
  Tensor scaled = upload(x);
  gpu->scale(scaled.data(), n, -0.37f);
  expect_close(scaled, want_scaled, kFp32, "scale");

  Floats want_y = y;
  cpu->axpy(want_y.data(), x.data(), n, 1.7f);
  Tensor d_y = upload(y);
  gpu->axpy(d_y.data(), upload(x).data(), n, 1.7f);
  expect_close(d_y, want_y, kFp32, "axpy");
}

// The device conversions give the CPU's words bit for bit, specials included.
TEST_F(CudaOps, Bf16Conversions) {
  Floats x = random_floats(100003, 102, -1e4f, 1e4f);
  x[0] = std::numeric_limits<float>::infinity();
  x[1] = -0.0f;
  x[2] = std::numeric_limits<float>::max();
  x[3] = std::ldexp(1.0f, -130);
  x[4] = 1.0f + std::ldexp(1.0f, -8);  // a tie: rounds to even
  x[5] = std::numeric_limits<float>::quiet_NaN();
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint16_t> want(x.size()), got(x.size());
  cpu->to_bf16(want.data(), x.data(), n);
  Tensor words = Tensor::zeros({n}, Device::cuda, DType::bf16);
  gpu->to_bf16(words.bf16(), upload(x).data(), n);
  words.copy_to_host(got.data());
  EXPECT_TRUE(std::isnan(bf16_to_float(got[5])));
  got[5] = want[5];  // NaN payloads may differ
  EXPECT_EQ(got, want);
  Floats want_wide(x.size());
  cpu->from_bf16(want_wide.data(), want.data(), n);
  Tensor wide = Tensor::zeros({n}, Device::cuda);
  gpu->from_bf16(wide.data(), words.bf16(), n);
  Floats got_wide = download(wide);
  EXPECT_TRUE(std::isnan(got_wide[5]) && std::isnan(want_wide[5]));
  got_wide[5] = want_wide[5] = 0.0f;  // NaN != NaN: checked above
  EXPECT_EQ(got_wide, want_wide);
}

// Which head sizes the fused kernels take, by the shared memory a block may opt into: every
// one with kernels on H100/H200 (227 KiB) and A100 (163 KiB), up to 64 on the 99 KiB of
// sm_86/sm_89 parts (the others fall back to the cuBLAS products there). Host code only:
// runs without a GPU.
TEST(FlashAttentionSharedMemory, HeadSizesThatFitTheDevice) {
  constexpr int kHopper = 227 * 1024, kA100 = 163 * 1024, kAda = 99 * 1024;
  int previous = 0;
  for (int D = 32; D <= 128; D += 16) {
    const int bytes = cuda::flash_attention_smem_bytes(D);
    EXPECT_GT(bytes, previous) << "D=" << D;  // grows with the tiles' width
    previous = bytes;
    EXPECT_TRUE(cuda::flash_attention_supported(D, kHopper)) << "D=" << D;
    EXPECT_TRUE(cuda::flash_attention_supported(D, kA100)) << "D=" << D;
    EXPECT_EQ(cuda::flash_attention_supported(D, kAda), D <= 64) << "D=" << D << ": " << bytes << " bytes";
    EXPECT_FALSE(cuda::flash_attention_supported(D, bytes - 1)) << "D=" << D;
  }
  for (int D : {8, 16, 40, 144, 256}) {
    EXPECT_EQ(cuda::flash_attention_smem_bytes(D), 0) << "D=" << D;
    EXPECT_FALSE(cuda::flash_attention_supported(D, kHopper)) << "D=" << D;
  }
}

}  // namespace
}  // namespace relora
