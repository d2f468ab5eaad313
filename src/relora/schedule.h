// The ReLoRA timeline: phase and cycle of each update, where restarts happen, and the
// learning rate (linear warm-up, cosine decay, re-warmed after every cycle start: the
// "jagged" cosine). Updates are counted from 1; "after update N" means after N updates.
//   cycle 0 (full rank): updates 1 .. W (W = warm_start_steps)
//   cycle 1 starts with update W + 1 (adapters created after update W);
//   a restart happens after update W + k*R (k >= 1, R = reset_every > 0) unless that is
//   the final update, and starts the next cycle.
// With relora.rank 0 every update is full-rank, cycle 0; with reset_every 0 there is no
// restart (plain LoRA after the warm start).
#pragma once
#include <cstdint>

#include "config/config.h"

namespace relora {

enum class Event { none, start_adapters, restart };

class Schedule {
 public:
  explicit Schedule(const Config& cfg);

  bool uses_adapters() const { return rank_ > 0; }
  // Phase of update u (>= 1): true when it trains adapters.
  bool relora_phase(int64_t u) const;
  // Cycle of update u: 0 in the warm start, then 1, 2, ...
  int64_t cycle(int64_t u) const;
  // The update after which cycle c (>= 1) begins.
  int64_t cycle_start(int64_t c) const;
  // What happens after update u (u = 0: before the first update).
  Event event_after(int64_t u) const;
  // Restarts (merges) done after `u` updates.
  int64_t restarts_done(int64_t u) const;
  // Learning rate of update u.
  double lr(int64_t u) const;

 private:
  int rank_, warm_, reset_every_, restart_warmup_, warmup_, steps_;
  double lr_, min_lr_ratio_;
};

}  // namespace relora
