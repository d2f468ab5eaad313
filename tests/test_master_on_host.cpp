// relora.master_on_host, on the CPU through the device code paths (ForwardingOps claiming
// Device::cuda, HostDeviceMemory): the block projections' fp32 masters move to pinned host
// memory and bf16 copies serve the products; merges update the masters in fp32 exactly as
// the device merge would and refresh the copies; checkpoints hold the masters and a resumed
// run is bit-identical; the products round as the CPU reference of gemm_bf16 says; loss and
// gradients stay within bf16 rounding of fp32's. (The budget and `relora eval`'s model with
// masters on the host: DevicePaths.*)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "core/bf16.h"
#include "core/rng.h"
#include "dist/communicator.h"
#include "forwarding_ops.h"
#include "model/llama.h"
#include "model/memory_budget.h"
#include "optim/adamw.h"
#include "relora/restart.h"
#include "test_util.h"
#include "train/step.h"

namespace relora {
namespace {

constexpr int kMicro = 2;
using Floats = std::vector<float>;

Floats host_copy(const Tensor& t) {
  const Tensor host = t.to_host();
  return Floats(host.data(), host.data() + host.numel());
}

bool is_block_projection(const Param& p) {
  return p.name.rfind("model.layers.", 0) == 0 && p.name.find("_proj.weight") != std::string::npos;
}

// The loss of a fixed batch, forward only.
double loss_of(Llama& model, const ModelConfig& config) {
  int64_t batch = 99;
  std::vector<int32_t> inputs(static_cast<size_t>(kMicro) * config.seq_len), targets(inputs.size());
  testing::random_micro_batches(config, kMicro, &batch)(0, inputs.data(), targets.data());
  return model.forward(inputs.data(), targets.data(), kMicro, false, 0.0f);
}

Config master_on_host_config() {
  Config cfg = testing::small_training_config();
  cfg.relora.master_on_host = true;
  return cfg;
}

// A model with its optimizer and step on `ops`, trained to and through the adapters' start.
struct TrainingRun {
  TrainingRun(Ops& ops, const Config& cfg)
      : comm(make_local_comm()),
        model(cfg.model, cfg.relora, ops, kMicro),
        optimizer(cfg.optimizer, ops),
        step(model, optimizer, ops, *comm, 1.0f, DType::f32, kMicro, 1,
             1LL * kMicro * cfg.model.seq_len),
        source(testing::random_micro_batches(cfg.model, kMicro, &update)) {
    model.init_weights(1);
    step.rebuild();
  }
  double update_once() {
    ++update;
    const double loss = step.accumulate(source);
    step.apply(1e-2f, 1.0f);
    return loss;
  }
  std::unique_ptr<Communicator> comm;
  Llama model;
  AdamW optimizer;
  TrainStep step;
  int64_t update = 0;
  MicroBatchSource source;
};

TEST(MasterOnHost, GemmBf16RoundsItsInputAndMultipliesExactly) {
  auto ops = make_cpu_ops();
  const int M = 3, N = 4, K = 5;
  Floats a(M * K), w(N * K), c(M * N, 0.5f);
  fill_uniform(a.data(), M * K, -1.0f, 1.0f, {1, RngPurpose::test, 0, 0});
  fill_uniform(w.data(), N * K, -1.0f, 1.0f, {2, RngPurpose::test, 0, 0});
  std::vector<uint16_t> w_words(w.size()), a_words(a.size());
  ops->to_bf16(w_words.data(), w.data(), N * K);
  // C = 2 A W^T + C, W stored (N,K) as the weights are
  ops->gemm_bf16(true, M, N, K, 2.0f, a.data(), w_words.data(), K, 1.0f, c.data(), N, a_words.data());
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double want = 0.5;
      for (int k = 0; k < K; ++k)
        want += 2.0 * bf16_to_float(float_to_bf16(a[i * K + k])) * bf16_to_float(w_words[j * K + k]);
      EXPECT_NEAR(c[i * N + j], want, 1e-6) << i << " " << j;
    }
  for (int i = 0; i < M * K; ++i) EXPECT_EQ(a_words[i], float_to_bf16(a[i]));
}

// The masters keep their fp32 values on the host, pinned; a merge adds s B A to them in
// fp32 exactly as the fp32 product on the CPU does.
TEST(MasterOnHost, MastersMoveToTheHostAndMergeInFp32) {
  const Config cfg = master_on_host_config();
  testing::HostDeviceMemory memory;
  set_device_memory(&memory);
  {
    testing::ForwardingOps device_ops(Device::cuda);
    reserve_device_arena(device_ops, peak_bytes(cfg.model, cfg.relora, device_ops, kMicro, {}, false), 1, {});
    TrainingRun run(device_ops, cfg);
    run.update_once();
    std::vector<Floats> before;
    for (const Param* p : run.model.params())
      if (is_block_projection(*p)) before.push_back(host_copy(p->value));
    start_adapters(run.model, run.optimizer, 1, run.update);
    run.step.rebuild();
    int64_t pinned = 0;
    size_t i = 0;
    for (const Param* p : run.model.params()) {
      if (!is_block_projection(*p)) continue;
      EXPECT_TRUE(p->value.on_host()) << p->name;
      EXPECT_FALSE(p->trainable()) << p->name;
      EXPECT_EQ(host_copy(p->value), before[i++]) << p->name;
      pinned += static_cast<int64_t>(p->value.bytes());
    }
    EXPECT_EQ(memory.pinned_bytes(), pinned);
    run.update_once();
    run.update_once();  // B is no longer zero

    // the merge, predicted with the CPU's fp32 product
    auto cpu = make_cpu_ops();
    const float scale = cfg.relora.alpha / static_cast<float>(cfg.relora.rank);
    std::vector<Floats> want;
    for (const Param* p : run.model.params()) {
      if (!is_block_projection(*p) || !run.model.find(p->name.substr(0, p->name.size() - 7) + "/A")) continue;
      const std::string module = p->name.substr(0, p->name.size() - 7);  // without ".weight"
      const Floats a = host_copy(run.model.find(module + "/A")->value);
      const Floats b = host_copy(run.model.find(module + "/B")->value);
      Floats w = host_copy(p->value);
      const int out = static_cast<int>(p->value.dim(0)), in = static_cast<int>(p->value.dim(1));
      cpu->gemm_exact(false, false, out, in, cfg.relora.rank, scale, b.data(), cfg.relora.rank, a.data(),
                      in, 1.0f, w.data(), in);
      want.push_back(w);
    }
    ASSERT_FALSE(want.empty());
    merge_and_restart(run.model, run.optimizer, cfg.relora, 1, run.update);
    i = 0;
    for (const Param* p : run.model.params()) {
      if (!is_block_projection(*p) || !run.model.find(p->name.substr(0, p->name.size() - 7) + "/A")) continue;
      EXPECT_EQ(host_copy(p->value), want[i++]) << p->name;
    }
    // the products use the merged masters' bf16 copies, not stale ones
    const double after_merge = loss_of(run.model, cfg.model);
    run.model.refresh_bf16_weights();
    EXPECT_EQ(loss_of(run.model, cfg.model), after_merge);
  }
  EXPECT_EQ(memory.pinned_bytes(), 0);  // unpinned when the masters went
  set_device_memory(nullptr);
}

// Training through the adapters' start and a merge: the losses stay within bf16 rounding
// of the fp32 device run's; a checkpoint taken in between holds the fp32 masters, and a
// run resumed from it ends bit-identical to the uninterrupted one.
TEST(MasterOnHost, TracksFp32AndResumesExactly) {
  testing::TempDir dir;
  testing::HostDeviceMemory memory;
  set_device_memory(&memory);
  {
    testing::ForwardingOps device_ops(Device::cuda);
    auto schedule = [](TrainingRun& run, const Config& cfg, int64_t upto, std::vector<double>* losses) {
      while (run.update < upto) {
        losses->push_back(run.update_once());
        if (run.update == 2) {
          start_adapters(run.model, run.optimizer, 1, run.update);
          run.step.rebuild();
        }
        if (run.update == 4) merge_and_restart(run.model, run.optimizer, cfg.relora, 1, run.update);
      }
    };
    const Config fp32_cfg = testing::small_training_config(), cfg = master_on_host_config();
    reserve_device_arena(device_ops, 3 * peak_bytes(cfg.model, cfg.relora, device_ops, kMicro, {}, false), 1, {});
    std::vector<double> fp32_losses, losses, resumed_losses;
    {
      TrainingRun fp32(device_ops, fp32_cfg);
      schedule(fp32, fp32_cfg, 6, &fp32_losses);
    }
    TrainingRun whole(device_ops, cfg);
    schedule(whole, cfg, 3, &losses);
    RunState state;
    state.relora_phase = true;
    state.step = 3;
    state.world_size = 1;
    state.config_yaml = config_to_yaml(cfg);
    save_checkpoint(dir.file("step3.h5"), state, whole.model, whole.optimizer);
    schedule(whole, cfg, 6, &losses);
    ASSERT_EQ(losses.size(), fp32_losses.size());
    for (size_t i = 0; i < losses.size(); ++i) {
      EXPECT_NEAR(losses[i], fp32_losses[i], 1e-2 * fp32_losses[i]) << "update " << i + 1;
      if (i >= 2) {
        EXPECT_NE(losses[i], fp32_losses[i]) << "bf16 products from the adapters' start on";
      }
    }

    TrainingRun resumed(device_ops, cfg);
    start_adapters(resumed.model, resumed.optimizer, 1, 3);
    resumed.step.rebuild();
    read_tensors(dir.file("step3.h5"), resumed.model, resumed.optimizer);
    resumed.update = 3;
    schedule(resumed, cfg, 6, &resumed_losses);
    ASSERT_EQ(resumed_losses.size(), 3u);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(resumed_losses[i], losses[3 + i]) << "update " << 4 + i;
    for (size_t i = 0; i < whole.model.params().size(); ++i)
      EXPECT_EQ(host_copy(resumed.model.params()[i]->value), host_copy(whole.model.params()[i]->value))
          << whole.model.params()[i]->name;
  }
  set_device_memory(nullptr);
}

// The trainable gradients of one backward in the ReLoRA phase (adapters drawn away from
// zero so that every product matters).
std::vector<Floats> relora_gradients(Ops& ops, const Config& cfg) {
  Llama model(cfg.model, cfg.relora, ops, kMicro);
  model.init_weights(1);
  model.enter_relora_phase(AdapterInit{1, 0});
  for (Param* p : model.adapter_params()) {
    Floats values(static_cast<size_t>(p->value.numel()));
    fill_normal(values.data(), p->value.numel(), 0.0f, 0.2f, {7, RngPurpose::test, tensor_id(p->name), 0});
    p->value.copy_from_host(values.data());
  }
  int64_t batch = 0;
  std::vector<int32_t> inputs(static_cast<size_t>(kMicro) * cfg.model.seq_len), targets(inputs.size());
  testing::random_micro_batches(cfg.model, kMicro, &batch)(0, inputs.data(), targets.data());
  model.forward(inputs.data(), targets.data(), kMicro, true, 1.0f / static_cast<float>(inputs.size()));
  model.backward(kMicro);
  std::vector<Floats> gradients;
  for (const Param* p : model.trainable()) gradients.push_back(host_copy(p->grad));
  return gradients;
}

// Every trainable gradient within 3e-2 of its tensor's largest fp32 gradient (bf16 inputs
// to the block products); a backward that overwrote instead of adding would be far off.
TEST(MasterOnHost, GradientsTrackFp32) {
  testing::HostDeviceMemory memory;
  set_device_memory(&memory);
  {
    testing::ForwardingOps device_ops(Device::cuda);
    const Config cfg = master_on_host_config(), fp32 = testing::small_training_config();
    reserve_device_arena(device_ops, 2 * peak_bytes(cfg.model, cfg.relora, device_ops, kMicro, {}, false), 1, {});
    const std::vector<Floats> got = relora_gradients(device_ops, cfg), want = relora_gradients(device_ops, fp32);
    ASSERT_EQ(got.size(), want.size());
    for (size_t t = 0; t < want.size(); ++t) {
      float scale = 0.0f;
      for (float g : want[t]) scale = std::max(scale, std::fabs(g));
      for (size_t i = 0; i < want[t].size(); ++i)
        ASSERT_NEAR(got[t][i], want[t][i], 3e-2f * scale) << "tensor " << t << " [" << i << "]";
    }
  }
  set_device_memory(nullptr);
}

}  // namespace
}  // namespace relora
