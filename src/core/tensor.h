// Tensor: a shape and an owned, 64-byte aligned, contiguous row-major buffer.
// The dtype/device fields say where the data lives; this build's storage is CPU f32
// (the CUDA backend adds device storage behind the same class).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace relora {

enum class DType { f32, bf16 };
enum class Device { cpu, cuda };

class Tensor {
 public:
  Tensor() = default;
  // A zero-filled f32 CPU tensor of the given shape.
  static Tensor zeros(std::vector<int64_t> shape);

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  int64_t numel() const { return numel_; }
  size_t bytes() const { return static_cast<size_t>(numel_) * sizeof(float); }
  bool empty() const { return numel_ == 0; }
  DType dtype() const { return DType::f32; }
  Device device() const { return Device::cpu; }
  void fill(float value);
  // Deep copy (the storage is shared by plain copies of a Tensor).
  Tensor clone() const;
  // A tensor of `shape` over this one's storage from element `offset` on (shares and keeps
  // the storage alive): how gradients live inside flat communication buckets.
  Tensor view(int64_t offset, std::vector<int64_t> shape) const;
  // "[4096, 256]"
  std::string shape_str() const;

 private:
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  std::shared_ptr<float> data_;
};

}  // namespace relora
