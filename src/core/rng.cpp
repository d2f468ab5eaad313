// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// Key: 64 bits mixed from (seed, purpose, tensor). Counter: (block, step).
#include "core/rng.h"

#include <cmath>

namespace relora {
namespace {

constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;

uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t mixed_key(const RngKey& key) {
  uint64_t k = splitmix64(key.seed);
  k = splitmix64(k ^ (static_cast<uint64_t>(key.purpose) << 32 | key.tensor));
  return k;
}

}  // namespace

uint32_t tensor_id(const std::string& name) {
  uint32_t h = 2166136261u;
  for (unsigned char c : name) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

void philox_block(const RngKey& key, uint64_t block, uint32_t out[4]) {
  uint64_t k = mixed_key(key);
  uint32_t k0 = static_cast<uint32_t>(k), k1 = static_cast<uint32_t>(k >> 32);
  uint32_t c0 = static_cast<uint32_t>(block), c1 = static_cast<uint32_t>(block >> 32);
  uint32_t c2 = static_cast<uint32_t>(key.step), c3 = static_cast<uint32_t>(key.step >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
    uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
    uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c0 = n0;
    c1 = static_cast<uint32_t>(p1);
    c2 = n2;
    c3 = static_cast<uint32_t>(p0);
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

double uniform_at(const RngKey& key, uint64_t index) {
  uint32_t w[4];
  philox_block(key, index / 2, w);
  uint32_t hi = (index % 2) ? w[2] : w[0], lo = (index % 2) ? w[3] : w[1];
  uint64_t bits53 = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return static_cast<double>(bits53) * (1.0 / 9007199254740992.0);
}

void fill_uniform(float* x, int64_t n, float lo, float hi, const RngKey& key) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(lo + (hi - lo) * uniform_at(key, i));
}

void fill_normal(float* x, int64_t n, float mean, float std, const RngKey& key) {
  constexpr double kTwoPi = 6.283185307179586;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    double u1 = 1.0 - uniform_at(key, 2 * i);  // (0, 1]
    double u2 = uniform_at(key, 2 * i + 1);
    double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
    x[i] = static_cast<float>(mean + std * z);
  }
}

}  // namespace relora
