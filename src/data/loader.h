// Loader: the deterministic global sample order and this rank's slice of each batch.
// Sample k of a shard is its window k (seq+1 tokens). Epoch e orders all windows of all
// shards by a seeded permutation (Fisher-Yates over the counter RNG keyed by (seed,
// data_order, epoch)). A single global cursor (samples consumed) says where a run is, so
// resuming is setting the cursor.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/shard.h"

namespace relora {

class Loader {
 public:
  // pattern: glob of shards; shuffle=false keeps file order then window order (evaluation).
  // Every shard's header and size are validated; its tokens (a pass over the whole file)
  // only on rank `rank` of `ranks`: shards rank, rank + ranks, ... The trainer passes the
  // rank on the node and the ranks there: each node checks every file once (its ranks may
  // read node-local copies), and an error on one rank ends all through the start-up
  // agreement.
  Loader(const std::string& pattern, int vocab_size, int seq_len, uint64_t seed, bool shuffle,
         int rank = 0, int ranks = 1);

  int64_t num_samples() const { return total_windows_; }  // per epoch
  int64_t cursor() const { return cursor_; }
  void set_cursor(int64_t cursor) { cursor_ = cursor; }
  const std::vector<std::string>& files() const;
  // Tokens of each shard, in file order.
  std::vector<int64_t> shard_tokens() const;

  // Fills inputs(count, seq) and targets(count, seq) with global samples
  // [cursor + offset, cursor + offset + count) without moving the cursor.
  void read(int64_t offset, int count, int32_t* inputs, int32_t* targets);
  // Moves the cursor forward by n samples.
  void advance(int64_t n) { cursor_ += n; }

  // Global sample index -> (shard, window), crossing epochs.
  void locate(int64_t sample, int* shard, int64_t* window);

 private:
  std::vector<TokenShard> shards_;
  std::vector<int64_t> first_window_;  // prefix sums of windows per shard
  int64_t total_windows_ = 0;
  int seq_len_;
  uint64_t seed_;
  bool shuffle_;
  int64_t cursor_ = 0;
  int64_t perm_epoch_ = -1;
  std::vector<int64_t> perm_;
  std::vector<std::string> files_;
  std::vector<int32_t> window_;  // scratch (seq + 1)
};

}  // namespace relora
