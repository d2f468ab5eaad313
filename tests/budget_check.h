// The memory budget against what a run allocates: one full-rank update, the adapters'
// arrival, one ReLoRA update, with ForwardingOps claiming Device::cuda and HostDeviceMemory
// counting the bytes. Used at world size 1 (test_device_paths) and 2 (the MPI tests, where a
// bf16 all-reduce adds staging buffers).
#pragma once
#include <gtest/gtest.h>

#include "dist/communicator.h"
#include "forwarding_ops.h"
#include "model/llama.h"
#include "model/memory_budget.h"
#include "optim/adamw.h"
#include "relora/restart.h"
#include "test_util.h"
#include "train/step.h"

namespace relora::testing {

// Expects the bytes in use after each phase's update to equal memory_budget's total for
// that phase, the most ever in use to equal peak_bytes, and the pinned host bytes to equal
// the host masters (relora.master_on_host).
inline void expect_budget_is_allocated(Communicator& comm, const Config& cfg, bool recompute) {
  constexpr int kMicro = 2;
  const bool staging = bf16_staging(cfg.train, comm.world_size());
  HostDeviceMemory memory;
  set_device_memory(&memory);
  {
    ForwardingOps ops(Device::cuda);
    reserve_device_arena(ops, peak_bytes(cfg.model, cfg.relora, ops, kMicro, recompute, staging));
    Llama model(cfg.model, cfg.relora, ops, kMicro, recompute);
    model.init_weights(1);
    AdamW optimizer(cfg.optimizer, ops);
    TrainStep step(model, optimizer, ops, comm, 1.0f, allreduce_dtype(cfg.train), kMicro, 1,
                   1LL * kMicro * cfg.model.seq_len * comm.world_size());
    step.rebuild();
    int64_t update = 0;
    const MicroBatchSource source = random_micro_batches(cfg.model, kMicro, &update);
    step.accumulate(source);
    step.apply(1e-2f, 1.0f);  // AdamW state exists from the first update on
    const MemoryBudget full = memory_budget(cfg.model, cfg.relora, ops, kMicro, recompute, staging, false);
    EXPECT_EQ(memory.bytes_in_use(), full.total()) << describe(full);
    start_adapters(model, optimizer, 1, 1);
    step.rebuild();
    step.accumulate(source);
    step.apply(1e-2f, 1.0f);
    const MemoryBudget relora = memory_budget(cfg.model, cfg.relora, ops, kMicro, recompute, staging, true);
    EXPECT_EQ(memory.bytes_in_use(), relora.total()) << describe(relora);
    EXPECT_EQ(memory.pinned_bytes(), relora.host_masters) << describe(relora);
    // the phase change held both phases' tensors at once: exactly peak_bytes
    EXPECT_GT(memory.peak_bytes_in_use(), full.total());
    EXPECT_EQ(memory.peak_bytes_in_use(), peak_bytes(cfg.model, cfg.relora, ops, kMicro, recompute, staging));
  }
  set_device_memory(nullptr);
}

}  // namespace relora::testing
