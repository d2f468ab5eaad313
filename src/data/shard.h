// Token shards in the llm.c format, memory-mapped read-only.
// Header: 256 little-endian int32; header[0] = 20240520, header[1] = 1 (uint16 tokens) or
// header[0] = 20240801, header[1] = 7 (uint32 tokens); header[2] = token count. Tokens follow.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace relora {

class TokenShard {
 public:
  // Maps `path` and validates it: magic/version, file size == header + count * width, and
  // (with check_tokens, a pass over the whole file) every token < vocab_size. Throws
  // InputError naming the file and the problem.
  TokenShard(const std::string& path, int vocab_size, bool check_tokens = true);
  ~TokenShard();
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;
  TokenShard(TokenShard&& other) noexcept;

  const std::string& path() const { return path_; }
  int64_t num_tokens() const { return num_tokens_; }
  int bytes_per_token() const { return width_; }
  // Windows of seq+1 tokens at stride seq: floor((n - 1) / seq).
  int64_t num_windows(int seq) const;
  // out(seq + 1) = tokens [k*seq, k*seq + seq + 1) as int32; InputError if one is outside
  // the vocabulary (so a model never sees one, whichever rank checked the file).
  void read_window(int64_t k, int seq, int32_t* out) const;

 private:
  std::string path_;
  int vocab_size_;
  int64_t num_tokens_ = 0;
  int width_ = 2;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* tokens_ = nullptr;
};

// Files matching a glob pattern, sorted; InputError ("<what>: no file matches '<pattern>'")
// if none.
std::vector<std::string> glob_files(const std::string& pattern, const std::string& what);

// Streams one shard to `path` + ".tmp" (the header's count is filled in at the end), then
// commit() syncs it and renames it to `path`; a writer destroyed without commit() removes
// its temporary file. So a file under a shard's final name is always complete.
class TokenShardWriter {
 public:
  // bytes_per_token: 2 (uint16 tokens, every token < 65536) or 4 (uint32).
  TokenShardWriter(const std::string& path, int bytes_per_token);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  void append(const int32_t* tokens, size_t n);
  int64_t num_tokens() const { return num_tokens_; }
  // Completes the shard under its final name; returns the CRC-32 (zlib's, as in gzip and
  // PNG) of the whole file, header included.
  uint32_t commit();

 private:
  void flush_buffer();

  std::string path_, tmp_path_;
  int width_;
  int fd_ = -1;
  int64_t num_tokens_ = 0;
  uint32_t tokens_crc_ = 0;  // CRC-32 of the token bytes written so far
  std::vector<unsigned char> buffer_;  // a whole number of tokens
  size_t buffered_ = 0;                // bytes of buffer_ not yet written
};

// Writes a shard (uint16 if every token < 65536, else uint32) to `path` via a temporary
// name and rename. For tests and tools.
void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens);

}  // namespace relora
