// bfloat16 on the host: the upper 16 bits of an IEEE float, as raw words. Rounding is to
// nearest with ties to even, every NaN becomes the canonical NaN 0x7fff: the same as CUDA's
// __float2bfloat16_rn, so the CPU and CUDA conversions agree bit for bit. Header-only: the
// MPI plugin uses it too.
#pragma once
#include <cstdint>
#include <cstring>

namespace relora {

inline uint16_t float_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round half to even; a carry into the exponent is right
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

}  // namespace relora
