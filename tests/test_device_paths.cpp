// The model's device code paths on the CPU: with ForwardingOps claiming Device::cuda and
// HostDeviceMemory serving the "device" tensors, training goes through every staging copy
// a GPU run makes (initial draws, token upload, bucket zeroing, optimizer state, pruning on
// the host, merges), and checkpoints are written from and read into device tensors. Losses,
// weights and checkpoints must equal those of host tensors bit for bit, and the memory
// budget must equal what is allocated, in both phases, within the arena the budget sized.
#include <gtest/gtest.h>

#include <vector>

#include "backend/ops.h"
#include "budget_check.h"
#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "core/rng.h"
#include "dist/communicator.h"
#include "forwarding_ops.h"
#include "model/llama.h"
#include "model/lora_linear.h"
#include "model/memory_budget.h"
#include "optim/adamw.h"
#include "relora/restart.h"
#include "test_util.h"
#include "train/evaluate.h"
#include "train/step.h"

namespace relora {
namespace {

constexpr int kMicro = 2;

// Six updates with two micro-batches each: 2 full-rank, adapters start, 2, merge-and-restart,
// 2. Returns the losses and the final weights (host copies).
struct TrainedRun {
  std::vector<double> losses;
  std::vector<std::vector<float>> weights;
};

TrainedRun train(Ops& ops, const Config& cfg) {
  auto comm = make_local_comm();
  reserve_device_arena(ops, peak_bytes(cfg.model, cfg.relora, ops, kMicro, {}, false), 1, {});
  Llama model(cfg.model, cfg.relora, ops, kMicro);
  model.init_weights(1);
  AdamW optimizer(cfg.optimizer, ops);
  TrainStep step(model, optimizer, ops, *comm, 1.0f, DType::f32, kMicro, 2, 2LL * kMicro * cfg.model.seq_len);
  step.rebuild();
  TrainedRun run;
  int64_t update = 0;
  const MicroBatchSource source = testing::random_micro_batches(cfg.model, kMicro, &update);
  for (update = 1; update <= 6; ++update) {
    run.losses.push_back(step.accumulate(source));
    step.apply(1e-2f, 1.0f);
    if (update == 2) {
      start_adapters(model, optimizer, 1, update);
      step.rebuild();
    }
    if (update == 4) merge_and_restart(model, optimizer, cfg.relora, 1, update);
  }
  for (const Param* p : model.params()) {
    const Tensor host = p->value.to_host();
    run.weights.emplace_back(host.data(), host.data() + host.numel());
  }
  return run;
}

TEST(DevicePaths, TrainingMatchesHostTensorsBitForBit) {
  const Config cfg = testing::small_training_config();
  testing::HostDeviceMemory memory;
  set_device_memory(&memory);
  testing::ForwardingOps host_ops(Device::cpu), device_ops(Device::cuda);
  const TrainedRun on_host = train(host_ops, cfg);
  const TrainedRun on_device = train(device_ops, cfg);
  EXPECT_EQ(on_host.losses, on_device.losses);
  ASSERT_EQ(on_host.weights.size(), on_device.weights.size());
  for (size_t i = 0; i < on_host.weights.size(); ++i) EXPECT_EQ(on_host.weights[i], on_device.weights[i]) << i;
  EXPECT_EQ(memory.bytes_in_use(), 0);  // every device tensor freed
  set_device_memory(nullptr);
}

TEST(DevicePaths, MemoryBudgetIsWhatIsAllocated) {
  auto comm = make_local_comm();
  for (const ActivationStorage storage : testing::activation_storages()) {
    for (const char* embeddings : {"lora", "full", "frozen"}) {
      SCOPED_TRACE(std::string(embeddings) + testing::describe(storage));
      Config cfg = testing::small_training_config();
      cfg.relora.embeddings = embeddings;
      testing::expect_budget_is_allocated(*comm, cfg, storage);
    }
  }
  // a bf16 all-reduce at world size 1 communicates nothing and stages nothing
  Config cfg = testing::small_training_config();
  cfg.train.allreduce_dtype = "bf16";
  testing::expect_budget_is_allocated(*comm, cfg, {});
  // bf16 block weights on the device, their masters on the host (two targets: the frozen
  // projections without adapters move too)
  for (const ActivationStorage storage : testing::activation_storages()) {
    SCOPED_TRACE(std::string("master_on_host") + testing::describe(storage));
    cfg = testing::small_training_config();
    cfg.relora.master_on_host = true;
    cfg.relora.targets = {"v_proj", "down_proj"};
    testing::expect_budget_is_allocated(*comm, cfg, storage);
  }
  // train.matmul: bf16_copy's product scratch (one for the model, both phases), with bf16
  // weights too
  for (bool master_on_host : {false, true}) {
    SCOPED_TRACE(std::string("bf16 copies") + (master_on_host ? " master_on_host" : ""));
    cfg = testing::small_training_config();
    cfg.relora.master_on_host = master_on_host;
    testing::expect_budget_is_allocated(*comm, cfg, {}, true);
    testing::expect_budget_is_allocated(*comm, cfg, {true, true}, true);
  }
}

// The product scratch is the most LoraLinear::words_for_products gives for any linear
// (with adapters of the config's rank, whose copies need more than none). In a micro-batch's forward and backward every weight product runs on it:
// 3 products on words per linear (forward, input and weight gradients) in the full-rank
// phase; 5 per adapted linear in the ReLoRA phase (forward xa and y = [x | xa][W | sB]^T,
// backward dy_b, dx = [dy | dy_b][W ; sA] and dB).
TEST(DevicePaths, ProductScratchGoesToTheWeightProducts) {
  const Config cfg = testing::small_training_config();
  testing::ForwardingOps copies(Device::cuda, true);
  const testing::ForwardingOps none(Device::cuda);
  const int N = 2 * cfg.model.seq_len, V = cfg.model.vocab_size, C = cfg.model.hidden_size;
  ASSERT_GT(V, N);
  const int r = cfg.relora.rank, F = cfg.model.intermediate_size;
  for (int rank : {0, r}) {
    int64_t most = 0;
    for (const auto& [in, out] : {std::pair{C, C}, {C, F}, {F, C}, {C, V}})
      most = std::max(most, LoraLinear::words_for_products(N, in, out, rank));
    EXPECT_EQ(product_scratch_words(cfg.model, copies, 2, rank), most) << rank;
  }
  EXPECT_GT(LoraLinear::words_for_products(N, C, V, r), LoraLinear::words_for_products(N, C, V, 0));
  EXPECT_EQ(product_scratch_words(cfg.model, none, 2, r), 0);

  testing::HostDeviceMemory memory;
  set_device_memory(&memory);
  {
    memory.reserve(int64_t{64} << 20, 0);
    Llama model(cfg.model, cfg.relora, copies, 2);
    model.init_weights(1);
    int64_t step = 0;
    std::vector<int32_t> inputs(2 * cfg.model.seq_len), targets(inputs.size());
    testing::random_micro_batches(cfg.model, 2, &step)(0, inputs.data(), targets.data());
    const int64_t linears = 7 * cfg.model.num_layers + 1;
    for (bool relora_phase : {false, true}) {
      if (relora_phase) model.enter_relora_phase({1, 0});
      copies.word_products = 0;
      model.forward(inputs.data(), targets.data(), 2, true, 1.0f);
      model.backward(2);
      EXPECT_EQ(copies.word_products, (relora_phase ? 5 : 3) * linears) << relora_phase;
    }
  }
  set_device_memory(nullptr);
}

// A checkpoint saved from device tensors (weights, adapters, Adam state) loads into host
// tensors with the same bits, and back into device tensors.
TEST(DevicePaths, CheckpointsMoveBetweenDeviceAndHostTensors) {
  const Config cfg = testing::small_training_config();
  testing::TempDir dir;
  testing::HostDeviceMemory memory;
  set_device_memory(&memory);
  {
    testing::ForwardingOps device_ops(Device::cuda), host_ops(Device::cpu);
    struct Run {
      Run(Ops& ops, const Config& cfg) : model(cfg.model, cfg.relora, ops, kMicro), optimizer(cfg.optimizer, ops) {
        model.init_weights(1);
        start_adapters(model, optimizer, 1, 0);
      }
      Llama model;
      AdamW optimizer;
    };
    reserve_device_arena(device_ops, peak_bytes(cfg.model, cfg.relora, device_ops, kMicro, {}, false), 1, {});
    Run trained(device_ops, cfg);
    auto comm = make_local_comm();
    TrainStep step(trained.model, trained.optimizer, device_ops, *comm, 1.0f, DType::f32, kMicro, 1,
                   1LL * kMicro * cfg.model.seq_len);
    step.rebuild();
    int64_t update = 0;
    step.accumulate(testing::random_micro_batches(cfg.model, kMicro, &update));
    step.apply(1e-2f, 1.0f);
    RunState state;
    state.relora_phase = true;
    state.world_size = 1;
    state.config_yaml = config_to_yaml(cfg);
    save_checkpoint(dir.file("device.h5"), state, trained.model, trained.optimizer);

    Run on_host(host_ops, cfg);
    read_tensors(dir.file("device.h5"), on_host.model, on_host.optimizer);
    save_checkpoint(dir.file("host.h5"), state, on_host.model, on_host.optimizer);
    Run on_device(device_ops, cfg);
    read_tensors(dir.file("host.h5"), on_device.model, on_device.optimizer);
    const auto& want = trained.model.params();
    for (const Llama* loaded : {&on_host.model, &on_device.model}) {
      ASSERT_EQ(loaded->params().size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        const Tensor a = want[i]->value.to_host(), b = loaded->params()[i]->value.to_host();
        EXPECT_EQ(std::vector<float>(a.data(), a.data() + a.numel()),
                  std::vector<float>(b.data(), b.data() + b.numel()))
            << want[i]->name;
      }
    }
    for (const Param* p : trained.model.trainable()) {
      const AdamState* a = trained.optimizer.state(p->name);
      const AdamState* b = on_device.optimizer.state(p->name);
      ASSERT_TRUE(a && b) << p->name;
      const Tensor am = a->exp_avg_sq.to_host(), bm = b->exp_avg_sq.to_host();
      EXPECT_EQ(std::vector<float>(am.data(), am.data() + am.numel()),
                std::vector<float>(bm.data(), bm.data() + bm.numel()))
          << p->name;
      EXPECT_EQ(a->step, b->step);
    }
  }
  set_device_memory(nullptr);
}

// A checkpoint (step 3) of a small model on the host in the given phase, with adapters away
// from zero and AdamW state; returns the model that wrote it.
std::unique_ptr<Llama> save_small_checkpoint(const std::string& path, const Config& cfg, Ops& host_ops,
                                             bool relora_phase) {
  RunState state;
  state.relora_phase = relora_phase;
  state.step = 3;
  state.world_size = 1;
  state.config_yaml = config_to_yaml(cfg);
  auto trained = std::make_unique<Llama>(cfg.model, cfg.relora, host_ops, kMicro);
  trained->init_weights(1);
  AdamW optimizer(cfg.optimizer, host_ops);
  if (relora_phase) {
    start_adapters(*trained, optimizer, 7, 3);
    for (Param* p : trained->adapter_params()) p->value.fill(0.25f);  // B is no longer zero
  }
  optimizer.step(trained->trainable(), 1e-3f);
  save_checkpoint(path, state, *trained, optimizer);
  return trained;
}

// `relora eval`'s model from a checkpoint of either phase, in device memory: the weights
// (and adapters) the run saved, within eval_peak_bytes (exactly that for the full-rank
// phase; in the ReLoRA phase at least that phase's budget); with relora.master_on_host the
// block projections' masters on the host, pinned as the budget says.
TEST(DevicePaths, EvalModelFromACheckpointFitsItsPeak) {
  for (int variant : {0, 1, 2}) {
    const bool relora_phase = variant > 0;
    SCOPED_TRACE(variant == 0 ? "full" : variant == 1 ? "relora" : "relora, master_on_host");
    Config cfg = testing::small_training_config();
    cfg.relora.master_on_host = variant == 2;
    testing::TempDir dir;
    testing::ForwardingOps host_ops(Device::cpu), device_ops(Device::cuda);
    const std::unique_ptr<Llama> written = save_small_checkpoint(dir.file("run.h5"), cfg, host_ops, relora_phase);
    const Llama& trained = *written;
    RunState state;
    state.relora_phase = relora_phase;
    state.step = 3;

    testing::HostDeviceMemory memory;
    set_device_memory(&memory);
    {
      std::unique_ptr<Llama> loaded = model_for_eval(cfg, device_ops, dir.file("run.h5"), state);
      ASSERT_EQ(loaded->relora_phase(), relora_phase);
      ASSERT_EQ(loaded->params().size(), trained.params().size());
      for (size_t i = 0; i < trained.params().size(); ++i) {
        const Tensor a = trained.params()[i]->value.to_host();
        const Tensor b = loaded->params()[i]->value.to_host();
        EXPECT_EQ(std::vector<float>(a.data(), a.data() + a.numel()),
                  std::vector<float>(b.data(), b.data() + b.numel()))
            << trained.params()[i]->name;
      }
      const int micro = cfg.train.micro_batch;
      const int64_t peak = eval_peak_bytes(cfg.model, cfg.relora, device_ops, micro, {}, relora_phase);
      const int64_t phase_total =
          memory_budget(cfg.model, cfg.relora, device_ops, micro, {}, false, relora_phase).total();
      EXPECT_LE(memory.peak_bytes_in_use(), peak);
      EXPECT_GE(memory.peak_bytes_in_use(), phase_total);
      if (!relora_phase) {
        EXPECT_EQ(peak, phase_total);
      }
      EXPECT_EQ(memory.pinned_bytes(),
                memory_budget(cfg.model, cfg.relora, device_ops, micro, {}, false, relora_phase).host_masters);
      for (const Param* p : loaded->params()) {
        if (p->name.find("_proj.weight") != std::string::npos) {
          EXPECT_EQ(p->value.on_host(), cfg.relora.master_on_host) << p->name;
        }
      }
    }
    set_device_memory(nullptr);
  }
}

// A run resumed in the ReLoRA phase (Trainer::rebuild_for_relora_resume, then the resume
// and an update; `relora bench --phase relora` starts the same way, drawing weights where
// the resume reads them): within resume_peak_bytes, which is well under the peak of a run
// that trains full-rank first; with and without masters on the host.
TEST(DevicePaths, ReloraResumeFitsItsSmallerPeak) {
  for (bool masters_on_host : {false, true}) {
    SCOPED_TRACE(masters_on_host ? "master_on_host" : "device masters");
    Config cfg = testing::small_training_config();
    cfg.relora.master_on_host = masters_on_host;
    testing::TempDir dir;
    testing::ForwardingOps host_ops(Device::cpu), device_ops(Device::cuda);
    save_small_checkpoint(dir.file("run.h5"), cfg, host_ops, true);
    testing::HostDeviceMemory memory;
    set_device_memory(&memory);
    {
      const int64_t peak = resume_peak_bytes(cfg.model, cfg.relora, device_ops, kMicro, {}, false);
      EXPECT_LT(peak, peak_bytes(cfg.model, cfg.relora, device_ops, kMicro, {}, false));
      reserve_device_arena(device_ops, peak, 1, {});
      Llama model(cfg.model, cfg.relora, device_ops, kMicro);
      model.init_weights(1);  // as the bench does
      AdamW optimizer(cfg.optimizer, device_ops);
      start_adapters(model, optimizer, 1, 3);
      read_tensors(dir.file("run.h5"), model, optimizer);
      auto comm = make_local_comm();
      TrainStep step(model, optimizer, device_ops, *comm, 1.0f, DType::f32, kMicro, 1,
                     1LL * kMicro * cfg.model.seq_len);
      step.rebuild();
      int64_t update = 3;
      step.accumulate(testing::random_micro_batches(cfg.model, kMicro, &update));
      step.apply(1e-2f, 1.0f);
      EXPECT_LE(memory.peak_bytes_in_use(), peak);
      EXPECT_EQ(memory.bytes_in_use(),
                memory_budget(cfg.model, cfg.relora, device_ops, kMicro, {}, false, true).total());
    }
    set_device_memory(nullptr);
  }
}

// The shipped 1.3B config at micro-batch 4, seq 512, with recomputation: the ReLoRA phase
// needs at most 60% of the full-rank phase's memory (CPU attention state, T x T per head,
// is larger than the GPU's, so the GPU's ratio is lower still).
TEST(MemoryBudget, ReloraPhaseOfTheBillionModelFitsInSixtyPercent) {
  Config cfg = load_config(testing::source_dir() + "/configs/llama_1b.yaml");
  cfg.model.seq_len = 512;
  auto ops = make_cpu_ops();
  const MemoryBudget full = memory_budget(cfg.model, cfg.relora, *ops, 4, {true}, false, false);
  const MemoryBudget relora = memory_budget(cfg.model, cfg.relora, *ops, 4, {true}, false, true);
  EXPECT_LE(static_cast<double>(relora.total()), 0.6 * static_cast<double>(full.total()))
      << "full " << describe(full) << ", relora " << describe(relora);
  EXPECT_EQ(full.weights, relora.weights);
  EXPECT_GT(relora.adapters, 0);
  EXPECT_EQ(full.adapters, 0);
}

// A run that cannot fit in the host's memory stops with the numbers and what to change,
// not in the OOM killer's hands; a device backend's memory is checked by its arena instead.
TEST(MemoryBudget, HostMemoryIsCheckedBeforeTheModelIsBuilt) {
  auto cpu = make_cpu_ops();
  EXPECT_NO_THROW(check_host_memory(*cpu, 1 << 20, 2, {}));
  testing::expect_contains(testing::input_error_of([&] { check_host_memory(*cpu, int64_t{1} << 60, 2, {}); }),
                           {"the run needs", "2 rank(s) on this node", "this node has",
                            "lower train.micro_batch, set train.recompute: true or train.activation_dtype: bf16, "
                            "run fewer ranks per node"});
  testing::ForwardingOps device(Device::cuda);
  EXPECT_NO_THROW(check_host_memory(device, int64_t{1} << 60, 2, {}));
}

// The remedies leave out what the run already does.
TEST(MemoryBudget, RemediesNameOnlySettingsNotYetTaken) {
  EXPECT_EQ(memory_remedies({false, false}),
            "lower train.micro_batch, set train.recompute: true or train.activation_dtype: bf16");
  EXPECT_EQ(memory_remedies({true, false}), "lower train.micro_batch, set train.activation_dtype: bf16");
  EXPECT_EQ(memory_remedies({false, true}), "lower train.micro_batch, set train.recompute: true");
  EXPECT_EQ(memory_remedies({true, true}), "lower train.micro_batch");
}

}  // namespace
}  // namespace relora
