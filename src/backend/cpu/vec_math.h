// exp for float, written so that loops calling it vectorise. glibc's expf is vectorised only
// under -ffast-math, and softmax, cross-entropy and SiLU spend most of their time in exp
// (this one is about 8x faster per element with AVX2). Cephes' range reduction and
// polynomial: under 2 ulp where the result is a normal float; exp(x) = 0 for x < -88.03 and
// exp(x) = exp(88) for x > 88 and for NaN.
#pragma once
#include <cstdint>
#include <cstring>

namespace relora::cpu {

inline float exp_approx(float x) {
  // Clamp x to [-88.3, 88] on its bit pattern. Float selects here would let GCC split the
  // loop body into branches on the clamped constants, and under the default -ftrapping-math
  // it will not if-convert them back, so nothing would vectorise. Viewed as int32, positive
  // floats sort like their values and negative floats are negative; viewed as uint32,
  // negative floats sort by magnitude above all positive ones.
  constexpr int32_t kMaxArgBits = 0x42B00000;    // 88.0f: exp(88) < FLT_MAX
  constexpr uint32_t kMinArgBits = 0xC2B0999Au;  // -88.3f
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(x));
  // all ones where x < 88 or x is negative (sign of bits - kMaxArgBits, wrapping), else 0
  const int32_t below_max =
      (static_cast<int32_t>(static_cast<uint32_t>(bits) - kMaxArgBits) | bits) >> 31;
  bits = (bits & below_max) | (kMaxArgBits & ~below_max);
  uint32_t magnitude_order = static_cast<uint32_t>(bits);
  magnitude_order = magnitude_order < kMinArgBits ? magnitude_order : kMinArgBits;
  std::memcpy(&x, &magnitude_order, sizeof(x));

  // x = n ln2 + r with n = round(x log2e), |r| <= ln2/2. biased = n + 127 lies in [0, 254]
  // on the clamped range, so truncating the non-negative x log2e + 127.5 rounds to nearest.
  // biased == 0 (x < -88.03) gives the bit pattern of +0.0f for 2^n: exp underflows to 0.
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln 2 split into an exact part and the rest
  constexpr float kLn2Lo = -2.12194440e-4f;
  const int32_t biased = static_cast<int32_t>(x * kLog2e + 127.5f);
  const float n = static_cast<float>(biased - 127);
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t two_to_n_bits = biased << 23;
  float two_to_n;
  std::memcpy(&two_to_n, &two_to_n_bits, sizeof(two_to_n));
  return p * two_to_n;
}

}  // namespace relora::cpu
