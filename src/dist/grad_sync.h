// GradSync: the trainable gradients live in a few flat buckets (Param::grad is a view into
// one); during the last backward of an optimizer update, a bucket's non-blocking all-reduce
// (average over ranks: ncclAvg on NCCL) starts as soon as every tensor in it is final, so
// communication overlaps the rest of backward; finish() waits for all. Each rank's loss is
// the mean over its own tokens, so the average is the gradient of the global batch's mean
// loss. Buckets are filled in reverse registry order, the order in which backward finishes
// tensors. At world size 1 nothing is communicated.
// Gradients accumulate in fp32. With a bf16 all-reduce (train.allreduce_dtype: bf16) each
// bucket also has a bf16 staging buffer: the bucket is rounded into it when it starts, the
// ranks sum the bf16 words (each addition in fp32, rounded back), and finish() widens the
// sums into the fp32 bucket and multiplies them by 1/world there (in bf16, 1/3 would be
// 0.334): half the bytes on the network, for gradients rounded to bf16's 8 significant bits.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "backend/ops.h"
#include "dist/communicator.h"
#include "model/params.h"

namespace relora {

class GradSync {
 public:
  // reduce_dtype: f32, or bf16 (staging buffers only at world size > 1). ops: the backend
  // whose memory the gradients are in (the bf16 conversions).
  GradSync(Communicator& comm, Ops& ops, float bucket_mb, DType reduce_dtype);

  // Lays out the gradients of `params` (the trainable tensors, in registry order) in
  // buckets of about bucket_mb (a larger tensor gets a bucket of its own) and points each
  // Param::grad into them. Gradients start at zero. Call after every change of the set.
  void rebuild(const std::vector<Param*>& params);
  // Zeroes every gradient (one memset per bucket).
  void zero();
  // p's gradient is final for this update: starts its bucket's all-reduce once the bucket
  // is complete. Only during the last micro-batch's backward.
  void mark_ready(const Param* p);
  // Starts buckets not yet started (tensors never marked), waits for all; counts time.
  void finish();

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // The bucket buffers: every trainable gradient, in as many contiguous tensors as buckets.
  std::vector<Tensor> buffers() const;
  // Payload bytes handed to all-reduce per update: the bucket sizes, half that in bf16
  // (0 at world size 1).
  int64_t bytes_per_update() const;
  double last_wait_ms() const { return last_wait_ms_; }
  // Buckets whose all-reduce started while backward still had tensors to finish, last
  // update: the overlap of communication with computation.
  int started_before_finish() const { return started_before_finish_; }

 private:
  struct Bucket {
    Tensor buffer;
    Tensor staging;  // bf16 words of buffer while it is reduced; empty for fp32
    int tensors = 0;
    int ready = 0;
    bool started = false;
  };
  void start(Bucket& b);

  bool staged() const { return reduce_dtype_ == DType::bf16 && comm_.world_size() > 1; }

  Communicator& comm_;
  Ops& ops_;
  DType reduce_dtype_;
  int64_t bucket_floats_;
  std::vector<Bucket> buckets_;
  std::unordered_map<const Param*, int> bucket_of_;
  double last_wait_ms_ = 0.0;
  int marked_ = 0;  // tensors marked ready this update
  int started_early_ = 0;
  int started_before_finish_ = 0;
};

}  // namespace relora
