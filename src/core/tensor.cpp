// Tensor storage: aligned allocation, fill, clone.
#include "core/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/errors.h"

namespace relora {

Tensor Tensor::zeros(std::vector<int64_t> shape) {
  Tensor t;
  int64_t n = 1;
  for (int64_t d : shape) {
    RELORA_CHECK(d >= 0, "negative dimension " << d);
    n *= d;
  }
  t.shape_ = std::move(shape);
  t.numel_ = n;
  if (n > 0) {
    size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    RELORA_CHECK(p != nullptr, "out of memory allocating " << bytes << " bytes");
    std::memset(p, 0, bytes);
    t.data_ = std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { std::free(q); });
  }
  return t;
}

void Tensor::fill(float value) { std::fill(data(), data() + numel_, value); }

Tensor Tensor::clone() const {
  Tensor t = zeros(shape_);
  if (numel_ > 0) std::memcpy(t.data(), data(), bytes());
  return t;
}

Tensor Tensor::view(int64_t offset, std::vector<int64_t> shape) const {
  Tensor t;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  RELORA_CHECK(offset >= 0 && offset + n <= numel_, "view [" << offset << ", " << offset + n
                                                              << ") outside " << numel_ << " elements");
  t.shape_ = std::move(shape);
  t.numel_ = n;
  t.data_ = std::shared_ptr<float>(data_, data_.get() + offset);
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
