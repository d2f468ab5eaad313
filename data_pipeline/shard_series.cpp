// Writing a split as rotating shards (see shard_series.h).
#include "data_pipeline/shard_series.h"

#include <algorithm>
#include <cstdio>

#include "core/errors.h"

namespace relora {

std::string crc32_checksum(uint32_t crc) {
  char text[16];
  std::snprintf(text, sizeof(text), "%08x", crc);
  return std::string("crc32:") + text;
}

std::string shard_file_name(const std::string& split, int index) {
  char number[16];
  std::snprintf(number, sizeof(number), "%06d", index);
  return split + "_" + number + ".bin";
}

ShardSeries::ShardSeries(const std::string& dir, const std::string& split, int bytes_per_token,
                         int64_t shard_tokens)
    : dir_(dir), split_(split), bytes_per_token_(bytes_per_token), shard_tokens_(shard_tokens) {
  RELORA_CHECK(shard_tokens > 0, "shard_tokens " << shard_tokens);
}

void ShardSeries::append(const int32_t* tokens, size_t n) {
  while (n > 0) {
    if (!current_) {
      std::string name = shard_file_name(split_, static_cast<int>(written_.size()));
      current_ = std::make_unique<TokenShardWriter>(dir_ + "/" + name, bytes_per_token_);
    }
    size_t room = static_cast<size_t>(shard_tokens_ - current_->num_tokens());
    size_t now = std::min(n, room);
    current_->append(tokens, now);
    tokens += now;
    n -= now;
    tokens_ += static_cast<int64_t>(now);
    if (current_->num_tokens() == shard_tokens_) commit_current();
  }
}

void ShardSeries::commit_current() {
  ShardRecord record;
  record.file = shard_file_name(split_, static_cast<int>(written_.size()));
  record.split = split_;
  record.tokens = current_->num_tokens();
  record.checksum = crc32_checksum(current_->commit());
  written_.push_back(record);
  current_.reset();
}

std::vector<ShardRecord> ShardSeries::finish() {
  if (current_) commit_current();
  return written_;
}

}  // namespace relora
