// One optimizer update: accumulate over micro-batches with overlapped gradient sync, then
// norm, clip and AdamW, each stage timed.
#include "train/step.h"

#include <chrono>

#include "core/errors.h"

namespace relora {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

DType allreduce_dtype(const TrainConfig& train) {
  return train.allreduce_dtype == "bf16" ? DType::bf16 : DType::f32;
}

bool bf16_staging(const TrainConfig& train, int world_size) {
  return allreduce_dtype(train) == DType::bf16 && world_size > 1;
}

TrainStep::TrainStep(Llama& model, AdamW& optimizer, Ops& ops, Communicator& comm, float bucket_mb,
                     DType reduce_dtype, int micro_batch, int accumulation,
                     int64_t tokens_per_update)
    : model_(model),
      optimizer_(optimizer),
      ops_(ops),
      comm_(comm),
      grad_sync_(comm, ops, bucket_mb, reduce_dtype),
      micro_batch_(micro_batch),
      accumulation_(accumulation),
      tokens_per_update_(tokens_per_update),
      tokens_per_rank_(tokens_per_update / comm.world_size()),
      inputs_(static_cast<size_t>(micro_batch) * model.config().seq_len),
      targets_(inputs_.size()) {
  RELORA_CHECK(tokens_per_rank_ * comm.world_size() == tokens_per_update,
               "an update's " << tokens_per_update << " tokens do not split evenly over " << comm.world_size()
                              << " ranks");
}

void TrainStep::rebuild() {
  trainable_ = model_.trainable();
  grad_sync_.rebuild(trainable_);
}

double TrainStep::accumulate(const MicroBatchSource& source) {
  times_ = StepTimes();
  const GradReadyFn on_ready = [this](const Param* p) { grad_sync_.mark_ready(p); };
  // This rank's mean loss; GradSync averages over ranks (with a power-of-two world size
  // exactly as scaling by the global token count and summing would).
  const float d_loss_scale = 1.0f / static_cast<float>(tokens_per_rank_);
  grad_sync_.zero();
  double loss_sum = 0.0;
  for (int m = 0; m < accumulation_; ++m) {
    source(m, inputs_.data(), targets_.data());
    auto t = Clock::now();
    loss_sum += model_.forward(inputs_.data(), targets_.data(), micro_batch_, true, d_loss_scale);
    times_.forward_ms += ms_since(t);
    t = Clock::now();
    const bool last = m + 1 == accumulation_;
    model_.backward(micro_batch_, last ? on_ready : GradReadyFn());
    ops_.synchronize();  // a device backend queues work: time it to its end
    times_.backward_ms += ms_since(t);
  }
  const auto t = Clock::now();
  grad_sync_.finish();
  comm_.all_reduce(&loss_sum, 1, ReduceOp::sum);
  times_.comm_ms = ms_since(t);
  return loss_sum / static_cast<double>(tokens_per_update_);
}

double TrainStep::apply(float lr, float max_norm) {
  const auto t = Clock::now();
  const double grad_norm = global_grad_norm(ops_, grad_sync_.buffers());
  clip_gradients(ops_, grad_sync_.buffers(), grad_norm, max_norm);
  optimizer_.step(trainable_, lr);
  ops_.synchronize();
  times_.optimizer_ms = ms_since(t);
  return grad_norm;
}

}  // namespace relora
