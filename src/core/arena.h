// Arena: hands out aligned byte ranges of one fixed-size block (offsets in [0, capacity)),
// first fit, merging neighbouring free ranges on release. The CUDA backend keeps every
// device tensor in one such block, reserved once at start-up from the memory budget, so
// nothing calls cudaMalloc or cudaFree while training. Not thread-safe: callers lock.
#pragma once
#include <cstdint>
#include <map>

namespace relora {

class Arena {
 public:
  explicit Arena(int64_t capacity, int64_t alignment = 256);

  // The offset of a fresh range of `bytes` (rounded up to the alignment). Throws
  // InternalError naming the request, the bytes in use and the largest free range when no
  // free range is large enough.
  int64_t allocate(int64_t bytes);
  // Returns the range at `offset` (from allocate) to the free list.
  void release(int64_t offset);

  int64_t capacity() const { return capacity_; }
  int64_t in_use() const { return in_use_; }                // rounded sizes of the live ranges
  int64_t requested_in_use() const { return requested_; }  // bytes asked for by them
  int64_t largest_free() const;

 private:
  struct Range {
    int64_t size;       // rounded
    int64_t requested;  // as asked for
  };
  int64_t capacity_, alignment_, in_use_ = 0, requested_ = 0;
  std::map<int64_t, int64_t> free_;  // offset -> size, no two adjacent
  std::map<int64_t, Range> used_;    // offset -> range
};

}  // namespace relora
