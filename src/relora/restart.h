// ReLoRA's phase changes applied to a model and its optimizer: starting the adapters after
// the warm start, and merge-and-restart at a cycle boundary.
#pragma once
#include <cstdint>

#include "config/config.h"
#include "model/llama.h"
#include "optim/adamw.h"

namespace relora {

// After update `step` = warm_start_steps: freeze the targets, create adapters (A Kaiming,
// B zero; fresh Adam state, created at their first update) and drop the optimizer state
// of the tensors that froze.
void start_adapters(Llama& model, AdamW& optimizer, uint64_t seed, int64_t step);

// After update `step` at a cycle boundary: W += s B A for every adapter (fp32), fresh A
// and B as at creation (draws keyed by step), and both Adam moments of every adapter
// pruned to the largest (1 - optimizer_prune) fraction by |exp_avg|; Adam steps kept.
void merge_and_restart(Llama& model, AdamW& optimizer, const ReloraConfig& cfg, uint64_t seed,
                       int64_t step);

}  // namespace relora
