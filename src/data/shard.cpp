// Token shards in the llm.c format: validate and memory-map for reading, glob, and write
// (streamed, via a temporary name, with a CRC-32 of the file).
#include "data/shard.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <utility>

#include "core/errors.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "token shards are little-endian and are read in place; this host is big-endian");

namespace relora {
namespace {

constexpr int kHeaderInts = 256;
constexpr size_t kHeaderBytes = kHeaderInts * sizeof(int32_t);
constexpr int32_t kMagicU16 = 20240520, kVersionU16 = 1;
constexpr int32_t kMagicU32 = 20240801, kVersionU32 = 7;
constexpr size_t kWriteBufferBytes = size_t{1} << 20;

// Index of the first token >= vocab_size, or n if there is none.
template <typename T>
int64_t first_token_out_of_vocab(const T* tokens, int64_t n, int vocab_size) {
  int64_t first = n;
#pragma omp parallel for schedule(static) reduction(min : first)
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<int64_t>(tokens[i]) >= vocab_size && i < first) first = i;
  }
  return first;
}

template <typename T>
void copy_tokens(const T* tokens, int64_t n, int32_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(tokens[i]);
}

[[noreturn]] void token_outside_vocabulary(const std::string& path, uint32_t token, int64_t index,
                                           int vocab_size) {
  RELORA_INPUT_ERROR(path << ": token " << token << " at index " << index
                          << " is outside the vocabulary (vocab_size " << vocab_size
                          << "); the shard was made with another tokenizer or vocab_size is too small");
}

// Closes a file descriptor when it goes out of scope.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Writes all of `bytes`, retrying short writes and interruptions.
void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t written = ::write(fd, p, bytes);
    if (written < 0 && errno == EINTR) continue;
    RELORA_CHECK(written > 0, "writing " << path << ": " << std::strerror(errno));
    p += written;
    bytes -= static_cast<size_t>(written);
  }
}

}  // namespace

TokenShard::TokenShard(const std::string& path, int vocab_size, bool check_tokens)
    : path_(path), vocab_size_(vocab_size) {
  RELORA_CHECK(vocab_size > 0, "vocab_size " << vocab_size << " for " << path);
  FdGuard fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const char* reason = std::strerror(errno);
    RELORA_INPUT_ERROR(path << ": cannot open token shard: " << reason
                            << " (check the data path and its permissions)");
  }
  struct stat st;
  RELORA_CHECK(::fstat(fd.get(), &st) == 0, "fstat " << path << ": " << std::strerror(errno));
  if (!S_ISREG(st.st_mode)) {
    RELORA_INPUT_ERROR(path << ": not a regular file; a token shard is expected there");
  }
  size_t file_bytes = static_cast<size_t>(st.st_size);
  if (file_bytes < kHeaderBytes) {
    RELORA_INPUT_ERROR(path << ": " << file_bytes << " bytes, shorter than the " << kHeaderBytes
                            << "-byte llm.c shard header; not a token shard (re-create it)");
  }
  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  RELORA_CHECK(map != MAP_FAILED, "mmap " << path << ": " << std::strerror(errno));
  map_ = map;
  map_bytes_ = file_bytes;

  // From here on the destructor does not run if we throw, so unmap on every error path.
  try {
    const int32_t* header = static_cast<const int32_t*>(map_);
    if (header[0] == kMagicU16 && header[1] == kVersionU16) {
      width_ = 2;
    } else if (header[0] == kMagicU32 && header[1] == kVersionU32) {
      width_ = 4;
    } else {
      RELORA_INPUT_ERROR(path << ": bad shard header: magic " << header[0] << " version "
                              << header[1] << ", expected magic " << kMagicU16 << " version "
                              << kVersionU16 << " (uint16 tokens) or magic " << kMagicU32
                              << " version " << kVersionU32 << " (uint32 tokens)");
    }
    num_tokens_ = header[2];
    if (num_tokens_ < 0) {
      RELORA_INPUT_ERROR(path << ": header token count " << num_tokens_
                              << " is negative; the shard is corrupt (re-create it)");
    }
    size_t expected_bytes = kHeaderBytes + static_cast<size_t>(num_tokens_) * width_;
    if (file_bytes != expected_bytes) {
      RELORA_INPUT_ERROR(path << ": file is " << file_bytes << " bytes but its header ("
                              << num_tokens_ << " tokens of " << width_ << " bytes) implies "
                              << expected_bytes
                              << " bytes; the shard is truncated or corrupt (re-create it)");
    }
    tokens_ = static_cast<const unsigned char*>(map_) + kHeaderBytes;
    if (!check_tokens) return;
    const uint16_t* narrow = reinterpret_cast<const uint16_t*>(tokens_);
    const uint32_t* wide = reinterpret_cast<const uint32_t*>(tokens_);
    int64_t bad = width_ == 2 ? first_token_out_of_vocab(narrow, num_tokens_, vocab_size)
                              : first_token_out_of_vocab(wide, num_tokens_, vocab_size);
    if (bad < num_tokens_) {
      token_outside_vocabulary(path, width_ == 2 ? narrow[bad] : wide[bad], bad, vocab_size);
    }
  } catch (...) {
    ::munmap(map_, map_bytes_);
    throw;
  }
}

TokenShard::~TokenShard() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

TokenShard::TokenShard(TokenShard&& other) noexcept
    : path_(std::move(other.path_)),
      vocab_size_(other.vocab_size_),
      num_tokens_(other.num_tokens_),
      width_(other.width_),
      map_(other.map_),
      map_bytes_(other.map_bytes_),
      tokens_(other.tokens_) {
  other.map_ = nullptr;
  other.map_bytes_ = 0;
  other.tokens_ = nullptr;
  other.num_tokens_ = 0;
}

int64_t TokenShard::num_windows(int seq) const {
  RELORA_CHECK(seq > 0, "sequence length " << seq);
  return num_tokens_ < 2 ? 0 : (num_tokens_ - 1) / seq;
}

void TokenShard::read_window(int64_t k, int seq, int32_t* out) const {
  RELORA_CHECK(k >= 0 && k < num_windows(seq),
               "window " << k << " of " << num_windows(seq) << " in " << path_);
  int64_t start = k * seq;
  if (width_ == 2) {
    copy_tokens(reinterpret_cast<const uint16_t*>(tokens_) + start, seq + 1, out);
  } else {
    copy_tokens(reinterpret_cast<const uint32_t*>(tokens_) + start, seq + 1, out);
  }
  // every token used is in the vocabulary (also where start-up checked another rank's copy)
  for (int i = 0; i <= seq; ++i)
    if (out[i] < 0 || out[i] >= vocab_size_)
      token_outside_vocabulary(path_, static_cast<uint32_t>(out[i]), start + i, vocab_size_);
}

std::vector<std::string> glob_files(const std::string& pattern, const std::string& what) {
  glob_t matches;
  int rc = ::glob(pattern.c_str(), 0, nullptr, &matches);
  if (rc == GLOB_NOMATCH) {
    ::globfree(&matches);
    RELORA_INPUT_ERROR(what << ": no file matches '" << pattern << "'");
  }
  if (rc == GLOB_ABORTED) {
    ::globfree(&matches);
    RELORA_INPUT_ERROR(what << ": cannot read a directory of '" << pattern
                            << "' (check its permissions)");
  }
  if (rc != 0) ::globfree(&matches);
  RELORA_CHECK(rc == 0, "glob '" << pattern << "' failed with code " << rc);
  std::vector<std::string> files(matches.gl_pathv, matches.gl_pathv + matches.gl_pathc);
  ::globfree(&matches);
  std::sort(files.begin(), files.end());
  return files;
}

TokenShardWriter::TokenShardWriter(const std::string& path, int bytes_per_token)
    : path_(path), tmp_path_(path + ".tmp"), width_(bytes_per_token) {
  RELORA_CHECK(width_ == 2 || width_ == 4, "bytes per token " << width_ << " for " << path);
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const char* reason = std::strerror(errno);
    RELORA_INPUT_ERROR(tmp_path_ << ": cannot create token shard: " << reason
                                 << " (check the output directory and its permissions)");
  }
  tokens_crc_ = static_cast<uint32_t>(::crc32(0L, Z_NULL, 0));
  // The header is written at commit(); until then its place holds zeros.
  std::vector<unsigned char> placeholder(kHeaderBytes, 0);
  write_all(fd_, placeholder.data(), placeholder.size(), tmp_path_);
  buffer_.resize(kWriteBufferBytes);
}

TokenShardWriter::~TokenShardWriter() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_path_.c_str());
}

void TokenShardWriter::append(const int32_t* tokens, size_t n) {
  RELORA_CHECK(fd_ >= 0, "append to committed shard " << path_);
  RELORA_CHECK(static_cast<int64_t>(n) <= INT32_MAX - num_tokens_,
               num_tokens_ << " + " << n << " tokens do not fit one shard's int32 count: " << path_);
  const int64_t limit = width_ == 2 ? 65536 : (int64_t{1} << 32);
  for (size_t i = 0; i < n; ++i) {
    RELORA_CHECK(tokens[i] >= 0 && tokens[i] < limit,
                 "token " << tokens[i] << " does not fit " << width_ << " bytes: " << path_);
    if (width_ == 2) {
      uint16_t t = static_cast<uint16_t>(tokens[i]);
      std::memcpy(buffer_.data() + buffered_, &t, sizeof(t));
    } else {
      uint32_t t = static_cast<uint32_t>(tokens[i]);
      std::memcpy(buffer_.data() + buffered_, &t, sizeof(t));
    }
    buffered_ += static_cast<size_t>(width_);
    if (buffered_ == buffer_.size()) flush_buffer();
  }
  num_tokens_ += static_cast<int64_t>(n);
}

void TokenShardWriter::flush_buffer() {
  write_all(fd_, buffer_.data(), buffered_, tmp_path_);
  tokens_crc_ = static_cast<uint32_t>(
      ::crc32(tokens_crc_, buffer_.data(), static_cast<uInt>(buffered_)));
  buffered_ = 0;
}

uint32_t TokenShardWriter::commit() {
  RELORA_CHECK(fd_ >= 0, "commit of committed shard " << path_);
  flush_buffer();
  std::vector<int32_t> header(kHeaderInts, 0);
  header[0] = width_ == 2 ? kMagicU16 : kMagicU32;
  header[1] = width_ == 2 ? kVersionU16 : kVersionU32;
  header[2] = static_cast<int32_t>(num_tokens_);
  RELORA_CHECK(::pwrite(fd_, header.data(), kHeaderBytes, 0) == static_cast<ssize_t>(kHeaderBytes),
               "writing the header of " << tmp_path_ << ": " << std::strerror(errno));
  RELORA_CHECK(::fsync(fd_) == 0, "fsync " << tmp_path_ << ": " << std::strerror(errno));
  int fd = std::exchange(fd_, -1);
  RELORA_CHECK(::close(fd) == 0, "closing " << tmp_path_ << ": " << std::strerror(errno));
  RELORA_CHECK(std::rename(tmp_path_.c_str(), path_.c_str()) == 0,
               "renaming " << tmp_path_ << " to " << path_ << ": " << std::strerror(errno));
  uint32_t header_crc = static_cast<uint32_t>(::crc32(
      ::crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(header.data()), kHeaderBytes));
  const int64_t token_bytes = num_tokens_ * width_;
  return static_cast<uint32_t>(::crc32_combine(header_crc, tokens_crc_, token_bytes));
}

void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens) {
  int32_t max_token = 0;
  for (int32_t t : tokens) {
    RELORA_CHECK(t >= 0, "negative token " << t << " for " << path);
    max_token = std::max(max_token, t);
  }
  TokenShardWriter writer(path, max_token < 65536 ? 2 : 4);
  writer.append(tokens.data(), tokens.size());
  writer.commit();
}

}  // namespace relora
