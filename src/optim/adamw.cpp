// AdamW, gradient clipping and moment pruning.
#include "optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/errors.h"

namespace relora {

void AdamW::step(const std::vector<Param*>& params, float lr) {
  for (Param* p : params) {
    RELORA_CHECK(p->trainable() && p->grad.numel() == p->value.numel(), p->name);
    AdamState& s = state_for(*p);
    s.step += 1;
    float decay = p->is_norm ? 0.0f : cfg_.weight_decay;
    ops_.adamw(p->value.data(), p->grad.data(), s.exp_avg.data(), s.exp_avg_sq.data(),
               p->value.numel(), lr, cfg_.beta1, cfg_.beta2, cfg_.eps, decay, s.step);
  }
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

void prune_moments(AdamState& state, float fraction) {
  const int64_t n = state.exp_avg.numel();
  // The fraction arrives as a float (0.99f = 0.98999999...): round it to 6 digits first so
  // that 0.99 of 100 elements is 99, not 98.
  const double exact_fraction = std::round(static_cast<double>(fraction) * 1e6) / 1e6;
  const int64_t k = static_cast<int64_t>(std::floor(exact_fraction * n + 1e-9));
  if (k <= 0) return;
  if (k >= n) {
    state.exp_avg.zero();
    state.exp_avg_sq.zero();
    return;
  }
  // On the host, also for device moments: a restart happens once per thousands of steps and
  // the moments are adapter-sized, so the copies cost little next to a step.
  Tensor m_host = state.exp_avg.to_host(), v_host = state.exp_avg_sq.to_host();
  float* m = m_host.data();
  float* v = v_host.data();
  // Keep the n - k largest |m|: threshold = the k-th smallest magnitude; ties at the
  // threshold are resolved in index order so exactly k elements are zeroed.
  std::vector<float> mag(n);
  for (int64_t i = 0; i < n; ++i) mag[i] = std::fabs(m[i]);
  std::nth_element(mag.begin(), mag.begin() + (k - 1), mag.end());
  const float threshold = mag[k - 1];
  int64_t below = 0;
  for (int64_t i = 0; i < n; ++i) below += std::fabs(m[i]) < threshold;
  int64_t ties_to_zero = k - below;
  for (int64_t i = 0; i < n; ++i) {
    float a = std::fabs(m[i]);
    bool zero = a < threshold || (a == threshold && ties_to_zero-- > 0);
    if (zero) {
      m[i] = 0.0f;
      v[i] = 0.0f;
    }
  }
  if (!state.exp_avg.on_host()) {
    state.exp_avg.copy_from_host(m);
    state.exp_avg_sq.copy_from_host(v);
  }
}

}  // namespace relora
