// AdamW, gradient clipping and moment pruning.
#include "optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/errors.h"

namespace relora {

void AdamW::step(const std::vector<Param*>& params, float lr) {
  std::vector<AdamwTensor> tensors;
  tensors.reserve(params.size());
  for (Param* p : params) {
    RELORA_CHECK(p->trainable() && p->grad.numel() == p->value.numel(), p->name);
    AdamState& s = state_for(*p);
    s.step += 1;
    tensors.push_back({p->value.data(), p->grad.data(), s.exp_avg.data(), s.exp_avg_sq.data(),
                       p->value.numel(), p->is_norm ? 0.0f : cfg_.weight_decay, s.step});
  }
  ops_.adamw(tensors, {lr, cfg_.beta1, cfg_.beta2, cfg_.eps});
}

void AdamW::retain_only(const std::vector<Param*>& params) {
  std::set<std::string> live;
  for (Param* p : params) live.insert(p->name);
  for (auto it = states_.begin(); it != states_.end();)
    it = live.count(it->first) ? std::next(it) : states_.erase(it);
}

AdamState& AdamW::state_for(const Param& p) {
  AdamState& s = states_[p.name];
  if (s.exp_avg.numel() != p.value.numel()) {
    s.exp_avg = Tensor::zeros(p.value.shape(), p.value.device());
    s.exp_avg_sq = Tensor::zeros(p.value.shape(), p.value.device());
    s.step = 0;
  }
  return s;
}

AdamState* AdamW::state(const std::string& name) {
  auto it = states_.find(name);
  return it == states_.end() ? nullptr : &it->second;
}

double global_grad_norm(Ops& ops, const std::vector<Tensor>& grads) {
  double sum = 0.0;
  for (const Tensor& g : grads) sum += ops.sum_squares(g.data(), g.numel());
  return std::sqrt(sum);
}

void clip_gradients(Ops& ops, std::vector<Tensor> grads, double norm, float max_norm) {
  if (max_norm <= 0.0f || !(norm > max_norm)) return;
  float s = static_cast<float>(max_norm / norm);
  for (Tensor& g : grads) ops.scale(g.data(), g.numel(), s);
}

void AdamW::prune(AdamState& state, float fraction) {
  const int64_t n = state.exp_avg.numel();
  // The fraction arrives as a float (0.99f = 0.98999999...): round it to 6 digits first so
  // that 0.99 of 100 elements is 99, not 98.
  const double exact_fraction = std::round(static_cast<double>(fraction) * 1e6) / 1e6;
  const int64_t k = std::clamp<int64_t>(
      static_cast<int64_t>(std::floor(exact_fraction * n + 1e-9)), 0, n);
  ops_.prune_smallest(state.exp_avg.data(), state.exp_avg_sq.data(), n, k);
}

}  // namespace relora
