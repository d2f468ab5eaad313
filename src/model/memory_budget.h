// What one rank holds in its backend's memory for a model, by category and phase, from the
// config alone: what `relora train` prints at start, and (tested) exactly what the model,
// the gradient buckets and AdamW allocate. fp32, the weights doubling as the merge masters;
// except with relora.master_on_host on a device, where the ReLoRA phase keeps the block
// projections as bf16 on the device and their fp32 masters in pinned host memory.
#pragma once
#include <cstdint>
#include <string>

#include "backend/ops.h"
#include "config/config.h"
#include "model/llama.h"

namespace relora {

struct MemoryBudget {
  int64_t weights = 0;      // base weights and norms
  int64_t adapters = 0;     // LoRA A and B (ReLoRA phase)
  int64_t gradients = 0;    // gradients of the trainable tensors (the all-reduce buckets,
                            // and their bf16 staging with a bf16 all-reduce)
  int64_t optimizer = 0;    // AdamW moments of the trainable tensors
  int64_t activations = 0;  // saved activations, backward and attention scratch, token ids
  int64_t host_masters = 0; // pinned host memory: fp32 masters of bf16 weights (not in total)
  int64_t total() const { return weights + adapters + gradients + optimizer + activations; }
};

// Activations for micro-batches of max_batch sequences; ops decides attention's saved state
// and scratch sizes; storage as train.recompute and train.activation_dtype; bf16_staging:
// the gradient buckets have bf16 staging buffers (train.allreduce_dtype bf16 at world size
// > 1).
MemoryBudget memory_budget(const ModelConfig& model, const ReloraConfig& relora, const Ops& ops,
                           int max_batch, ActivationStorage storage, bool bf16_staging, bool relora_phase);

// The most a training run holds at once: the larger of the ReLoRA phase's budget and the
// full-rank phase's plus the new adapters, their gradients and activation buffers (at the
// phase change both are alive until the optimizer drops the frozen tensors' state and the
// buckets are rebuilt).
int64_t peak_bytes(const ModelConfig& model, const ReloraConfig& relora, const Ops& ops,
                   int max_batch, ActivationStorage storage, bool bf16_staging);

// The most `relora eval` (model_for_eval) holds for a checkpoint of the given phase: it
// builds the model as training does and loads that phase's optimizer state, so that phase's
// budget (without all-reduce staging); in the ReLoRA phase also the full-rank model with
// gradients (no optimizer state) that it starts from while the adapters arrive.
int64_t eval_peak_bytes(const ModelConfig& model, const ReloraConfig& relora, const Ops& ops,
                        int max_batch, ActivationStorage storage, bool relora_phase);

// The most a run resumed in the ReLoRA phase holds: the full-rank model with gradients but
// no optimizer state or buckets, switching phase (eval_peak_bytes), then the ReLoRA phase,
// whose bucket rebuild may hold every trainable gradient twice for a moment. Much less than
// peak_bytes, which must hold the warm start's optimizer state and buckets too.
int64_t resume_peak_bytes(const ModelConfig& model, const ReloraConfig& relora, const Ops& ops,
                          int max_batch, ActivationStorage storage, bool bf16_staging);

// Device memory a run must leave free beside its arena: CUDA loads kernel modules (ours,
// cuBLAS's) lazily, 1 GiB; with NCCL (world size > 1 on a GPU) 3 GiB more for its buffers,
// made at its first collective (NVLS on NVSwitch nodes alone takes about 2.4 GB).
constexpr int64_t kRuntimeHeadroom = int64_t{1} << 30;
constexpr int64_t kNcclHeadroom = int64_t{3} << 30;

// For a device backend, reserves the arena every device tensor of a run comes from: `peak`
// (peak_bytes or eval_peak_bytes) plus 5% and 64 MiB for alignment and the gaps the phase
// change leaves, leaving the headroom above free (NCCL's when world_size > 1). A no-op on
// the CPU. When the device cannot hold it: an InputError ending with memory_remedies(storage).
void reserve_device_arena(const Ops& ops, int64_t peak, int world_size, const ActivationStorage& storage);

// On the CPU backend: an InputError when ranks_on_node ranks holding `peak` bytes each
// cannot fit in the host's memory (MemTotal, or the cgroup's limit when lower), instead of
// the kernel's OOM killer ending the run part-way through building the model. A no-op on a
// device, or where neither can be read. The message ends with memory_remedies(storage).
void check_host_memory(const Ops& ops, int64_t peak, int ranks_on_node, const ActivationStorage& storage);

// What lowers a run's activations, the settings already in `storage` left out:
// "lower train.micro_batch, set train.recompute: true or train.activation_dtype: bf16"
std::string memory_remedies(const ActivationStorage& storage);

// "10.63 GB (weights 5.31, adapters 0.05, gradients 0.05, optimizer 0.11, activations 5.11)",
// and "; host masters 4.83 GB" when there are some
std::string describe(const MemoryBudget& budget);

}  // namespace relora
