// Config and weight agreement between ranks, by hashing.
#include "dist/replica_check.h"

#include <algorithm>

#include "core/errors.h"

namespace relora {
namespace {

uint64_t fnv1a(const unsigned char* p, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

// Index of the first item whose hash is not the same on every rank, or -1.
int64_t first_disagreement(Communicator& comm, const std::vector<uint64_t>& hashes) {
  std::vector<uint64_t> lo = hashes, hi = hashes;
  comm.all_reduce(lo.data(), static_cast<int64_t>(lo.size()), ReduceOp::min);
  comm.all_reduce(hi.data(), static_cast<int64_t>(hi.size()), ReduceOp::max);
  for (size_t i = 0; i < hashes.size(); ++i)
    if (lo[i] != hi[i]) return static_cast<int64_t>(i);
  return -1;
}

}  // namespace

uint64_t content_hash(const void* data, size_t bytes) {
  constexpr size_t kBlock = 256 * 1024;
  const auto* p = static_cast<const unsigned char*>(data);
  const int64_t blocks = static_cast<int64_t>((bytes + kBlock - 1) / kBlock);
  std::vector<uint64_t> block_hash(blocks);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const size_t begin = static_cast<size_t>(b) * kBlock;
    block_hash[b] = fnv1a(p + begin, std::min(kBlock, bytes - begin), 14695981039346656037ull);
  }
  return fnv1a(reinterpret_cast<const unsigned char*>(block_hash.data()), block_hash.size() * sizeof(uint64_t),
               14695981039346656037ull ^ bytes);
}

void check_same_text(Communicator& comm, const std::string& text, const std::string& what) {
  if (comm.world_size() <= 1) return;
  if (first_disagreement(comm, {content_hash(text.data(), text.size())}) >= 0)
    RELORA_INPUT_ERROR(what << " differs between ranks: every rank must be started with the same "
                               "config file and --set options");
}

void check_same_weights(Communicator& comm, const std::vector<Param*>& params, const std::string& when) {
  if (comm.world_size() <= 1) return;
  std::vector<uint64_t> hashes;
  for (const Param* p : params) {
    const Tensor host = p->value.to_host();
    hashes.push_back(content_hash(host.data(), host.bytes()));
  }
  const int64_t i = first_disagreement(comm, hashes);
  if (i >= 0)
    throw InternalError("ranks disagree " + when + ": tensor '" + params[i]->name +
                        "' differs between ranks (replicas must stay identical; stopping)");
}

}  // namespace relora
