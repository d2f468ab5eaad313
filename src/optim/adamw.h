// AdamW over the model's trainable tensors, global-norm gradient clipping, and ReLoRA's
// magnitude pruning of Adam moments. State lives per tensor name, so tensors may join
// (fresh adapters: fresh state) and leave (frozen weights: state dropped) between updates.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "config/config.h"
#include "model/params.h"

namespace relora {

struct AdamState {
  Tensor exp_avg;     // m, shape of the tensor
  Tensor exp_avg_sq;  // v
  int64_t step = 0;   // updates applied to this tensor (bias correction)
};

class AdamW {
 public:
  AdamW(const OptimizerConfig& cfg, Ops& ops) : cfg_(cfg), ops_(ops) {}

  // One update of every tensor in `params` at learning rate lr. A tensor seen for the
  // first time gets zero state (created here, so only at the first update after a phase
  // change).
  void step(const std::vector<Param*>& params, float lr);
  // Drops the state of every tensor not in `params` (frozen ones), freeing its memory.
  void retain_only(const std::vector<Param*>& params);
  AdamState* state(const std::string& name);  // nullptr if none
  // The state of p, created (zero moments, step 0) if it has none: for loading checkpoints.
  AdamState& state_for(const Param& p);
  const std::map<std::string, AdamState>& states() const { return states_; }
  // Zeroes both moments where |exp_avg| is among the smallest `fraction` of the tensor
  // (one mask from exp_avg, so no element keeps a mean without a variance), on the
  // tensor's device. Keeps `step`.
  void prune(AdamState& state, float fraction);

 private:
  OptimizerConfig cfg_;
  Ops& ops_;
  std::map<std::string, AdamState> states_;
};

// sqrt(sum of squares of every gradient), accumulated in double. `grads` may be whole
// gradient buckets (GradSync::buffers()): one reduction per bucket, not per tensor.
double global_grad_norm(Ops& ops, const std::vector<Tensor>& grads);
// If max_norm > 0 and norm > max_norm, scales every gradient by max_norm / norm (in place:
// the tensors share the gradients' storage).
void clip_gradients(Ops& ops, std::vector<Tensor> grads, double norm, float max_norm);

}  // namespace relora
