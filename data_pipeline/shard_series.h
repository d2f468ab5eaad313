// One split's token stream written as numbered llm.c shards, DIR/<split>_000000.bin,
// DIR/<split>_000001.bin, ...: each holds `shard_tokens` tokens (the last one fewer; a
// document may continue in the next shard), is written under a temporary name and renamed
// when complete, and is recorded with its CRC-32.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/shard.h"

namespace relora {

struct ShardRecord {
  std::string file;   // name within the output directory, e.g. "train_000000.bin"
  std::string split;  // "train" or "val"
  int64_t tokens = 0;
  std::string checksum;  // "crc32:" and 8 lowercase hex digits, of the whole file
};

// "crc32:" followed by `crc` as 8 lowercase hex digits.
std::string crc32_checksum(uint32_t crc);

// The shard file name for `split` and number `index`: "<split>_%06d.bin".
std::string shard_file_name(const std::string& split, int index);

class ShardSeries {
 public:
  ShardSeries(const std::string& dir, const std::string& split, int bytes_per_token,
              int64_t shard_tokens);

  void append(const int32_t* tokens, size_t n);
  int64_t tokens() const { return tokens_; }
  // Completes the last shard and returns every shard written, in order.
  std::vector<ShardRecord> finish();

 private:
  void commit_current();

  std::string dir_, split_;
  int bytes_per_token_;
  int64_t shard_tokens_;
  int64_t tokens_ = 0;
  std::unique_ptr<TokenShardWriter> current_;  // opened at the first token it gets
  std::vector<ShardRecord> written_;
};

}  // namespace relora
