// Token shards in the llm.c format: validate and memory-map for reading, glob, and write.
#include "data/shard.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

// Closes a file descriptor when it goes out of scope, unless release() took it back.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

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

TokenShard::TokenShard(const std::string& path, int vocab_size) : path_(path) {
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
    const uint16_t* narrow = reinterpret_cast<const uint16_t*>(tokens_);
    const uint32_t* wide = reinterpret_cast<const uint32_t*>(tokens_);
    int64_t bad = width_ == 2 ? first_token_out_of_vocab(narrow, num_tokens_, vocab_size)
                              : first_token_out_of_vocab(wide, num_tokens_, vocab_size);
    if (bad < num_tokens_) {
      uint32_t token = width_ == 2 ? narrow[bad] : wide[bad];
      RELORA_INPUT_ERROR(path << ": token " << token << " at index " << bad
                              << " is outside the vocabulary (vocab_size " << vocab_size
                              << "); the shard was made with another tokenizer or vocab_size "
                                 "is too small");
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

void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens) {
  RELORA_CHECK(tokens.size() <= static_cast<size_t>(INT32_MAX),
               tokens.size() << " tokens do not fit one shard's int32 count: " << path);
  int32_t max_token = 0;
  for (int32_t t : tokens) {
    RELORA_CHECK(t >= 0, "negative token " << t << " for " << path);
    max_token = std::max(max_token, t);
  }
  bool narrow = max_token < 65536;
  std::vector<int32_t> header(kHeaderInts, 0);
  header[0] = narrow ? kMagicU16 : kMagicU32;
  header[1] = narrow ? kVersionU16 : kVersionU32;
  header[2] = static_cast<int32_t>(tokens.size());

  std::string tmp = path + ".tmp";
  FdGuard fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  RELORA_CHECK(fd.get() >= 0, "creating " << tmp << ": " << std::strerror(errno));
  write_all(fd.get(), header.data(), kHeaderBytes, tmp);
  if (narrow) {
    std::vector<uint16_t> narrow_tokens(tokens.begin(), tokens.end());
    write_all(fd.get(), narrow_tokens.data(), narrow_tokens.size() * sizeof(uint16_t), tmp);
  } else {
    write_all(fd.get(), tokens.data(), tokens.size() * sizeof(int32_t), tmp);
  }
  RELORA_CHECK(::fsync(fd.get()) == 0, "fsync " << tmp << ": " << std::strerror(errno));
  RELORA_CHECK(::close(fd.release()) == 0, "closing " << tmp << ": " << std::strerror(errno));
  RELORA_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0,
               "renaming " << tmp << " to " << path << ": " << std::strerror(errno));
}

}  // namespace relora
