// Exact resume: a run continued from any of its checkpoints — in the warm start, at the
// switch to adapters, at a restart and one step after it — repeats the uninterrupted run
// bit for bit (losses and final weights); incompatible configs and changed data are refused.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "core/errors.h"
#include "core/rng.h"
#include "data/shard.h"
#include "dist/communicator.h"
#include "test_util.h"
#include "train/trainer.h"

namespace relora {
namespace {

std::vector<std::string> run_config(const testing::TempDir& dir, const std::string& run) {
  // 24 updates: warm start 8, restarts after 12, 16 and 20
  return {"model.vocab_size=64",       "model.hidden_size=32",       "model.num_layers=2",
          "model.num_heads=2",         "model.intermediate_size=48", "model.seq_len=16",
          "relora.rank=4",             "relora.warm_start_steps=8",  "relora.reset_every=4",
          "relora.restart_warmup_steps=2", "optimizer.lr=0.005",     "schedule.warmup_steps=3",
          "train.steps=24",            "train.global_batch=4",       "train.micro_batch=2",
          "train.threads=2",           "train.device=cpu",  // on a machine with a GPU too
          "data.train=" + dir.file("train_*.bin"),
          "data.val=" + dir.file("train_*.bin"), "data.eval_every=6", "data.eval_batches=2",
          "log.every=1",               "checkpoint.every=1",         "checkpoint.keep=100",
          "checkpoint.dir=" + dir.file(run)};
}

void write_data(const testing::TempDir& dir) {
  std::vector<int32_t> tokens(3000);
  for (size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = static_cast<int32_t>(uniform_at({5, RngPurpose::test, 0, 0}, i) * 64);
  write_token_shard(dir.file("train_000000.bin"), tokens);
}

// Trains the 24 updates with the given train.activation_dtype, then continues from
// checkpoints 5, 8, 12 and 13 (warm start, adapter start, a restart, one after it);
// returns the uninterrupted run's losses.
std::vector<double> expect_every_checkpoint_continues(const testing::TempDir& dir,
                                                     const std::string& activation_dtype) {
  auto comm = make_local_comm();
  auto config = [&](const std::string& run) {
    std::vector<std::string> overrides = run_config(dir, activation_dtype + run);
    overrides.push_back("train.activation_dtype=" + activation_dtype);
    return config_from_overrides(overrides);
  };
  Trainer full(config("full"), *comm);
  const TrainSummary reference = full.run();
  EXPECT_EQ(reference.losses.size(), 24u);
  for (int from : {5, 8, 12, 13}) {
    SCOPED_TRACE("resumed from step " + std::to_string(from));
    const std::string run = "from" + std::to_string(from);
    std::filesystem::create_directories(dir.file(activation_dtype + run));
    std::filesystem::copy(dir.file(activation_dtype + "full/" + checkpoint_name(from)),
                          dir.file(activation_dtype + run + "/" + checkpoint_name(from)));
    Trainer resumed(config(run), *comm);
    resumed.resume("auto");
    const TrainSummary continued = resumed.run();
    EXPECT_EQ(continued.first_step, from + 1);
    EXPECT_EQ(continued.losses.size(), static_cast<size_t>(24 - from));
    for (size_t i = 0; i < continued.losses.size() && from + i < reference.losses.size(); ++i)
      EXPECT_EQ(continued.losses[i], reference.losses[from + i]) << "update " << from + 1 + i;
    EXPECT_EQ(continued.restarts, reference.restarts);
    const auto& a = full.model().params();
    const auto& b = resumed.model().params();
    EXPECT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size() && i < b.size(); ++i)
      for (int64_t j = 0; j < a[i]->value.numel(); ++j)
        if (a[i]->value.data()[j] != b[i]->value.data()[j]) {
          ADD_FAILURE() << a[i]->name << "[" << j << "]";
          break;
        }
  }
  return reference.losses;
}

TEST(Resume, EveryCheckpointContinuesBitIdentically) {
  testing::TempDir dir;
  write_data(dir);
  const std::vector<double> fp32 = expect_every_checkpoint_continues(dir, "fp32");
  // bf16 activations: exact too, and a run of its own that trains as fp32 does
  const std::vector<double> bf16 = expect_every_checkpoint_continues(dir, "bf16");
  ASSERT_EQ(fp32.size(), bf16.size());
  EXPECT_EQ(fp32[0], bf16[0]);  // the first forward is the same fp32 computation
  EXPECT_NE(fp32, bf16);
  for (size_t i = 0; i < fp32.size(); ++i) EXPECT_NEAR(bf16[i], fp32[i], 0.02 * fp32[i]) << "update " << i + 1;
}

// A run whose final update ends the warm start or a cycle skips that boundary's event
// (nothing follows it). Extended with a higher train.steps, it catches up before its first
// update: with a constant lr after warm-up (so that train.steps does not change the
// schedule), 8 then 24 steps, or 12 then 24, repeat the 24-step run bit for bit.
TEST(Resume, ExtendingARunThatEndedOnABoundary) {
  testing::TempDir dir;
  write_data(dir);
  auto comm = make_local_comm();
  auto config = [&](const std::string& run, int steps) {
    std::vector<std::string> overrides = run_config(dir, run);
    overrides.push_back("schedule.min_lr_ratio=1");
    overrides.push_back("train.steps=" + std::to_string(steps));
    return config_from_overrides(overrides);
  };
  Trainer whole(config("whole", 24), *comm);
  const TrainSummary reference = whole.run();
  ASSERT_EQ(reference.losses.size(), 24u);
  for (int first : {8, 12}) {  // the end of the warm start; the first restart
    SCOPED_TRACE("first " + std::to_string(first) + " steps");
    const std::string run = "to" + std::to_string(first);
    Trainer part(config(run, first), *comm);
    EXPECT_EQ(part.run().restarts, 0);
    // and a crash in the middle of a metrics line: the resume drops the partial line
    std::ofstream(dir.file(run + "/metrics.jsonl"), std::ios::app) << "{\"step\":";
    Trainer extended(config(run, 24), *comm);
    extended.resume("auto");
    const TrainSummary continued = extended.run();
    ASSERT_EQ(continued.losses.size(), static_cast<size_t>(24 - first));
    for (size_t i = 0; i < continued.losses.size(); ++i)
      EXPECT_EQ(continued.losses[i], reference.losses[first + i]) << "update " << first + 1 + i;
    EXPECT_EQ(continued.restarts, reference.restarts);
    std::ifstream metrics(dir.file(run + "/metrics.jsonl"));
    int steps = 0, restarts = 0;
    for (std::string line; std::getline(metrics, line);) {
      EXPECT_TRUE(line.front() == '{' && line.back() == '}') << line;
      steps += line.find("\"lr\":") != std::string::npos;
      restarts += line.find("\"restart\"") != std::string::npos;
    }
    EXPECT_EQ(steps, 24);  // log.every 1
    EXPECT_EQ(restarts, reference.restarts);
  }
}

TEST(Resume, RefusesAnIncompatibleConfigAndChangedData) {
  testing::TempDir dir;
  write_data(dir);
  auto comm = make_local_comm();
  std::vector<std::string> cfg = run_config(dir, "run");
  cfg.push_back("train.steps=6");
  Trainer(config_from_overrides(cfg), *comm).run();
  const std::string ckpt = dir.file("run/" + checkpoint_name(6));

  // each refused with an input error naming the difference
  const auto expect_refused = [&](const std::vector<std::string>& overrides, const std::string& part) {
    Trainer trainer(config_from_overrides(overrides), *comm);
    testing::expect_contains(testing::input_error_of([&] { trainer.resume(ckpt); }), {part});
  };
  std::vector<std::string> wider = cfg;
  wider.push_back("model.hidden_size=48");
  wider.push_back("model.num_heads=4");
  expect_refused(wider, "model.hidden_size: checkpoint 32, config 48");
  std::vector<std::string> larger_batch = cfg;
  larger_batch.push_back("train.global_batch=8");
  expect_refused(larger_batch, "train.global_batch: checkpoint 4, config 8");
  std::vector<std::string> reseeded = cfg;
  reseeded.push_back("train.seed=7");
  reseeded.push_back("model.seq_len=8");
  expect_refused(reseeded, "model.seq_len: checkpoint 16, config 8; train.seed: checkpoint 1234, config 7");
  std::vector<int32_t> more(500, 3);
  write_token_shard(dir.file("train_000001.bin"), more);
  expect_refused(cfg, "the training data changed");
  std::filesystem::remove(dir.file("train_000001.bin"));

  // a longer run may continue a finished one (train.steps is not part of the model)
  std::vector<std::string> longer = cfg;
  longer.push_back("train.steps=8");
  Trainer t3(config_from_overrides(longer), *comm);
  t3.resume("auto");
  EXPECT_EQ(t3.run().losses.size(), 2u);
}

}  // namespace
}  // namespace relora
