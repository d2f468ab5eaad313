// The row kernels of src/backend/cuda/kernels_norm.cu (RMSNorm forward and backward, fused
// softmax + cross-entropy), emulated, against the CPU backend with tests/cuda's fp32
// tolerances. Widths around the block sizes (256 and 512 threads) and the dw kernel's 8
// columns per block: fewer columns than threads, partial warps of work, several strides.
// Cannot detect what cuda_sim.h cannot; block_reduce's warp_results is a static
// __shared__ array, so a race on it across blocks would not show.
#include <cmath>
#include <string>

#include "sim_test_support.h"

namespace relora {
namespace {

void check_rmsnorm(Ops& cpu, int N, int C) {
  SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
  const float eps = 1e-5f;
  const size_t n = static_cast<size_t>(N) * C;
  const Floats x = random_floats(n, 30, -2.0f, 2.0f), w = random_floats(C, 31, 0.5f, 1.5f);
  const Floats d_out = random_floats(n, 32), dw_start = random_floats(C, 33);

  Floats out(n), rstd(N);  // x(N,C), w(C) -> out(N,C), rstd(N)
  cpu.rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  DeviceBuffer<float> dev_x(x), dev_w(w), dev_out(n), dev_rstd(N);
  cuda::launch_rmsnorm_forward(nullptr, dev_out.data(), dev_rstd.data(), dev_x.data(), dev_w.data(), N, C, eps);
  expect_close(dev_out.host(), out, kFp32, "rmsnorm out");
  expect_close(dev_rstd.host(), rstd, kFp32, "rmsnorm rstd");

  // backward on the CPU's rstd; dw(C) accumulates onto dw_start
  Floats dx(n), dw = dw_start;
  cpu.rmsnorm_backward(dx.data(), dw.data(), d_out.data(), x.data(), w.data(), rstd.data(), N, C);
  DeviceBuffer<float> cpu_rstd(rstd), dev_d_out(d_out), dev_dx(n), dev_dw(dw_start);
  cuda::launch_rmsnorm_backward(nullptr, dev_dx.data(), dev_dw.data(), dev_d_out.data(), dev_x.data(),
                                dev_w.data(), cpu_rstd.data(), N, C);
  expect_close(dev_dx.host(), dx, kFp32Sum, "rmsnorm dx");
  expect_close(dev_dw.host(), dw, kFp32Sum, "rmsnorm dw");

  // dx aliasing d_out, with and without dw (a frozen weight)
  DeviceBuffer<float> in_place(d_out), dev_dw2(dw_start), frozen(d_out);
  cuda::launch_rmsnorm_backward(nullptr, in_place.data(), dev_dw2.data(), in_place.data(), dev_x.data(),
                                dev_w.data(), cpu_rstd.data(), N, C);
  expect_close(in_place.host(), dx, kFp32Sum, "rmsnorm dx in place");
  expect_close(dev_dw2.host(), dw, kFp32Sum, "rmsnorm dw (dx in place)");
  cuda::launch_rmsnorm_backward(nullptr, frozen.data(), nullptr, frozen.data(), dev_x.data(),
                                dev_w.data(), cpu_rstd.data(), N, C);
  expect_close(frozen.host(), dx, kFp32Sum, "rmsnorm dx frozen");
}

// Rows narrower than a warp, than the block, wider (257: one thread takes two columns;
// 2048: eight each); N = 130 > the dw kernel's 128 row subsets.
TEST_F(CudaSim, Rmsnorm) {
  struct Shape {
    int N, C;
  };
  for (Shape s : {Shape{1, 1}, Shape{7, 5}, Shape{130, 5}, Shape{7, 31}, Shape{13, 70}, Shape{1, 256},
                  Shape{13, 257}, Shape{130, 257}, Shape{7, 1000}, Shape{3, 2048}})
    check_rmsnorm(*cpu, s.N, s.C);
}

// logits(N,V) in [-8, 8], targets(N) -> losses(N), d_logits(N,V)
void check_cross_entropy(Ops& cpu, int N, int V) {
  SCOPED_TRACE("N=" + std::to_string(N) + " V=" + std::to_string(V));
  const float d_loss_scale = 1.0f / N;
  const size_t n = static_cast<size_t>(N) * V;
  const Floats logits = random_floats(n, 70, -8.0f, 8.0f);
  Tokens targets;
  for (int i = 0; i < N; ++i) targets.push_back((i * 389 + 11) % V);
  targets[0] = V - 1;
  Floats d_logits(n), losses(N);
  cpu.cross_entropy(d_logits.data(), losses.data(), logits.data(), targets.data(), N, V, d_loss_scale);
  DeviceBuffer<float> dev_logits(logits), dev_d_logits(n), dev_losses(N);
  DeviceBuffer<int32_t> dev_targets(targets);
  cuda::launch_cross_entropy(nullptr, dev_d_logits.data(), dev_losses.data(), dev_logits.data(),
                             dev_targets.data(), N, V, d_loss_scale);
  expect_close(dev_losses.host(), losses, kFp32, "losses");
  expect_close(dev_d_logits.host(), d_logits, kFp32, "d_logits");

  DeviceBuffer<float> in_place(logits), losses_in_place(N), losses_only(N);
  cuda::launch_cross_entropy(nullptr, in_place.data(), losses_in_place.data(), in_place.data(),
                             dev_targets.data(), N, V, d_loss_scale);
  expect_close(in_place.host(), d_logits, kFp32, "d_logits in place over logits");
  expect_close(losses_in_place.host(), losses, kFp32, "losses (in place)");
  cuda::launch_cross_entropy(nullptr, nullptr, losses_only.data(), dev_logits.data(),
                             dev_targets.data(), N, V, d_loss_scale);
  expect_close(losses_only.host(), losses, kFp32, "losses (no d_logits)");
  expect_bitwise_equal(dev_logits.host(), logits, "logits untouched");
}

TEST_F(CudaSim, CrossEntropy) {
  for (int V : {1, 7, 512, 513, 5000}) check_cross_entropy(*cpu, 5, V);
}

// A target outside [0, V) (a bug upstream): that row's loss and gradient are NaN, the
// others are computed as usual, and nothing outside the rows is touched.
TEST_F(CudaSim, CrossEntropyTargetOutOfRange) {
  const int N = 3, V = 600;
  const Floats logits = random_floats(static_cast<size_t>(N) * V, 71, -8.0f, 8.0f);
  const Tokens targets = {5, V, -1};
  DeviceBuffer<float> dev_logits(logits), d_logits(Floats(logits.size(), 0.0f)), losses(N);
  DeviceBuffer<int32_t> dev_targets(targets);
  cuda::launch_cross_entropy(nullptr, d_logits.data(), losses.data(), dev_logits.data(),
                             dev_targets.data(), N, V, 1.0f);
  const Floats got_losses = losses.host(), got_d = d_logits.host();
  EXPECT_TRUE(std::isfinite(got_losses[0]));
  EXPECT_TRUE(std::isnan(got_losses[1]) && std::isnan(got_losses[2]));
  for (int j = 0; j < V; ++j) {
    ASSERT_TRUE(std::isfinite(got_d[j])) << j;
    ASSERT_TRUE(std::isnan(got_d[V + j]) && std::isnan(got_d[2 * V + j])) << j;
  }
}

}  // namespace
}  // namespace relora
