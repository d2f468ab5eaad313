// The memory budget against what a run allocates: one full-rank update, the adapters'
// arrival, one ReLoRA update. On the CPU with ForwardingOps claiming Device::cuda and
// HostDeviceMemory counting the bytes, at world size 1 (test_device_paths) and 2 (the MPI
// tests, where a bf16 all-reduce adds staging buffers); on the CUDA backend's own memory
// (tests/cuda, on a GPU and in the emulator).
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "forwarding_ops.h"
#include "model/llama.h"
#include "model/memory_budget.h"
#include "optim/adamw.h"
#include "relora/restart.h"
#include "test_util.h"
#include "train/step.h"

namespace relora::testing {

// Every way a block can keep its activations: fp32 or bf16, each with and without recomputation.
inline std::vector<ActivationStorage> activation_storages() {
  return {{false, false}, {true, false}, {false, true}, {true, true}};
}
inline std::string describe(ActivationStorage storage) {
  return std::string(storage.recompute ? " recompute" : "") + (storage.bf16 ? " bf16 activations" : "");
}

// On `ops`, allocating from `memory` (reserved beforehand): one full-rank update, the
// adapters' arrival, one ReLoRA update. Expects the bytes in use after each phase's update,
// beyond those in use at the call, to equal memory_budget's total for that phase; then
// calls in_relora_phase with that phase's budget while its tensors are alive.
inline void expect_phase_totals_allocated(
    Ops& ops, const DeviceMemory& memory, Communicator& comm, const Config& cfg, ActivationStorage storage,
    const std::function<void(const MemoryBudget&)>& in_relora_phase = nullptr) {
  constexpr int kMicro = 2;
  const bool staging = bf16_staging(cfg.train, comm.world_size());
  const int64_t before = memory.bytes_in_use();
  Llama model(cfg.model, cfg.relora, ops, kMicro, storage);
  model.init_weights(1);
  AdamW optimizer(cfg.optimizer, ops);
  TrainStep step(model, optimizer, ops, comm, 1.0f, allreduce_dtype(cfg.train), kMicro, 1,
                 1LL * kMicro * cfg.model.seq_len * comm.world_size());
  step.rebuild();
  int64_t update = 0;
  const MicroBatchSource source = random_micro_batches(cfg.model, kMicro, &update);
  step.accumulate(source);
  step.apply(1e-2f, 1.0f);  // AdamW state exists from the first update on
  const MemoryBudget full = memory_budget(cfg.model, cfg.relora, ops, kMicro, storage, staging, false);
  EXPECT_EQ(memory.bytes_in_use() - before, full.total()) << describe(full);
  start_adapters(model, optimizer, 1, 1);
  step.rebuild();
  step.accumulate(source);
  step.apply(1e-2f, 1.0f);
  const MemoryBudget relora = memory_budget(cfg.model, cfg.relora, ops, kMicro, storage, staging, true);
  EXPECT_EQ(memory.bytes_in_use() - before, relora.total()) << describe(relora);
  if (in_relora_phase) in_relora_phase(relora);
}

// The same with ForwardingOps claiming Device::cuda (gemm_copies: with bf16_copy's product
// scratch) and HostDeviceMemory counting the bytes: also the pinned host bytes equal the
// host masters (relora.master_on_host), and the most ever in use equals peak_bytes.
inline void expect_budget_is_allocated(Communicator& comm, const Config& cfg, ActivationStorage storage,
                                       bool gemm_copies = false) {
  constexpr int kMicro = 2;
  const bool staging = bf16_staging(cfg.train, comm.world_size());
  HostDeviceMemory memory;
  set_device_memory(&memory);
  {
    ForwardingOps ops(Device::cuda, gemm_copies);
    const int64_t peak = peak_bytes(cfg.model, cfg.relora, ops, kMicro, storage, staging);
    reserve_device_arena(ops, peak, comm.world_size(), storage);
    expect_phase_totals_allocated(ops, memory, comm, cfg, storage, [&](const MemoryBudget& relora) {
      EXPECT_EQ(memory.pinned_bytes(), relora.host_masters) << describe(relora);
    });
    // the phase change held both phases' tensors at once: exactly peak_bytes
    EXPECT_GT(memory.peak_bytes_in_use(), memory_budget(cfg.model, cfg.relora, ops, kMicro, storage, staging, false).total());
    EXPECT_EQ(memory.peak_bytes_in_use(), peak);
  }
  set_device_memory(nullptr);
}

}  // namespace relora::testing
