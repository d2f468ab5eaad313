// Reads a text file line by line, gzip-compressed or not (zlib tells them apart by their
// first bytes), keeping the line number for error messages and the compressed offset for
// progress. Tells binary files apart as git and grep do: by a NUL byte near the start.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace relora {

class LineReader {
 public:
  // Opens `path` and reads its first block; InputError naming the file and the reason if
  // it cannot be read.
  explicit LineReader(const std::string& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line without its '\n' (a '\r' before it is kept); false at the end of the file.
  // The view stays valid until the next call. InputError if the gzip data is corrupt, the
  // file cannot be read, or a line is longer than kMaxLineBytes (memory stays bounded).
  bool next(std::string_view* line);
  // 1-based number of the line next() returned last.
  int64_t line_number() const { return line_number_; }
  // Whether that line ended with '\n' (only the file's last line may not).
  bool line_had_newline() const { return line_had_newline_; }
  // Bytes of the file itself (compressed bytes for gzip) consumed so far.
  int64_t file_offset() const;
  const std::string& path() const { return path_; }
  // Whether the (decompressed) file has a NUL byte in its first kBinaryProbeBytes.
  bool looks_binary() const { return looks_binary_; }
  static constexpr size_t kBinaryProbeBytes = 8000;
  static constexpr size_t kMaxLineBytes = size_t{128} << 20;

 private:
  // Reads more of the file after the unread bytes; false at the end of the file.
  bool fill();

  std::string path_;
  gzFile file_ = nullptr;
  std::vector<char> buffer_;
  size_t begin_ = 0, end_ = 0;  // unread bytes are buffer_[begin_, end_)
  bool eof_ = false;
  int64_t line_number_ = 0;
  bool line_had_newline_ = false;
  bool looks_binary_ = false;
};

}  // namespace relora
