// Line-by-line reading of plain or gzip-compressed files (see line_reader.h).
#include "data_pipeline/line_reader.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/errors.h"

namespace relora {
namespace {

constexpr size_t kReadBytes = size_t{1} << 20;  // bytes asked of zlib per read

}  // namespace

LineReader::LineReader(const std::string& path) : path_(path), buffer_(kReadBytes) {
  errno = 0;
  file_ = gzopen(path.c_str(), "rb");
  if (file_ == nullptr) {
    const char* reason = errno != 0 ? std::strerror(errno) : "out of memory";
    RELORA_INPUT_ERROR(path << ": cannot open: " << reason
                            << " (check the path and its permissions)");
  }
  RELORA_CHECK(gzbuffer(file_, 256 * 1024) == 0, "gzbuffer for " << path);
  try {
    fill();
  } catch (...) {
    gzclose(file_);
    throw;
  }
  looks_binary_ = std::memchr(buffer_.data(), '\0', std::min(end_, kBinaryProbeBytes)) != nullptr;
}

LineReader::~LineReader() {
  if (file_ != nullptr) gzclose(file_);
}

int64_t LineReader::file_offset() const { return static_cast<int64_t>(gzoffset(file_)); }

bool LineReader::fill() {
  if (eof_) return false;
  // Keep the unread bytes, moved to the front; grow the buffer if a line fills all of it.
  size_t unread = end_ - begin_;
  if (begin_ > 0) std::memmove(buffer_.data(), buffer_.data() + begin_, unread);
  begin_ = 0;
  end_ = unread;
  if (buffer_.size() - end_ < kReadBytes) buffer_.resize(end_ + kReadBytes);
  int got = gzread(file_, buffer_.data() + end_, static_cast<unsigned>(kReadBytes));
  if (got < 0) {
    int code = 0;
    const char* message = gzerror(file_, &code);
    if (code == Z_ERRNO) message = std::strerror(errno);
    RELORA_INPUT_ERROR(path_ << ":" << line_number_ + 1 << ": cannot read: " << message
                             << (code == Z_DATA_ERROR || code == Z_BUF_ERROR
                                     ? " (the gzip data is corrupt or truncated)"
                                     : ""));
  }
  if (got == 0) {
    // gzread reports a truncated gzip stream only through gzerror.
    int code = 0;
    const char* message = gzerror(file_, &code);
    if (code != Z_OK) {
      RELORA_INPUT_ERROR(path_ << ":" << line_number_ + 1 << ": cannot read: " << message
                               << " (the gzip data is corrupt or truncated)");
    }
    eof_ = true;
    return false;
  }
  end_ += static_cast<size_t>(got);
  return true;
}

bool LineReader::next(std::string_view* line) {
  size_t searched = begin_;  // bytes before this offset hold no '\n'
  while (true) {
    const char* newline =
        static_cast<const char*>(std::memchr(buffer_.data() + searched, '\n', end_ - searched));
    if (newline != nullptr) {
      size_t at = static_cast<size_t>(newline - buffer_.data());
      *line = std::string_view(buffer_.data() + begin_, at - begin_);
      begin_ = at + 1;
      ++line_number_;
      line_had_newline_ = true;
      return true;
    }
    size_t scanned = end_ - begin_;
    if (scanned > kMaxLineBytes) {
      RELORA_INPUT_ERROR(path_ << ":" << line_number_ + 1 << ": line longer than "
                               << (kMaxLineBytes >> 20)
                               << " MiB; a text file with lines (or JSONL) is expected");
    }
    if (!fill()) break;
    searched = begin_ + scanned;
  }
  if (begin_ == end_) return false;
  *line = std::string_view(buffer_.data() + begin_, end_ - begin_);
  begin_ = end_;
  ++line_number_;
  line_had_newline_ = false;
  return true;
}

}  // namespace relora
