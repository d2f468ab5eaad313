// Phase, cycle, restart events and the jagged cosine learning rate.
#include "relora/schedule.h"

#include <algorithm>
#include <cmath>

namespace relora {

Schedule::Schedule(const Config& cfg)
    : rank_(cfg.relora.rank),
      warm_(cfg.relora.warm_start_steps),
      reset_every_(cfg.relora.reset_every),
      restart_warmup_(cfg.relora.restart_warmup_steps),
      warmup_(cfg.schedule.warmup_steps),
      steps_(cfg.train.steps),
      lr_(cfg.optimizer.lr),
      min_lr_ratio_(cfg.schedule.min_lr_ratio) {}

bool Schedule::relora_phase(int64_t u) const { return rank_ > 0 && u > warm_; }

int64_t Schedule::cycle(int64_t u) const {
  if (!relora_phase(u)) return 0;
  if (reset_every_ <= 0) return 1;
  return 1 + (u - warm_ - 1) / reset_every_;
}

int64_t Schedule::cycle_start(int64_t c) const {
  return warm_ + (c - 1) * static_cast<int64_t>(reset_every_);
}

Event Schedule::event_after(int64_t u) const {
  if (rank_ <= 0 || u >= steps_) return Event::none;
  if (u == warm_) return Event::start_adapters;
  if (u > warm_ && reset_every_ > 0 && (u - warm_) % reset_every_ == 0) return Event::restart;
  return Event::none;
}

int64_t Schedule::restarts_done(int64_t u) const {
  if (rank_ <= 0 || reset_every_ <= 0 || u <= warm_) return 0;
  int64_t last = std::min<int64_t>(u, steps_ - 1);  // no restart after the final update
  return last > warm_ ? (last - warm_) / reset_every_ : 0;
}

double Schedule::lr(int64_t u) const {
  double base;
  if (warmup_ > 0 && u <= warmup_) {
    base = lr_ * static_cast<double>(u) / warmup_;
  } else {
    const double span = std::max<int64_t>(1, steps_ - warmup_);
    const double progress = std::clamp(static_cast<double>(u - warmup_) / span, 0.0, 1.0);
    const double min_lr = min_lr_ratio_ * lr_;
    base = min_lr + (lr_ - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  if (relora_phase(u) && restart_warmup_ > 0) {
    const int64_t since = u - cycle_start(cycle(u));
    base *= std::min(1.0, static_cast<double>(since) / restart_warmup_);
  }
  return base;
}

}  // namespace relora
