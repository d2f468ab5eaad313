// Tensor storage: host (aligned) or device allocation, fill, copies.
#include "core/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include <unistd.h>

#include "core/errors.h"

namespace relora {
namespace {

DeviceMemory* g_device_memory = nullptr;

DeviceMemory& installed_device_memory() {
  RELORA_CHECK(g_device_memory != nullptr, "device tensor without a CUDA backend");
  return *g_device_memory;
}

// Zero-filled host memory for `bytes`, aligned to and a multiple of `alignment`, freed by the
// returned pointer's deleter.
std::shared_ptr<float> host_zeros(size_t bytes, size_t alignment) {
  bytes = (bytes + alignment - 1) / alignment * alignment;
  void* p = std::aligned_alloc(alignment, bytes);
  RELORA_CHECK(p != nullptr, "out of memory allocating " << bytes << " bytes");
  std::memset(p, 0, bytes);
  return std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { std::free(q); });
}

}  // namespace

size_t element_size(DType dtype) { return dtype == DType::bf16 ? 2 : 4; }

void set_device_memory(DeviceMemory* memory) { g_device_memory = memory; }
DeviceMemory* device_memory() { return g_device_memory; }

Tensor Tensor::zeros(std::vector<int64_t> shape, Device device, DType dtype) {
  return allocate(std::move(shape), device, dtype, 64);
}

Tensor Tensor::allocate(std::vector<int64_t> shape, Device device, DType dtype, size_t host_alignment) {
  Tensor t;
  int64_t n = 1;
  for (int64_t d : shape) {
    RELORA_CHECK(d >= 0, "negative dimension " << d);
    n *= d;
  }
  t.shape_ = std::move(shape);
  t.numel_ = n;
  t.dtype_ = dtype;
  t.device_ = device;
  if (n == 0) return t;
  if (device == Device::cuda) {
    DeviceMemory& memory = installed_device_memory();
    void* p = memory.allocate(t.bytes());
    t.data_ = std::shared_ptr<float>(static_cast<float*>(p), [&memory](float* q) { memory.release(q); });
    return t;
  }
  t.data_ = host_zeros(t.bytes(), host_alignment);
  return t;
}

Tensor Tensor::pinned(std::vector<int64_t> shape) {
  // whole pages of its own: cudaHostRegister refuses a range that overlaps a registered one,
  // as two neighbouring heap blocks sharing a page would
  Tensor t = allocate(std::move(shape), Device::cpu, DType::f32, static_cast<size_t>(sysconf(_SC_PAGESIZE)));
  if (t.numel_ == 0) return t;
  DeviceMemory& memory = installed_device_memory();
  memory.pin(t.data(), t.bytes());
  // unpin before the host buffer goes: the aligned_alloc deleter runs after this one
  std::shared_ptr<float> buffer = t.data_;
  t.data_ = std::shared_ptr<float>(buffer.get(), [buffer, &memory](float* p) { memory.unpin(p); });
  return t;
}

int32_t* Tensor::i32() {
  RELORA_CHECK(dtype_ == DType::i32, "i32() of a tensor of another dtype " << shape_str());
  return reinterpret_cast<int32_t*>(data_.get());
}

const int32_t* Tensor::i32() const {
  RELORA_CHECK(dtype_ == DType::i32, "i32() of a tensor of another dtype " << shape_str());
  return reinterpret_cast<const int32_t*>(data_.get());
}

uint16_t* Tensor::bf16() {
  RELORA_CHECK(dtype_ == DType::bf16, "bf16() of a tensor of another dtype " << shape_str());
  return reinterpret_cast<uint16_t*>(data_.get());
}

const uint16_t* Tensor::bf16() const {
  RELORA_CHECK(dtype_ == DType::bf16, "bf16() of a tensor of another dtype " << shape_str());
  return reinterpret_cast<const uint16_t*>(data_.get());
}

void Tensor::fill(float value) {
  RELORA_CHECK(dtype_ == DType::f32, "fill of a tensor that is not f32");
  if (on_host()) {
    std::fill(data(), data() + numel_, value);
    return;
  }
  std::vector<float> host(static_cast<size_t>(numel_), value);
  copy_from_host(host.data());
}

void Tensor::zero() {
  if (numel_ == 0) return;
  if (on_host())
    std::memset(data(), 0, bytes());
  else
    installed_device_memory().zero(data(), bytes());
}

Tensor Tensor::to_host() const {
  if (on_host()) return *this;
  Tensor t = zeros(shape_, Device::cpu, dtype_);
  copy_to_host(t.data());
  return t;
}

void Tensor::copy_from_host(const void* src) {
  if (numel_ == 0) return;
  if (on_host())
    std::memcpy(data(), src, bytes());
  else
    installed_device_memory().copy_to_device(data(), src, bytes());
}

void Tensor::copy_to_host(void* dst) const {
  if (numel_ == 0) return;
  if (on_host())
    std::memcpy(dst, data(), bytes());
  else
    installed_device_memory().copy_to_host(dst, data(), bytes());
}

Tensor Tensor::view(int64_t offset, std::vector<int64_t> shape) const {
  Tensor t;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  RELORA_CHECK(offset >= 0 && offset + n <= numel_, "view [" << offset << ", " << offset + n
                                                              << ") outside " << numel_ << " elements");
  t.shape_ = std::move(shape);
  t.numel_ = n;
  t.dtype_ = dtype_;
  t.device_ = device_;
  // the offset in bytes: elements are 2 or 4 bytes
  char* base = reinterpret_cast<char*>(data_.get());
  t.data_ = std::shared_ptr<float>(
      data_, reinterpret_cast<float*>(base + offset * static_cast<int64_t>(element_size(dtype_))));
  return t;
}

std::string Tensor::shape_str() const {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape_.size(); ++i) os << (i ? ", " : "") << shape_[i];
  os << "]";
  return os.str();
}

}  // namespace relora
