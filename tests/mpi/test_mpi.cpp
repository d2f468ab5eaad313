// Data-parallel training over MPI (run with 2 ranks): collectives, gradient buckets and
// their overlap with backward, np=2 computing the same run as np=1, and the benchmark
// counting tokens over ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "budget_check.h"
#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "core/bf16.h"
#include "core/errors.h"
#include "core/rng.h"
#include "data/shard.h"
#include "dist/grad_sync.h"
#include "dist/replica_check.h"
#include "mpi_env.h"
#include "train/bench.h"
#include "train/trainer.h"

namespace relora {
namespace {

using testing::g_comm;

// A directory every rank sees (made by rank 0, its name broadcast); removed by rank 0.
class SharedDir {
 public:
  SharedDir() {
    if (g_comm->rank() == 0) {
      std::string tmpl = (std::filesystem::temp_directory_path() / "relora_mpi_XXXXXX").string();
      path_ = mkdtemp(tmpl.data());
    }
    broadcast_string(*g_comm, path_, 0);
  }
  ~SharedDir() {
    g_comm->barrier();
    if (g_comm->rank() == 0) std::filesystem::remove_all(path_);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

TEST(Mpi, AllReduceAndBroadcast) {
  ASSERT_EQ(g_comm->world_size(), 2);
  const int r = g_comm->rank();
  EXPECT_EQ(g_comm->local_size(), 2);  // both ranks on this machine
  EXPECT_EQ(g_comm->local_rank(), r);
  std::vector<float> f = {1.0f + r, 10.0f * (r + 1)};
  g_comm->all_reduce(f.data(), 2, ReduceOp::sum);
  EXPECT_EQ(f, (std::vector<float>{3.0f, 30.0f}));
  g_comm->all_reduce(f.data(), 2, ReduceOp::avg);
  EXPECT_EQ(f, (std::vector<float>{3.0f, 30.0f}));
  uint64_t u[2] = {static_cast<uint64_t>(5 + r), static_cast<uint64_t>(5 + r)};
  g_comm->all_reduce(u, 1, ReduceOp::min);
  g_comm->all_reduce(u + 1, 1, ReduceOp::max);
  EXPECT_EQ(u[0], 5u);
  EXPECT_EQ(u[1], 6u);
  std::string text = r == 0 ? "from rank 0" : "";
  broadcast_string(*g_comm, text, 0);
  EXPECT_EQ(text, "from rank 0");
}

// Buckets are averaged over the ranks: in fp32 the sum rounded once and halved (exact); in
// bf16 each rank's gradient is rounded to bf16, the two are added in fp32 and rounded again
// (one addition with two ranks, so the result is exact to predict) and halved, and half the
// bytes cross the network. Also run by ctest with 3 ranks (mpi.np3: the division by a world
// size that is not a power of two, compared within rounding).
TEST(Mpi, GradSyncBucketsAverageKnownValues) {
  auto ops = make_cpu_ops();
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype == DType::bf16 ? "bf16" : "f32");
    // 5 tensors of 100 floats; buckets of 1000 bytes hold 2 tensors each: 3 buckets.
    std::vector<Param> params(5);
    std::vector<Param*> ptrs;
    for (int i = 0; i < 5; ++i) {
      params[i].name = "t" + std::to_string(i);
      params[i].value = Tensor::zeros({10, 10});
      params[i].set_role(Role::full);
      ptrs.push_back(&params[i]);
    }
    GradSync sync(*g_comm, *ops, 1000.0f / (1024 * 1024), dtype);
    sync.rebuild(ptrs);
    EXPECT_EQ(sync.num_buckets(), 3);
    EXPECT_EQ(sync.bytes_per_update(), 5 * 100 * static_cast<int64_t>(element_size(dtype)));
    // the last two tensors (reverse order) share the first bucket: contiguous storage
    EXPECT_EQ(params[4].grad.data() + 100, params[3].grad.data());
    // rank r holds (r + 1) * x with x = 0.1 * (i * 100 + j) + 1/3: not bf16-exact
    auto value = [](int rank, int i, int j) { return (rank + 1) * (0.1f * (i * 100 + j) + 1.0f / 3); };
    for (int i = 0; i < 5; ++i)
      for (int j = 0; j < 100; ++j) params[i].grad.data()[j] = value(g_comm->rank(), i, j);
    // tensors 4 and 3 complete the first bucket, which starts before finish()
    sync.mark_ready(&params[4]);
    sync.mark_ready(&params[3]);
    sync.finish();
    EXPECT_EQ(sync.started_before_finish(), 1);
    const int world = g_comm->world_size();
    for (int i = 0; i < 5; ++i)
      for (int j = 0; j < 100; ++j) {
        const float got = params[i].grad.data()[j];
        if (world == 2) {
          const float a = value(0, i, j), b = value(1, i, j);
          const float want = dtype == DType::f32
                                 ? (a + b) / 2
                                 : bf16_to_float(float_to_bf16(bf16_to_float(float_to_bf16(a)) +
                                                               bf16_to_float(float_to_bf16(b)))) / 2;
          ASSERT_EQ(got, want) << i << " " << j;
        } else {  // summed in an order MPI chooses: within fp32 or bf16 rounding of the mean
          double mean = 0.0;
          for (int r = 0; r < world; ++r) mean += value(r, i, j) / static_cast<double>(world);
          const double bound = (dtype == DType::f32 ? 1e-6 : world * 4e-3) * std::fabs(mean);
          ASSERT_NEAR(got, mean, bound) << i << " " << j;
        }
      }
    sync.zero();
    EXPECT_EQ(params[2].grad.data()[7], 0.0f);
  }
}

// With two ranks the bf16 staging buffers are in the budget and in the arena it sizes.
TEST(Mpi, MemoryBudgetCountsBf16Staging) {
  Config cfg = testing::small_training_config();
  cfg.train.allreduce_dtype = "bf16";
  testing::expect_budget_is_allocated(*g_comm, cfg, {});
}

TEST(Mpi, ReplicaChecksNameTheDifference) {
  Param a, b;
  a.name = "model.norm.weight";
  b.name = "lm_head.weight";
  a.value = Tensor::zeros({4});
  b.value = Tensor::zeros({4});
  EXPECT_NO_THROW(check_same_weights(*g_comm, {&a, &b}, "in the test"));
  if (g_comm->rank() == 1) b.value.data()[2] = 1.0f;
  try {
    check_same_weights(*g_comm, {&a, &b}, "in the test");
    ADD_FAILURE() << "no error";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("'lm_head.weight' differs between ranks"), std::string::npos) << e.what();
  }
  EXPECT_THROW(check_same_text(*g_comm, g_comm->rank() ? "x: 1" : "x: 2", "the config"), InputError);
  EXPECT_NO_THROW(check_same_text(*g_comm, "x: 1", "the config"));
}

// 4000 random tokens < 64 as dir/train_000000.bin, written by rank 0, seen by all.
void write_random_shard(const SharedDir& dir, uint64_t seed) {
  if (g_comm->rank() == 0) {
    std::vector<int32_t> tokens(4000);
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = static_cast<int32_t>(uniform_at({seed, RngPurpose::test, 0, 0}, i) * 64);
    write_token_shard(dir.file("train_000000.bin"), tokens);
  }
  g_comm->barrier();
}

std::vector<std::string> run_overrides(const SharedDir& dir, const std::string& run) {
  // 30 updates: warm start 10, restart after 20 (and none after the final update 30)
  return {"model.vocab_size=64",      "model.hidden_size=32",       "model.num_layers=2",
          "model.num_heads=2",        "model.intermediate_size=48", "model.seq_len=16",
          "relora.rank=4",            "relora.warm_start_steps=10", "relora.reset_every=10",
          "relora.restart_warmup_steps=3", "optimizer.lr=0.005",    "schedule.warmup_steps=5",
          "train.steps=30",           "train.global_batch=8",       "train.micro_batch=2",
          "train.threads=1",          "train.device=cpu",  // on a machine with GPUs too
          "train.bucket_mb=0.01",       "data.train=" + dir.file("train_*.bin"),
          "data.eval_every=0",        "log.every=10",               "checkpoint.dir=" + dir.file(run)};
}

double max_relative_difference(const Tensor& a, const Tensor& b) {
  double diff = 0.0, scale = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a.data()[i] - b.data()[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b.data()[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

TEST(Mpi, TwoRanksComputeTheSameRunAsOne) {
  SharedDir dir;
  write_random_shard(dir, 11);
  // np=1: each rank alone (its own output directory), then np=2 together
  auto local = make_local_comm();
  Trainer single(config_from_overrides(run_overrides(dir, "single" + std::to_string(g_comm->rank()))), *local);
  TrainSummary one = single.run();
  Trainer pair(config_from_overrides(run_overrides(dir, "pair")), *g_comm);
  pair.check_ranks_agree();
  TrainSummary two = pair.run();

  ASSERT_EQ(one.losses.size(), 30u);
  ASSERT_EQ(two.losses.size(), 30u);
  EXPECT_EQ(one.restarts, 1);
  EXPECT_EQ(two.restarts, 1);
  for (size_t i = 0; i < 30; ++i)
    EXPECT_LT(std::fabs(one.losses[i] - two.losses[i]) / one.losses[i], 1e-4) << "update " << i + 1;
  const auto& p1 = single.model().params();
  const auto& p2 = pair.model().params();
  ASSERT_EQ(p1.size(), p2.size());
  for (size_t i = 0; i < p1.size(); ++i)
    EXPECT_LT(max_relative_difference(p2[i]->value, p1[i]->value), 1e-4) << p1[i]->name;
  // communication: every trainable element once per update; less than 20% after warm start
  const Config cfg = config_from_overrides(run_overrides(dir, "pair"));
  const TrainableCounts counts = count_trainable(cfg.model, cfg.relora);
  EXPECT_EQ(one.comm_bytes_full, 0);
  EXPECT_EQ(two.comm_bytes_full, 4 * counts.full_phase);
  EXPECT_EQ(two.comm_bytes_relora, 4 * counts.relora_phase);
  // buckets of 10 KB: some complete, and start, while backward still runs
  EXPECT_GE(two.buckets_started_early, 1);

  // train.allreduce_dtype bf16: the same run within bf16's rounding of the gradients (the
  // replica checks at the restart pass: the ranks still agree bit for bit), half the bytes
  std::vector<std::string> overrides = run_overrides(dir, "pair_bf16");
  overrides.push_back("train.allreduce_dtype=bf16");
  Trainer pair_bf16(config_from_overrides(overrides), *g_comm);
  TrainSummary rounded = pair_bf16.run();
  ASSERT_EQ(rounded.losses.size(), 30u);
  double worst = 0.0;
  for (size_t i = 0; i < 30; ++i)
    worst = std::max(worst, std::fabs(one.losses[i] - rounded.losses[i]) / one.losses[i]);
  EXPECT_LT(worst, 2e-3);
  EXPECT_GT(worst, 0.0);  // the rounding is real
  EXPECT_EQ(rounded.comm_bytes_full, 2 * counts.full_phase);
  EXPECT_EQ(rounded.comm_bytes_relora, 2 * counts.relora_phase);
  if (g_comm->rank() == 0) std::printf("bf16 all-reduce: worst relative loss difference %.2e\n", worst);
}

void expect_close_losses(const std::vector<double>& got, const std::vector<double>& want, size_t offset) {
  ASSERT_EQ(got.size() + offset, want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_LT(std::fabs(got[i] - want[offset + i]) / want[offset + i], 1e-4) << "update " << offset + i + 1;
}

// A checkpoint written by 2 ranks continues on 1, and one written by 1 rank continues on 2
// (read by every rank, or by rank 0 and broadcast), with the same data order.
TEST(Mpi, ResumeOnAnotherWorldSize) {
  SharedDir dir;
  write_random_shard(dir, 12);
  auto with_checkpoints = [&](const std::string& run) {
    std::vector<std::string> o = run_overrides(dir, run);
    o.push_back("checkpoint.every=10");
    return o;
  };
  auto local = make_local_comm();
  const std::string own = "single" + std::to_string(g_comm->rank());
  const TrainSummary one = Trainer(config_from_overrides(with_checkpoints(own)), *local).run();
  Trainer pair(config_from_overrides(with_checkpoints("pair")), *g_comm);
  const TrainSummary two = pair.run();

  // np=2 -> np=1, from step 10 (the switch to adapters) and 20 (a restart)
  for (int from : {10, 20}) {
    Trainer t(config_from_overrides(with_checkpoints(own + "_from_pair")), *local);
    t.resume(dir.file("pair/" + checkpoint_name(from)));
    expect_close_losses(t.run().losses, two.losses, from);
  }
  // np=1 -> np=2, every rank reading the file, then rank 0 reading and broadcasting
  for (const char* read : {"shared", "broadcast"}) {
    std::vector<std::string> o = with_checkpoints(std::string("pair_from_single_") + read);
    o.push_back(std::string("checkpoint.read=") + read);
    Trainer t(config_from_overrides(o), *g_comm);
    t.resume(dir.file("single0/" + checkpoint_name(20)));
    t.check_ranks_agree();
    expect_close_losses(t.run().losses, one.losses, 20);
  }
}

// relora bench on 2 ranks: one micro-batch per rank per step, gradients really all-reduced,
// tokens counted over both, and every rank holding the same result.
TEST(Mpi, BenchCountsTokensOverRanks) {
  const Config cfg = config_from_overrides(
      {"model.vocab_size=64", "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2",
       "model.intermediate_size=48", "model.seq_len=16", "relora.rank=4", "train.micro_batch=2",
       "train.threads=1", "train.device=cpu"});
  BenchOptions options;
  options.steps = 2;
  options.warmup = 1;
  options.relora_phase = true;
  const BenchResult r = run_bench(cfg, *g_comm, options);
  EXPECT_EQ(r.world_size, 2);
  EXPECT_EQ(r.tokens_per_step, 2 * 2 * 16);
  EXPECT_GT(r.tokens_per_s, 0.0);
  EXPECT_GE(r.comm_ms, 0.0);
  double spread[2] = {r.tokens_per_s, -r.tokens_per_s};  // max of both, and -min
  g_comm->all_reduce(spread, 2, ReduceOp::max);
  EXPECT_EQ(spread[0], -spread[1]);
}

}  // namespace
}  // namespace relora
