// DeviceMemory for Device::cuda tensors: cudaMalloc/cudaFree, copies and zeroing ordered on
// the compute stream, and a count of the bytes allocated through it.
#include <atomic>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/stream.h"

namespace relora::cuda {
namespace {

class CudaMemory final : public DeviceMemory {
 public:
  explicit CudaMemory(int device) : device_(device) {}

  // Zero-filled by a memset queued on the compute stream, so every later use on the stream
  // sees zeros.
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    CUDA_CHECK(cudaSetDevice(device_));
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the (non-sticky) allocation error
      std::ostringstream oss;
      oss << "cudaMalloc of " << bytes << " bytes on device " << device_ << ": "
          << cudaGetErrorString(err) << " (" << bytes_in_use() << " bytes in use by tensors)";
      throw InternalError(oss.str());
    }
    try {
      CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, compute_stream()));
      std::lock_guard<std::mutex> lock(mutex_);
      sizes_[p] = bytes;
    } catch (...) {
      cudaFree(p);
      throw;
    }
    bytes_in_use_ += static_cast<int64_t>(bytes);
    return p;
  }

  // Never throws: it runs in shared_ptr deleters, possibly while the process exits and the
  // CUDA runtime unloads (cudaErrorCudartUnloading). Waits for the compute stream first so no
  // queued kernel still uses the memory; errors are ignored (and cleared).
  void release(void* p) noexcept override {
    if (p == nullptr) return;
    cudaSetDevice(device_);
    cudaStreamSynchronize(compute_stream());
    cudaFree(p);
    cudaGetLastError();
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto it = sizes_.find(p);
      if (it != sizes_.end()) {
        bytes_in_use_ -= static_cast<int64_t>(it->second);
        sizes_.erase(it);
      }
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

  void copy_on_device(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, compute_stream()));
  }

  void zero(void* p, size_t bytes) override {
    if (bytes == 0) return;
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, compute_stream()));
  }

  int64_t bytes_in_use() const override { return bytes_in_use_.load(); }

 private:
  const int device_;
  std::atomic<int64_t> bytes_in_use_{0};
  std::mutex mutex_;
  std::unordered_map<void*, size_t> sizes_;  // live allocations (under mutex_)
};

}  // namespace

DeviceMemory* process_device_memory(int device) {
  // Never destroyed: tensors may be released after main returns.
  static CudaMemory* const memory = new CudaMemory(device);
  return memory;
}

}  // namespace relora::cuda
