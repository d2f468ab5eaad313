// DeviceMemory for Device::cuda tensors: one cudaMalloc'd block reserved at start-up and
// handed out by an Arena (no cudaMalloc/cudaFree while training, and a release needs no
// synchronisation: every later use of the range is queued on the same compute stream),
// copies and zeroing ordered on the compute stream, and a count of the bytes allocated.
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

#include "backend/cuda/check.h"
#include "core/arena.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/stream.h"

namespace relora::cuda {
namespace {

#ifdef RELORA_CUDA_EMULATED  // tests/cuda_sim: unused bytes after every tensor, watched there
constexpr size_t kRedZone = sim::kRedZoneBytes;
#else
constexpr size_t kRedZone = 0;
#endif

class CudaMemory final : public DeviceMemory {
 public:
  explicit CudaMemory(int device) : device_(device) {}

  void reserve(int64_t bytes, int64_t keep_free) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (arena_ && arena_->capacity() >= bytes) return;
    RELORA_CHECK(!arena_ || arena_->in_use() == 0,
                 "growing the device arena to " << bytes << " bytes while " << arena_->in_use()
                                                << " are allocated from it");
    free_base();
    const cudaError_t err = cudaMalloc(&base_, static_cast<size_t>(bytes));
    size_t free_bytes = 0, total_bytes = 0;
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the (non-sticky) allocation error
      if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) cudaGetLastError();
      base_ = nullptr;
      cannot_hold(bytes, free_bytes, total_bytes, cudaGetErrorString(err));
    }
    // What the arena leaves must hold what the runtime allocates later (reserve_device_arena:
    // CUDA's lazily loaded kernel modules, NCCL's buffers): short of that a run would fail
    // part-way with an internal error rather than this one.
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    if (free_bytes < static_cast<size_t>(keep_free)) {
      free_base();
      cannot_hold(bytes, free_bytes + static_cast<size_t>(bytes), total_bytes,
                  "it would leave " + gb_text(free_bytes, 3) + " GB, under the " +
                      gb_text(static_cast<size_t>(keep_free), 3) +
                      " GB kept free for what CUDA (its lazily loaded kernels) and, on several GPU "
                      "ranks, NCCL (its buffers) allocate later");
    }
    arena_ = std::make_unique<Arena>(bytes);
  }

  void release_arena() override {
    std::lock_guard<std::mutex> lock(mutex_);
    RELORA_CHECK(!arena_ || arena_->in_use() == 0,
                 "releasing the device arena while " << arena_->in_use() << " bytes are allocated from it");
    free_base();
  }

  // Zero-filled by a memset queued on the compute stream, so every later use on the stream
  // sees zeros.
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mutex_);
    RELORA_CHECK(arena_ != nullptr, "device allocation before the arena was reserved");
    char* p = static_cast<char*>(base_) + arena_->allocate(static_cast<int64_t>(bytes + kRedZone));
    ++tensors_;
#ifdef RELORA_CUDA_EMULATED  // tests/cuda_sim: copies, products and kernels held to this range
    sim::note_piece(p, bytes, kRedZone);
#endif
    try {
      CUDA_CHECK(cudaSetDevice(device_));
      CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, compute_stream()));
    } catch (...) {
      release_range(p);
      throw;
    }
    return p;
  }

  // Never throws: it runs in shared_ptr deleters, possibly while the process exits.
  void release(void* p) noexcept override {
    if (p == nullptr) return;
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      release_range(p);
    } catch (...) {
    }
  }

  void copy_to_device(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, compute_stream()));
    CUDA_CHECK(cudaStreamSynchronize(compute_stream()));  // the host buffer may be reused
  }

  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, compute_stream()));
    CUDA_CHECK(cudaStreamSynchronize(compute_stream()));  // the host buffer is filled
  }

  void zero(void* p, size_t bytes) override {
    if (bytes == 0) return;
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, compute_stream()));
  }

  int64_t bytes_in_use() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return arena_ ? arena_->requested_in_use() - tensors_ * static_cast<int64_t>(kRedZone) : 0;
  }
  int64_t reserved_bytes() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return arena_ ? arena_->capacity() : 0;
  }

  void pin(void* p, size_t bytes) override {
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaHostRegister(p, bytes, cudaHostRegisterDefault));
  }

  void unpin(void* p) noexcept override {  // in a deleter: never throws
    if (cudaSetDevice(device_) != cudaSuccess || cudaHostUnregister(p) != cudaSuccess) cudaGetLastError();
  }

 private:
  static std::string gb_text(size_t bytes, int decimals = 2) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.*f", decimals, static_cast<double>(bytes) / 1e9);
    return text;
  }

  [[noreturn]] void cannot_hold(int64_t bytes, size_t free_bytes, size_t total_bytes,
                                const std::string& why) const {
    RELORA_INPUT_ERROR("device " << device_ << " cannot hold this run: "
                                 << gb_text(static_cast<size_t>(bytes))
                                 << " GB needed (the memory budget, +5% and 64 MiB), "
                                 << gb_text(free_bytes) << " GB free of " << gb_text(total_bytes)
                                 << " (" << why << ")");
  }

  // Gives the block back. Queued work may still write freed tensors (allocate's memset):
  // it finishes first (cudaFree's own synchronisation is documented only as "may").
  void free_base() {
    CUDA_CHECK(cudaSetDevice(device_));
    if (base_ != nullptr) {
      if (cudaStream_t stream = compute_stream()) CUDA_CHECK(cudaStreamSynchronize(stream));
      CUDA_CHECK(cudaFree(base_));
    }
    base_ = nullptr;
    arena_.reset();
  }

  // Gives p's range back to the arena (under mutex_).
  void release_range(void* p) {
#ifdef RELORA_CUDA_EMULATED
    sim::forget_piece(p);
#endif
    if (arena_) arena_->release(static_cast<char*>(p) - static_cast<char*>(base_));
    --tensors_;
  }

  const int device_;
  mutable std::mutex mutex_;
  void* base_ = nullptr;          // the arena's block (under mutex_)
  std::unique_ptr<Arena> arena_;  // offsets into base_ (under mutex_)
  int64_t tensors_ = 0;           // allocations live in arena_, each with kRedZone bytes after it
};

}  // namespace

DeviceMemory* process_device_memory(int device) {
  // Never destroyed: tensors may be released after main returns.
  static CudaMemory* const memory = new CudaMemory(device);
  return memory;
}

}  // namespace relora::cuda
