// First-fit arena over offsets, with coalescing free list.
#include "core/arena.h"

#include <algorithm>
#include <iterator>

#include "core/errors.h"

namespace relora {

Arena::Arena(int64_t capacity, int64_t alignment) : capacity_(capacity), alignment_(alignment) {
  RELORA_CHECK(capacity >= 0 && alignment > 0, "arena capacity " << capacity << " alignment " << alignment);
  if (capacity > 0) free_[0] = capacity;
}

int64_t Arena::allocate(int64_t bytes) {
  RELORA_CHECK(bytes > 0, "arena allocation of " << bytes << " bytes");
  const int64_t size = (bytes + alignment_ - 1) / alignment_ * alignment_;
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < size) continue;
    const int64_t offset = it->first, left = it->second - size;
    free_.erase(it);
    if (left > 0) free_[offset + size] = left;
    used_[offset] = Range{size, bytes};
    in_use_ += size;
    requested_ += bytes;
    return offset;
  }
  RELORA_CHECK(false, "device arena full: " << bytes << " bytes requested, " << in_use_ << " of "
                                            << capacity_ << " in use, largest free range "
                                            << largest_free());
  return -1;
}

void Arena::release(int64_t offset) {
  const auto it = used_.find(offset);
  RELORA_CHECK(it != used_.end(), "arena release of unknown offset " << offset);
  int64_t start = offset, size = it->second.size;
  in_use_ -= size;
  requested_ -= it->second.requested;
  used_.erase(it);
  // merge with the free range after, then the one before
  const auto next = free_.find(start + size);
  if (next != free_.end()) {
    size += next->second;
    free_.erase(next);
  }
  auto after = free_.lower_bound(start);
  if (after != free_.begin()) {
    const auto before = std::prev(after);
    if (before->first + before->second == start) {
      start = before->first;
      size += before->second;
      free_.erase(before);
    }
  }
  free_[start] = size;
}

int64_t Arena::largest_free() const {
  int64_t largest = 0;
  for (const auto& [offset, size] : free_) largest = std::max(largest, size);
  return largest;
}

}  // namespace relora
