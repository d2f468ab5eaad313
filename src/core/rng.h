// Counter-based random numbers (Philox4x32-10), keyed by (seed, purpose, tensor, step).
// Draw i of a stream depends only on its key and i, never on what was drawn before, so
// any rank, any device and a resumed run produce exactly the same numbers.
#pragma once
#include <cstdint>
#include <string>

namespace relora {

// What a stream of random numbers is for; part of the key, so streams never overlap.
enum class RngPurpose : uint32_t {
  init = 1,        // initial weights (step 0)
  adapter = 2,     // LoRA A/B (re-)initialisation (step = update after which it happens)
  data_order = 3,  // per-epoch sample permutation (step = epoch)
  test = 4,        // unit tests and synthetic data
  data_split = 5,  // train/validation split of documents (index = document number)
  data_sample = 6,  // tokenizer-training sample (step = document number, index = line)
};

struct RngKey {
  uint64_t seed = 0;
  RngPurpose purpose = RngPurpose::test;
  uint32_t tensor = 0;  // tensor_id(name), or 0
  uint64_t step = 0;
};

// A stable 32-bit id for a tensor name (FNV-1a).
uint32_t tensor_id(const std::string& name);

// Four raw 32-bit words of block `block` of the stream.
void philox_block(const RngKey& key, uint64_t block, uint32_t out[4]);

// Value `index` of the stream as a uniform double in [0, 1).
double uniform_at(const RngKey& key, uint64_t index);

// x[i] = uniform in [lo, hi) for i in [0, n).
void fill_uniform(float* x, int64_t n, float lo, float hi, const RngKey& key);
// x[i] = mean + std * standard normal (Box-Muller over draws 2i and 2i+1).
void fill_normal(float* x, int64_t n, float mean, float std, const RngKey& key);

}  // namespace relora
