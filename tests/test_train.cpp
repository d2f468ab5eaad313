// End-to-end training tests: a tiny model memorises a fixed sequence through several
// merge-and-restarts; the same seed twice gives a bit-identical loss sequence.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/rng.h"
#include "data/shard.h"
#include "dist/communicator.h"
#include "test_util.h"
#include "train/trainer.h"

namespace relora {
namespace {

// A shard whose every window is the same random sequence of 16 tokens (period = seq_len).
std::string periodic_shard(const testing::TempDir& dir) {
  std::vector<int32_t> period, tokens;
  for (int i = 0; i < 16; ++i)
    period.push_back(static_cast<int32_t>(uniform_at({3, RngPurpose::test, 0, 0}, i) * 32));
  for (int rep = 0; rep < 20; ++rep) tokens.insert(tokens.end(), period.begin(), period.end());
  tokens.push_back(period[0]);
  write_token_shard(dir.file("train_000000.bin"), tokens);
  return dir.file("train_*.bin");
}

std::vector<std::string> small_run(const testing::TempDir& dir, const std::string& data) {
  return {"model.vocab_size=32",       "model.hidden_size=32",       "model.num_layers=2",
          "model.num_heads=2",         "model.intermediate_size=64", "model.seq_len=16",
          "relora.rank=4",             "relora.alpha=8",             "relora.warm_start_steps=30",
          "relora.reset_every=30",     "relora.restart_warmup_steps=5",
          "optimizer.lr=0.01",         "schedule.warmup_steps=10",   "train.steps=150",
          "train.global_batch=4",      "train.micro_batch=2",        "train.threads=2",
          "train.device=cpu",  // the CPU backend, on a machine with a GPU too
          "data.train=" + data,        "data.eval_every=0",          "log.every=25",
          "checkpoint.dir=" + dir.file("run")};
}

TEST(Train, MemorisesThroughRestarts) {
  testing::TempDir dir;
  Config cfg = config_from_overrides(small_run(dir, periodic_shard(dir)));
  auto comm = make_local_comm();
  TrainSummary s = Trainer(cfg, *comm).run();
  ASSERT_EQ(s.losses.size(), 150u);
  EXPECT_EQ(s.restarts, 3);  // after 60, 90, 120
  EXPECT_GT(s.losses.front(), 3.0);
  EXPECT_LT(s.losses.back(), 0.05);
  // outputs: the resolved config and one restart record per restart
  std::ifstream metrics(dir.file("run/metrics.jsonl"));
  std::string line;
  int restart_records = 0, step_records = 0;
  while (std::getline(metrics, line)) {
    restart_records += line.find("\"event\":\"restart\"") != std::string::npos;
    step_records += line.find("\"loss\"") != std::string::npos;
  }
  EXPECT_EQ(restart_records, 3);
  EXPECT_EQ(step_records, 7);  // step 1, then every 25
  Config reread = load_config(dir.file("run/config.yaml"));
  EXPECT_EQ(reread.train.steps, 150);
}

TEST(Train, SameSeedIsBitIdentical) {
  testing::TempDir dir;
  std::vector<std::string> overrides = small_run(dir, periodic_shard(dir));
  overrides.push_back("train.steps=70");  // warm start, a cycle, a restart, a bit more
  auto comm = make_local_comm();
  std::vector<double> first = Trainer(config_from_overrides(overrides), *comm).run().losses;
  std::vector<double> second = Trainer(config_from_overrides(overrides), *comm).run().losses;
  ASSERT_EQ(first.size(), 70u);
  EXPECT_EQ(first, second);
  overrides.push_back("train.seed=99");
  std::vector<double> other = Trainer(config_from_overrides(overrides), *comm).run().losses;
  EXPECT_NE(first, other);
}

}  // namespace
}  // namespace relora
