// The emulator's self-check: each kernel of buggy_kernels.cu has one known bug, and the
// emulator must report it (an error naming the kernel, block and thread) or expose it
// (the poisoned shared memory reaches the output), in every schedule (SIM_SCHED, SIM_SEED,
// SIM_WMMA_BARRIER); the fixed versions must pass. Without these, a suite that passes
// could be one that cannot fail. What cuda_sim.h cannot detect is not tested here.
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "buggy_kernels.h"
#include "core/errors.h"
#include "sim_test_support.h"

namespace relora {
namespace {

using namespace cuda_sim_self_check;

class CudaSimSelfCheck : public CudaSim {
 protected:
  // Exactly one recorded error, containing every one of `parts`.
  static void expect_one_error(const std::vector<std::string>& parts) {
    const std::vector<std::string> errors = sim::take_errors();
    ASSERT_EQ(errors.size(), 1u) << (errors.empty() ? "no error" : errors.back());
    for (const std::string& part : parts) EXPECT_NE(errors[0].find(part), std::string::npos) << errors[0];
  }
};

int count_nan(const Floats& x) {
  int n = 0;
  for (float v : x) n += std::isnan(v);
  return n;
}

TEST_F(CudaSimSelfCheck, MissingSyncthreadsReadsPoison) {
  DeviceBuffer<float> correct(128), buggy(128);
  launch_exchange_across_warps(correct.data(), true);
  launch_exchange_across_warps(buggy.data(), false);
  const Floats got = correct.host();
  for (int t = 0; t < 128; ++t) ASSERT_EQ(got[t], static_cast<float>((t + 32) % 128)) << t;
  EXPECT_GT(count_nan(buggy.host()), 0);
}

TEST_F(CudaSimSelfCheck, MissingSyncwarpReadsPoison) {
  DeviceBuffer<float> correct(32), buggy(32);
  launch_exchange_within_warp(correct.data(), true);
  launch_exchange_within_warp(buggy.data(), false);
  const Floats got = correct.host();
  for (int l = 0; l < 32; ++l) ASSERT_EQ(got[l], static_cast<float>((l + 1) % 32)) << l;
  EXPECT_GT(count_nan(buggy.host()), 0);
}

TEST_F(CudaSimSelfCheck, MissingSyncwarpAfterWmmaStoreReadsPoison) {
  DeviceBuffer<float> correct(32), buggy(32);
  launch_read_wmma_store(correct.data(), true);
  launch_read_wmma_store(buggy.data(), false);
  EXPECT_EQ(correct.host(), Floats(32, 1.0f));
  EXPECT_GT(count_nan(buggy.host()), 0);
}

TEST_F(CudaSimSelfCheck, SharedMemoryOverflowIsReported) {
  launch_write_shared(1023);
  EXPECT_TRUE(sim::take_errors().empty());
  EXPECT_THROW(launch_write_shared(1024), InternalError);  // an illegal address, as on the device
  expect_one_error({"out-of-bounds", "0 bytes past the end of dynamic shared memory (4096 bytes)",
                    "write_shared_kernel", "block (0,0,0) thread (5,0,0)"});
}

TEST_F(CudaSimSelfCheck, DeviceBufferOverreadIsReported) {
  const int n = 200;
  DeviceBuffer<float> in(Floats(n, 1.0f)), out(n);
  EXPECT_THROW(launch_shift_left(out.data(), in.data(), n), InternalError);
  expect_one_error({"0 bytes past the end of a device buffer (800 bytes)", "shift_left_kernel",
                    "block (1,0,0) thread (71,0,0)"});
}

TEST_F(CudaSimSelfCheck, DeadlockIsReported) {
  EXPECT_THROW(launch_deadlock(), InternalError);
  expect_one_error({"deadlock", "deadlock_kernel", "threads 0..0 wait at __syncwarp",
                    "threads 1..63 wait at __syncthreads"});
}

TEST_F(CudaSimSelfCheck, DivergentSyncthreadsIsReported) {
  EXPECT_THROW(launch_divergent_syncthreads(), InternalError);
  expect_one_error({"__syncthreads reached at different program points", "buggy_kernels.cu"});
}

TEST_F(CudaSimSelfCheck, ShuffleFromExitedLanesIsReported) {
  DeviceBuffer<float> out(16);
  EXPECT_THROW(launch_shuffle_from_exited_lanes(out.data()), InternalError);
  const std::vector<std::string> errors = sim::take_errors();
  ASSERT_FALSE(errors.empty());
  EXPECT_NE(errors[0].find("exited"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("__shfl_xor_sync"), std::string::npos) << errors[0];
}

TEST_F(CudaSimSelfCheck, BadLaunchConfigurationFails) {
  launch_empty(1024, 48 * 1024);
  EXPECT_TRUE(sim::take_errors().empty());
  EXPECT_THROW(launch_empty(1025, 0), InternalError);
  expect_one_error({"invalid launch configuration", "block (1025,1,1)", "empty_kernel"});
  EXPECT_THROW(launch_empty(32, 48 * 1024 + 16), InternalError);
  expect_one_error({"49168 bytes of dynamic shared memory", "cudaFuncSetAttribute"});
}

TEST_F(CudaSimSelfCheck, HostPointerArgumentIsReported) {
  std::vector<float> host(100);
  DeviceBuffer<float> in(Floats(200, 1.0f));
  EXPECT_THROW(launch_shift_left(host.data(), in.data(), 100), InternalError);
  expect_one_error({"argument 0 points to host memory", "shift_left_kernel"});
}

// Pieces of one allocation (relora's arena: CudaMemory notes every tensor): a copy running
// from one tensor into the next, and a kernel given a released tensor, are reported; the
// released tensor reads as NaN again.
TEST_F(CudaSimSelfCheck, TensorsInOneAllocationAreHeldApart) {
  void* block = nullptr;
  ASSERT_EQ(cudaMalloc(&block, 1024), cudaSuccess);
  float* first = static_cast<float*>(block);
  float* second = first + 128;
  sim::note_piece(first, 512);
  sim::note_piece(second, 512);
  const std::vector<float> host(129, 1.0f);
  EXPECT_EQ(cudaMemcpyAsync(second, host.data(), 512, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpyAsync(first, host.data(), 512, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_TRUE(sim::take_errors().empty());
  EXPECT_EQ(cudaMemcpyAsync(first, host.data(), 516, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  expect_one_error({"to device memory, running past the end of its allocation or tensor"});
  sim::forget_piece(second);
  EXPECT_TRUE(std::isnan(second[0]));
  DeviceBuffer<float> in(Floats(200, 1.0f));
  // (second itself is also the end of first: a valid pointer to an empty range there)
  EXPECT_THROW(launch_shift_left(second + 1, in.data(), 100), InternalError);
  expect_one_error({"argument 0 points to device memory outside every live tensor", "shift_left_kernel"});
  sim::forget_piece(first);
  EXPECT_EQ(cudaFree(block), cudaSuccess);
}

// CudaMemory leaves a red zone after every tensor of its arena in the emulated build: a
// kernel reading past a tensor reads NaN there, and one writing past it is reported when
// the tensor is given back.
TEST_F(CudaSimSelfCheck, RedZonesShowOverrunsBetweenTensors) {
  constexpr size_t kTensor = 512, kZone = sim::kRedZoneBytes;
  void* block = nullptr;
  ASSERT_EQ(cudaMalloc(&block, 2 * (kTensor + kZone)), cudaSuccess);
  float* first = static_cast<float*>(block);
  float* second = first + (kTensor + kZone) / sizeof(float);
  sim::note_piece(first, kTensor, kZone);
  sim::note_piece(second, kTensor, kZone);
  const std::vector<float> ones(128, 1.0f);
  EXPECT_EQ(cudaMemcpyAsync(first, ones.data(), kTensor, cudaMemcpyHostToDevice), cudaSuccess);
  launch_shift_left(second, first, 128);  // reads first[128], in first's red zone
  EXPECT_EQ(second[126], 1.0f);
  EXPECT_TRUE(std::isnan(second[127]));
  EXPECT_TRUE(sim::take_errors().empty());  // a read shows only as the NaN it brings
  DeviceBuffer<float> in(Floats(200, 1.0f));
  launch_shift_left(first, in.data(), 129);  // writes first[128]
  EXPECT_TRUE(sim::take_errors().empty());
  sim::forget_piece(first);
  expect_one_error({"4 of the 256 bytes after a tensor of 512 bytes were written"});
  sim::forget_piece(second);
  EXPECT_EQ(cudaFree(block), cudaSuccess);
}

// Page-locking works on whole pages, as the driver's does: a second range in a page that
// is already registered is refused (relora pins each host master in pages of its own).
TEST_F(CudaSimSelfCheck, PinningTwoRangesOfOnePageIsRefused) {
  const size_t page = sim::page_size();
  char* host = static_cast<char*>(std::aligned_alloc(page, 2 * page));
  ASSERT_NE(host, nullptr);
  EXPECT_EQ(cudaHostRegister(host, 100, cudaHostRegisterDefault), cudaSuccess);
  EXPECT_EQ(cudaHostRegister(host + 200, 100, cudaHostRegisterDefault), cudaErrorHostMemoryAlreadyRegistered);
  expect_one_error({"pages overlap those of a registered one", "cudaHostRegister"});
  EXPECT_EQ(cudaHostRegister(host + page, 100, cudaHostRegisterDefault), cudaSuccess);
  EXPECT_EQ(cudaHostUnregister(host), cudaSuccess);
  EXPECT_EQ(cudaHostUnregister(host + page), cudaSuccess);
  std::free(host);
}

// After a launch abandoned by a fault or a deadlock, the fibers start afresh: later
// launches, with blocks of other sizes too, compute correctly (and a second fault is
// caught like the first).
TEST_F(CudaSimSelfCheck, LaunchesAfterAbandonedOnesRunCorrectly) {
  for (int round = 0; round < 2; ++round) {
    EXPECT_THROW(launch_write_shared(1024), InternalError);
    EXPECT_EQ(sim::take_errors().size(), 1u);
    EXPECT_THROW(launch_deadlock(), InternalError);
    EXPECT_EQ(sim::take_errors().size(), 1u);
    for (int threads : {32, 1024}) launch_empty(threads, 0);
    DeviceBuffer<float> correct(128);
    launch_exchange_across_warps(correct.data(), true);
    const Floats got = correct.host();
    for (int t = 0; t < 128; ++t) ASSERT_EQ(got[t], static_cast<float>((t + 32) % 128)) << t;
    EXPECT_TRUE(sim::take_errors().empty());
  }
}

// The runtime's copies: the kind must match where the pointers live, and the bytes must
// stay inside the device allocation.
TEST_F(CudaSimSelfCheck, CopyInTheWrongDirectionIsReported) {
  DeviceBuffer<float> device(16);
  std::vector<float> host(17, 1.0f);
  EXPECT_EQ(cudaMemcpyAsync(device.data(), host.data(), 64, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_TRUE(sim::take_errors().empty());
  EXPECT_EQ(cudaMemcpyAsync(device.data(), host.data(), 64, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  expect_one_error({"64 bytes from host memory to device memory with kind 2", "cudaMemcpyAsync"});
  EXPECT_EQ(cudaMemcpyAsync(device.data(), host.data(), 68, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  expect_one_error({"to device memory, running past the end of its allocation or tensor"});
}

// cuBLAS's column-major semantics, and the checks of its arguments and operands.
TEST_F(CudaSimSelfCheck, ProductsAreColumnMajorAndChecked) {
  cublasHandle_t handle = nullptr;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  DeviceBuffer<float> a(Floats{1, 3, 2, 4}), b(Floats{1, 1}), c(2);  // A = [[1,2],[3,4]]
  const float one = 1.0f, zero = 0.0f;
  const auto product = [&](cublasOperation_t op_a, int lda, int m) {
    return cublasGemmEx(handle, op_a, CUBLAS_OP_N, m, 1, 2, &one, a.data(), CUDA_R_32F, lda, b.data(),
                        CUDA_R_32F, 2, &zero, c.data(), CUDA_R_32F, 2, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT);
  };
  EXPECT_EQ(product(CUBLAS_OP_N, 2, 2), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(c.host(), (Floats{3, 7}));  // A (1,1)
  EXPECT_EQ(product(CUBLAS_OP_T, 2, 2), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(c.host(), (Floats{4, 6}));  // A^T (1,1)
  EXPECT_TRUE(sim::take_errors().empty());
  EXPECT_EQ(product(CUBLAS_OP_N, 3, 2), CUBLAS_STATUS_INVALID_VALUE);  // lda 3: 1 float past A
  expect_one_error({"operand A (20 bytes from its pointer, 1 batch entries)", "running past the end",
                    "cublasGemmEx"});
  EXPECT_EQ(product(CUBLAS_OP_N, 1, 2), CUBLAS_STATUS_INVALID_VALUE);  // lda < m
  expect_one_error({"lda=1", "cuBLAS rejects them"});
  EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 1, 1, &one, a.data(), CUDA_R_32F, 2, b.data(),
                         CUDA_R_32F, 1, &zero, a.data() + 1, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);  // A(2,1) is a[0..1], C(2,1) a[1..2]
  expect_one_error({"operand C overlaps operand A"});
}

// CUBLAS_COMPUTE_32F_FAST_TF32's inputs as cvt.rna.tf32.f32 rounds them: 10 fraction bits,
// ties away from zero (both signs), a carry into the exponent, overflow to infinity,
// infinities and NaN unchanged.
TEST_F(CudaSimSelfCheck, Tf32RoundingIsNearestWithTiesAway) {
  EXPECT_EQ(sim::round_to_tf32(1.0f + 0x1p-11f), 1.0f + 0x1p-10f);      // a tie: away from zero
  EXPECT_EQ(sim::round_to_tf32(-(1.0f + 0x1p-11f)), -(1.0f + 0x1p-10f));
  EXPECT_EQ(sim::round_to_tf32(1.0f + 0x1p-11f - 0x1p-23f), 1.0f);       // just under half
  EXPECT_EQ(sim::round_to_tf32(1.0f + 0x1p-10f + 0x1p-12f), 1.0f + 0x1p-10f);
  EXPECT_EQ(sim::round_to_tf32(2.0f - 0x1p-11f), 2.0f);                   // carry into the exponent
  EXPECT_EQ(sim::round_to_tf32(std::numeric_limits<float>::max()), INFINITY);  // past TF32's largest
  EXPECT_EQ(sim::round_to_tf32(-INFINITY), -INFINITY);
  EXPECT_TRUE(std::isnan(sim::round_to_tf32(NAN)));
}

}  // namespace
}  // namespace relora
