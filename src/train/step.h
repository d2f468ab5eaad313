// One optimizer update on this rank, the code the trainer and `relora bench` share: forward
// and backward over the rank's micro-batches (gradients accumulate; during the last backward
// the gradient buckets are all-reduced as they complete), the loss summed over ranks, then
// the global gradient norm, clipping and AdamW. Each stage is timed.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "backend/ops.h"
#include "dist/communicator.h"
#include "dist/grad_sync.h"
#include "model/llama.h"
#include "optim/adamw.h"

namespace relora {

// Wall time of the stages of the last update, in ms (summed over its micro-batches).
struct StepTimes {
  double forward_ms = 0.0;
  double backward_ms = 0.0;   // including the start of bucket all-reduces
  double comm_ms = 0.0;       // waiting for the gradient all-reduce and the loss sum
  double optimizer_ms = 0.0;  // gradient norm, clipping, AdamW
};

// Fills inputs and targets (micro_batch, T) with micro-batch m (0-based) of this rank's share
// of the update.
using MicroBatchSource = std::function<void(int m, int32_t* inputs, int32_t* targets)>;

// The dtype of the gradient all-reduce, train.allreduce_dtype of a validated config.
DType allreduce_dtype(const TrainConfig& train);
// Whether the gradient buckets get bf16 staging buffers (memory_budget's bf16_staging):
// a bf16 all-reduce with more than one rank.
bool bf16_staging(const TrainConfig& train, int world_size);

class TrainStep {
 public:
  // bucket_mb, reduce_dtype: GradSync's. accumulation: micro-batches per rank per update;
  // tokens_per_update: target tokens of the whole update over all ranks, an equal share on
  // each (each token's loss gradient is scaled by the inverse of the share; the gradient
  // all-reduce averages over ranks).
  TrainStep(Llama& model, AdamW& optimizer, Ops& ops, Communicator& comm, float bucket_mb,
            DType reduce_dtype, int micro_batch, int accumulation, int64_t tokens_per_update);

  // Takes the model's trainable set and lays out its gradient buckets: at the start and
  // after every change of the set (the switch to adapters).
  void rebuild();
  // Forward and backward over the micro-batches from source; returns the mean loss of the
  // update over all ranks.
  double accumulate(const MicroBatchSource& source);
  // Clips the gradients to max_norm (0: no clipping) and takes one AdamW step at lr;
  // returns the gradient norm before clipping.
  double apply(float lr, float max_norm);

  const StepTimes& times() const { return times_; }
  const GradSync& grad_sync() const { return grad_sync_; }
  const Communicator& communicator() const { return comm_; }  // the gradients

 private:
  Llama& model_;
  AdamW& optimizer_;
  Ops& ops_;
  Communicator& comm_;
  GradSync grad_sync_;
  int micro_batch_, accumulation_;
  int64_t tokens_per_update_, tokens_per_rank_;
  std::vector<Param*> trainable_;
  std::vector<int32_t> inputs_, targets_;  // (micro_batch, T)
  StepTimes times_;
};

}  // namespace relora
