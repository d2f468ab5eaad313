// What the emulated-kernel tests share: device buffers for the emulator (guarded host
// memory), the bit-for-bit comparison (random inputs, tolerances: ../kernel_checks.h),
// and the CudaSim fixture (the CPU backend as the reference; any emulator error fails the
// test). The kernels are called through their launchers (backend/cuda/kernels.h) with a
// null stream, as CudaOps calls them.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/kernels.h"
#include "backend/ops.h"
#include "core/rng.h"
#include "kernel_checks.h"

namespace relora {

// n elements of "device" memory: a guarded allocation (an access past either end faults),
// 0xFF bytes (NaN) until written, or a copy of host values.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n)
      : n_(n), data_(static_cast<T*>(sim::guarded_alloc(n * sizeof(T), 16, "a device buffer", true))) {}
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    if (!host.empty()) std::memcpy(data_, host.data(), host.size() * sizeof(T));
  }
  ~DeviceBuffer() { sim::guarded_free(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* data() { return data_; }
  std::vector<T> host() const { return std::vector<T>(data_, data_ + n_); }

 private:
  size_t n_;
  T* data_;
};

// Bit for bit (NaNs included: the kernels produce the CPU's canonical NaN).
template <typename T>
void expect_bitwise_equal(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t differ = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0 && differ++ == 0) first = i;
  EXPECT_EQ(differ, 0u) << what << ": " << differ << " of " << got.size() << " differ, first ["
                        << first << "]: emulated " << +got[first] << ", reference " << +want[first];
}

class CudaSim : public ::testing::Test {
 protected:
  void SetUp() override { sim::take_errors(); }
  void TearDown() override {
    for (const std::string& e : sim::take_errors()) ADD_FAILURE() << e;
  }
  std::unique_ptr<Ops> cpu = make_cpu_ops();
};

}  // namespace relora
