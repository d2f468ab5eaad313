// The ReLoRA timeline: phase switch, cycles, restart events and count, the jagged cosine
// learning rate at chosen updates.
#include <gtest/gtest.h>

#include <cmath>

#include "config/config.h"
#include "relora/schedule.h"

namespace relora {
namespace {

Config paper_example() {
  // warm_start_steps 100, reset_every 50, steps 300 => restarts after 150, 200, 250
  Config c;
  c.train.steps = 300;
  c.relora.rank = 8;
  c.relora.warm_start_steps = 100;
  c.relora.reset_every = 50;
  c.relora.restart_warmup_steps = 10;
  c.schedule.warmup_steps = 20;
  c.schedule.min_lr_ratio = 0.1f;
  c.optimizer.lr = 1e-3f;
  return c;
}

TEST(Schedule, EventsOfTheIssueExample) {
  Schedule s(paper_example());
  std::vector<int64_t> restarts, starts;
  for (int64_t u = 0; u <= 300; ++u) {
    if (s.event_after(u) == Event::restart) restarts.push_back(u);
    if (s.event_after(u) == Event::start_adapters) starts.push_back(u);
  }
  EXPECT_EQ(restarts, (std::vector<int64_t>{150, 200, 250}));
  EXPECT_EQ(starts, (std::vector<int64_t>{100}));
  EXPECT_EQ(s.restarts_done(300), 3);
  EXPECT_EQ(s.restarts_done(149), 0);
  EXPECT_EQ(s.restarts_done(150), 1);
}

TEST(Schedule, PhaseAndCycle) {
  Schedule s(paper_example());
  EXPECT_FALSE(s.relora_phase(1));
  EXPECT_FALSE(s.relora_phase(100));
  EXPECT_TRUE(s.relora_phase(101));
  EXPECT_EQ(s.cycle(100), 0);
  EXPECT_EQ(s.cycle(101), 1);
  EXPECT_EQ(s.cycle(150), 1);
  EXPECT_EQ(s.cycle(151), 2);
  EXPECT_EQ(s.cycle(300), 4);
  EXPECT_EQ(s.cycle_start(2), 150);
}

TEST(Schedule, NoAdaptersAndNoRestarts) {
  Config c = paper_example();
  c.relora.rank = 0;
  Schedule full(c);
  for (int64_t u = 0; u <= 300; ++u) {
    EXPECT_EQ(full.event_after(u), Event::none);
    EXPECT_FALSE(full.relora_phase(u));
  }
  c = paper_example();
  c.relora.reset_every = 0;
  Schedule lora(c);
  EXPECT_EQ(lora.event_after(100), Event::start_adapters);
  for (int64_t u = 101; u <= 300; ++u) EXPECT_EQ(lora.event_after(u), Event::none);
  EXPECT_EQ(lora.cycle(300), 1);
  c = paper_example();
  c.relora.warm_start_steps = 0;
  Schedule immediate(c);
  EXPECT_EQ(immediate.event_after(0), Event::start_adapters);
  EXPECT_TRUE(immediate.relora_phase(1));
}

TEST(Schedule, JaggedCosineLearningRate) {
  Config c = paper_example();
  Schedule s(c);
  const double lr = 1e-3f, min_lr = 0.1f * lr;
  auto cosine = [&](int64_t u) {
    return min_lr + (lr - min_lr) * 0.5 * (1 + std::cos(M_PI * (u - 20) / 280.0));
  };
  EXPECT_NEAR(s.lr(1), lr / 20, 1e-12);
  EXPECT_NEAR(s.lr(20), lr, 1e-12);
  EXPECT_NEAR(s.lr(60), cosine(60), 1e-12);
  EXPECT_NEAR(s.lr(100), cosine(100), 1e-12);  // last warm-start update: no re-warm
  EXPECT_NEAR(s.lr(101), cosine(101) * 0.1, 1e-12);  // first update of cycle 1 is not at 0
  EXPECT_NEAR(s.lr(105), cosine(105) * 0.5, 1e-12);
  EXPECT_NEAR(s.lr(110), cosine(110), 1e-12);
  EXPECT_NEAR(s.lr(151), cosine(151) * 0.1, 1e-12);
  EXPECT_NEAR(s.lr(300), min_lr, 1e-12);
}

}  // namespace
}  // namespace relora
