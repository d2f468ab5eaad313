// The optimizer kernels of src/backend/cuda/kernels_optim.cu, emulated, against the CPU
// backend: multi-tensor AdamW (more tensors than one launch takes, chunk boundaries) and
// moment pruning (radix selection + the one-block in-order pass with cub::BlockScan), the
// latter bit for bit, ties and non-finite moments included. Cannot detect what cuda_sim.h
// cannot; the histogram's static __shared__ counters are not poisoned between blocks.
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "sim_test_support.h"

namespace relora {
namespace {

// 70 tensors (two launches of at most 64), sizes 0 to 20001 around the 2048-element chunk,
// each with its own step and decay.
TEST_F(CudaSim, AdamwManyTensors) {
  const AdamwHyper hyper{1e-3f, 0.9f, 0.95f, 1e-8f};
  const int kTensors = 70;
  std::vector<Floats> param(kTensors), grad(kTensors), m(kTensors), v(kTensors);
  std::vector<std::unique_ptr<DeviceBuffer<float>>> device;  // param, grad, m, v of each
  std::vector<AdamwTensor> on_cpu, emulated;
  for (int t = 0; t < kTensors; ++t) {
    const size_t n = t == 0 ? 0 : t == 1 ? 20001 : t == 2 ? 2048 : t == 3 ? 2049 : (t * 1237) % 3000 + 1;
    const int64_t step = 1 + t % 9;
    param[t] = random_floats(n, 80 + 4 * t);
    grad[t] = random_floats(n, 81 + 4 * t);
    m[t] = random_floats(n, 82 + 4 * t, -0.1f, 0.1f);
    v[t] = random_floats(n, 83 + 4 * t, 0.0f, 0.01f);
    for (const Floats* x : {&param[t], &grad[t], &m[t], &v[t]}) device.push_back(std::make_unique<DeviceBuffer<float>>(*x));
    const float decay = t % 2 ? 0.1f : 0.0f;
    on_cpu.push_back({param[t].data(), grad[t].data(), m[t].data(), v[t].data(), static_cast<int64_t>(n), decay, step});
    emulated.push_back({device[4 * t]->data(), device[4 * t + 1]->data(), device[4 * t + 2]->data(),
                        device[4 * t + 3]->data(), static_cast<int64_t>(n), decay, step});
  }
  cpu->adamw(on_cpu, hyper);
  cuda::launch_adamw(nullptr, emulated, hyper);
  for (int t = 0; t < kTensors; ++t) {
    const std::string tag = " tensor " + std::to_string(t);
    expect_close(device[4 * t]->host(), param[t], kFp32, "adamw param" + tag);
    expect_close(device[4 * t + 2]->host(), m[t], kFp32, "adamw m" + tag);
    expect_close(device[4 * t + 3]->host(), v[t], kFp32, "adamw v" + tag);
  }
}

// m(n), v(n): the same elements zeroed as on the CPU, bit for bit.
void check_prune(Ops& cpu, const Floats& m0, int64_t k, const std::string& tag) {
  const int64_t n = static_cast<int64_t>(m0.size());
  const Floats v0 = random_floats(m0.size(), 96, 0.5f, 1.0f);
  Floats m = m0, v = v0;
  cpu.prune_smallest(m.data(), v.data(), n, k);
  DeviceBuffer<float> dev_m(m0), dev_v(v0);
  DeviceBuffer<unsigned long long> histogram(256);
  cuda::launch_prune_smallest(nullptr, dev_m.data(), dev_v.data(), n, k, histogram.data());
  expect_bitwise_equal(dev_m.host(), m, "m" + tag);
  expect_bitwise_equal(dev_v.host(), v, "v" + tag);
}

// Distinct magnitudes, then heavy ties (|m| in {0, 0.5, 1}, +0 and -0) where the index
// order decides, over one to five of the in-order pass's 1024-element tiles.
TEST_F(CudaSim, PruneSmallest) {
  for (int64_t n : {int64_t{1}, int64_t{10}, int64_t{1000}, int64_t{5000}}) {
    for (bool ties : {false, true}) {
      Floats m0 = random_floats(n, 95);
      if (ties)
        for (int64_t i = 0; i < n; ++i) m0[i] = 0.5f * static_cast<float>((i * 7919) % 3) * (i % 2 ? 1.0f : -1.0f);
      for (int64_t k : {int64_t{0}, int64_t{1}, n / 3, (n * 99) / 100, n})
        check_prune(*cpu, m0, k, " n=" + std::to_string(n) + " k=" + std::to_string(k) + (ties ? " ties" : ""));
    }
  }
}

// Non-finite moments of a diverged run: NaN above infinity above numbers.
TEST_F(CudaSim, PruneSmallestNonFinite) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const Floats m0 = {nan, 1.0f, -inf, -0.0f, 2.0f, -nan, inf, 0.0f, -3.0f};
  for (int64_t k = 0; k <= static_cast<int64_t>(m0.size()); ++k) check_prune(*cpu, m0, k, " k=" + std::to_string(k));
}

}  // namespace
}  // namespace relora
