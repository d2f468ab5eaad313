// Bucketed, overlapped gradient all-reduce.
#include "dist/grad_sync.h"

#include <chrono>

#include "core/errors.h"

namespace relora {

GradSync::GradSync(Communicator& comm, Ops& ops, float bucket_mb, DType reduce_dtype)
    : comm_(comm),
      ops_(ops),
      reduce_dtype_(reduce_dtype),
      bucket_floats_(static_cast<int64_t>(bucket_mb * 1024.0 * 1024.0 / sizeof(float))) {
  RELORA_CHECK(reduce_dtype == DType::f32 || reduce_dtype == DType::bf16,
               "gradient all-reduce in f32 or bf16");
  if (bucket_floats_ < 1) bucket_floats_ = 1;
}

void GradSync::rebuild(const std::vector<Param*>& params) {
  // Group in reverse registry order: backward finishes the last tensors first.
  std::vector<std::vector<Param*>> groups;
  int64_t group_floats = 0;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    Param* p = *it;
    RELORA_CHECK(p->trainable(), p->name << " is not trainable");
    if (groups.empty() || (group_floats > 0 && group_floats + p->value.numel() > bucket_floats_)) {
      groups.emplace_back();
      group_floats = 0;
    }
    groups.back().push_back(p);
    group_floats += p->value.numel();
  }
  buckets_.clear();
  bucket_of_.clear();
  for (const auto& group : groups) {
    int64_t floats = 0;
    for (Param* p : group) floats += p->value.numel();
    Bucket b;
    b.buffer = Tensor::zeros({floats}, group.front()->value.device());
    if (staged()) b.staging = Tensor::zeros({floats}, b.buffer.device(), DType::bf16);
    b.tensors = static_cast<int>(group.size());
    int64_t offset = 0;
    for (Param* p : group) {
      p->grad = b.buffer.view(offset, p->value.shape());
      offset += p->value.numel();
      bucket_of_[p] = static_cast<int>(buckets_.size());
    }
    buckets_.push_back(std::move(b));
  }
}

void GradSync::zero() {
  for (Bucket& b : buckets_) {
    b.buffer.zero();
    b.ready = 0;
    b.started = false;
  }
}

void GradSync::start(Bucket& b) {
  b.started = true;
  if (comm_.world_size() <= 1) return;
  if (staged()) {
    ops_.to_bf16(b.staging.bf16(), b.buffer.data(), b.buffer.numel());
    comm_.all_reduce_start(b.staging.bf16(), b.staging.numel(), DType::bf16, ReduceOp::sum);
  } else {
    comm_.all_reduce_start(b.buffer.data(), b.buffer.numel(), DType::f32, ReduceOp::avg);
  }
}

void GradSync::mark_ready(const Param* p) {
  auto it = bucket_of_.find(p);
  if (it == bucket_of_.end()) return;  // not trainable now
  Bucket& b = buckets_[it->second];
  ++marked_;
  if (++b.ready == b.tensors) {
    start(b);
    if (marked_ < static_cast<int>(bucket_of_.size())) ++started_early_;
  }
  comm_.progress();
}

void GradSync::finish() {
  started_before_finish_ = started_early_;
  for (Bucket& b : buckets_)
    if (!b.started) start(b);
  const auto t0 = std::chrono::steady_clock::now();
  comm_.wait_all();
  last_wait_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  for (Bucket& b : buckets_) {
    if (staged()) {  // the bf16 sums, widened, then averaged in fp32
      ops_.from_bf16(b.buffer.data(), b.staging.bf16(), b.buffer.numel());
      ops_.scale(b.buffer.data(), b.buffer.numel(), 1.0f / static_cast<float>(comm_.world_size()));
    }
    b.ready = 0;
    b.started = false;
  }
  marked_ = 0;
  started_early_ = 0;
}

std::vector<Tensor> GradSync::buffers() const {
  std::vector<Tensor> out;
  for (const Bucket& b : buckets_) out.push_back(b.buffer);
  return out;
}

int64_t GradSync::bytes_per_update() const {
  if (comm_.world_size() <= 1) return 0;
  int64_t bytes = 0;
  for (const Bucket& b : buckets_)
    bytes += static_cast<int64_t>(staged() ? b.staging.bytes() : b.buffer.bytes());
  return bytes;
}

}  // namespace relora
