// Replica checks: every rank must hold the same config and the same weights. Each rank
// hashes its copy; an all-reduce of min and max per item shows any disagreement, and every
// rank stops with the same error naming the first item that differs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "model/params.h"

namespace relora {

// 64-bit hash of bytes (FNV-1a over 256 KiB blocks in parallel, blocks combined in order).
uint64_t content_hash(const void* data, size_t bytes);

// Throws InputError "<what> differs between ranks ..." if any rank's text differs.
void check_same_text(Communicator& comm, const std::string& text, const std::string& what);

// Throws InternalError naming the first tensor whose values differ between ranks.
void check_same_weights(Communicator& comm, const std::vector<Param*>& params, const std::string& when);

}  // namespace relora
