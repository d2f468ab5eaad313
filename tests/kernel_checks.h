// What the kernel tests share (tests/cuda on a GPU, tests/cuda_sim in the emulator): random
// inputs, the tolerances a kernel is held to against the CPU backend, and the element-wise
// comparison that reports the first few misses. Header-only: the emulator's test binary
// links no relora_lib.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"

namespace relora {

using Floats = std::vector<float>;
using Tokens = std::vector<int32_t>;

inline Floats random_floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Floats x(n);
  fill_uniform(x.data(), static_cast<int64_t>(n), lo, hi, RngKey{seed, RngPurpose::test, 0, 0});
  return x;
}

// |got - want| <= rel * (max |want| when of_max, else |want[i]|) + abs, element by element.
struct Tolerance {
  double rel, abs;
  bool of_max;
};
constexpr Tolerance kFp32{1e-5, 1e-6, false};    // elementwise fp32 kernels
constexpr Tolerance kFp32Sum{1e-5, 1e-6, true};  // fp32 sums in another order
constexpr Tolerance kBf16{2e-2, 0.0, true};      // bf16 x bf16 -> fp32 products
constexpr Tolerance kTf32{2e-3, 0.0, true};      // TF32 x TF32 -> fp32 products

// got (the kernel's) against want (the reference); reports the first five misses.
inline void expect_close(const Floats& got, const Floats& want, Tolerance tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double max_abs = 0.0;
  for (float w : want) max_abs = std::fmax(max_abs, std::fabs(static_cast<double>(w)));
  int misses = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double scale = tol.of_max ? max_abs : std::fabs(static_cast<double>(want[i]));
    const double bound = tol.rel * scale + tol.abs;
    const double diff = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(diff <= bound) && ++misses <= 5)
      ADD_FAILURE() << what << "[" << i << "]: kernel " << got[i] << ", reference " << want[i]
                    << " (bound " << bound << ")";
  }
  EXPECT_EQ(misses, 0) << what << ": " << misses << " of " << want.size() << " out of bounds";
}

}  // namespace relora
