// Optimizer pieces: moment pruning (one mask, exact count, step kept), gradient clipping.
#include <gtest/gtest.h>

#include "test_util.h"

#include <cmath>

#include "backend/ops.h"
#include "optim/adamw.h"

namespace relora {
namespace {

TEST(Optim, PruneKeepsLargestMeansWithOneMask) {
  auto ops = make_cpu_ops();
  AdamW optimizer(OptimizerConfig{}, *ops);
  AdamState s;
  s.exp_avg = Tensor::zeros({10, 20});
  s.exp_avg_sq = Tensor::zeros({10, 20});
  s.step = 7;
  for (int i = 0; i < 200; ++i) {
    s.exp_avg.data()[i] = (i % 2 ? -1.0f : 1.0f) * static_cast<float>((i * 37) % 200);
    s.exp_avg_sq.data()[i] = 1.0f + i;
  }
  optimizer.prune(s, 0.9f);  // zero 180, keep the 20 largest |m| (180..199)
  int kept = 0;
  for (int i = 0; i < 200; ++i) {
    const float m = s.exp_avg.data()[i], v = s.exp_avg_sq.data()[i];
    EXPECT_EQ(m == 0.0f, v == 0.0f);
    if (m != 0.0f) {
      ++kept;
      EXPECT_GE(std::fabs(m), 180.0f);
    }
  }
  EXPECT_EQ(kept, 20);
  EXPECT_EQ(s.step, 7);
}

TEST(Optim, PruneWithTiesZeroesExactCount) {
  auto ops = make_cpu_ops();
  AdamW optimizer(OptimizerConfig{}, *ops);
  AdamState s;
  s.exp_avg = Tensor::zeros({100});
  s.exp_avg_sq = Tensor::zeros({100});
  s.exp_avg.fill(0.5f);
  s.exp_avg_sq.fill(1.0f);
  optimizer.prune(s, 0.99f);
  int kept = 0;
  for (int i = 0; i < 100; ++i) kept += s.exp_avg.data()[i] != 0.0f;
  EXPECT_EQ(kept, 1);
}

TEST(Optim, ClipScalesToMaxNorm) {
  auto ops = make_cpu_ops();
  Param a, b;
  a.value = Tensor::zeros({3});
  b.value = Tensor::zeros({1});
  a.set_role(Role::full);
  b.set_role(Role::full);
  a.grad.data()[0] = 3.0f;
  b.grad.data()[0] = 4.0f;
  std::vector<Param*> ps = {&a, &b};
  double norm = global_grad_norm(*ops, testing::gradients_of(ps));
  EXPECT_DOUBLE_EQ(norm, 5.0);
  clip_gradients(*ops, testing::gradients_of(ps), norm, 1.0f);
  EXPECT_NEAR(global_grad_norm(*ops, testing::gradients_of(ps)), 1.0, 1e-6);
  clip_gradients(*ops, testing::gradients_of(ps), 1.0, 0.0f);  // 0: no clipping
  EXPECT_NEAR(global_grad_norm(*ops, testing::gradients_of(ps)), 1.0, 1e-6);
}

}  // namespace
}  // namespace relora
