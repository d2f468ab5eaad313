// Tensor: a shape and an owned, contiguous row-major buffer of f32 (or i32: token ids; bf16:
// raw 16-bit words, the staging of a bf16 all-reduce), in
// host memory (64-byte aligned) or in device memory. Device memory comes from the
// DeviceMemory the CUDA backend installs at start-up, so core needs no CUDA headers. Host
// code reads or writes a device tensor only through copy_to_host/copy_from_host (or
// to_host()): at start-up, checkpoints and restarts, never inside a training step.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace relora {

enum class DType { f32, i32, bf16 };
// Bytes of one element: 4 (f32, i32) or 2 (bf16).
size_t element_size(DType dtype);
enum class Device { cpu, cuda };

// Allocation and copies for Device::cuda. Every allocation comes from one arena reserved
// before the first one (reserve_device_arena in model/memory_budget.h sizes it from the
// memory budget). Copies and zeroing are ordered with the backend's compute stream; a copy
// to or from host memory returns when the host buffer may be used.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  // Makes the arena at least `bytes` large: a no-op when it already is, else (only while
  // nothing is allocated from it) a new block, which must leave keep_free bytes of the
  // device free beside it (for what the runtime allocates later). Throws InputError (the GB
  // needed and free) when the device lacks the memory, InternalError when allocations are
  // live.
  virtual void reserve(int64_t bytes, int64_t keep_free) = 0;
  // Gives the arena's block back to the device (only while nothing is allocated from it;
  // InternalError otherwise); the next reserve makes a new one, of any size.
  virtual void release_arena() = 0;
  virtual void* allocate(size_t bytes) = 0;  // zero-filled; throws InternalError when full
  virtual void release(void* p) = 0;
  virtual void copy_to_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  // Bytes currently allocated through this object.
  virtual int64_t bytes_in_use() const = 0;
  // The arena's size: the device memory the process holds for tensors (0 before reserve).
  virtual int64_t reserved_bytes() const = 0;
  // Page-locks host memory for fast copies to and from the device (relora.master_on_host's
  // fp32 masters), and releases it again; unpin never throws.
  virtual void pin(void* p, size_t bytes) = 0;
  virtual void unpin(void* p) noexcept = 0;
};
// Installs (or with nullptr removes) the device memory; Tensor::zeros(.., Device::cuda)
// needs one installed.
void set_device_memory(DeviceMemory* memory);
DeviceMemory* device_memory();

class Tensor {
 public:
  Tensor() = default;
  // A zero-filled tensor of the given shape, f32 on the CPU unless told otherwise.
  static Tensor zeros(std::vector<int64_t> shape, Device device = Device::cpu,
                      DType dtype = DType::f32);
  // A zero-filled f32 host tensor in page-locked memory (pinned through the installed
  // DeviceMemory): the host master of a weight whose device copy is bf16.
  static Tensor pinned(std::vector<int64_t> shape);

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  // The buffer as token ids (dtype i32 only).
  int32_t* i32();
  const int32_t* i32() const;
  // The buffer as bf16 words (dtype bf16 only).
  uint16_t* bf16();
  const uint16_t* bf16() const;
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  int64_t numel() const { return numel_; }
  size_t bytes() const { return static_cast<size_t>(numel_) * element_size(dtype_); }
  bool empty() const { return numel_ == 0; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool on_host() const { return device_ == Device::cpu; }
  void fill(float value);
  void zero();
  // A host tensor with the same contents: this one itself when it is on the host, else a copy.
  Tensor to_host() const;
  // Whole-buffer copies between this tensor and bytes() of host memory.
  void copy_from_host(const void* src);
  void copy_to_host(void* dst) const;
  // A tensor of `shape` over this one's storage from element `offset` on (shares and keeps
  // the storage alive): how gradients live inside flat communication buckets.
  Tensor view(int64_t offset, std::vector<int64_t> shape) const;
  // "[4096, 256]"
  std::string shape_str() const;

 private:
  // zeros() with host memory aligned to (and a multiple of) host_alignment bytes
  static Tensor allocate(std::vector<int64_t> shape, Device device, DType dtype, size_t host_alignment);

  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
  std::shared_ptr<float> data_;
};

}  // namespace relora
