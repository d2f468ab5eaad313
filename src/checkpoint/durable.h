// Durable file operations for checkpoints: data and renames that survive a crash or a power
// loss once these return (fsync of the file, then of its directory).
#pragma once
#include <string>

namespace relora::checkpoint_detail {

// The directory holding `path` ("." for a bare name).
std::string directory_of(const std::string& path);

void fsync_file(const std::string& path);
void fsync_directory(const std::string& dir);

// rename(from, to), then fsync of the directory of `to`.
void rename_durably(const std::string& from, const std::string& to);

// Writes `text` to path.tmp, fsyncs it and renames it over `path` durably.
void write_file_durably(const std::string& path, const std::string& text);

// Why no file can be written at `path` (which must not exist), for an error message: the
// system's reason for a failed create or 4 KiB write ("Not a directory", "Permission
// denied"), or "the file system is full (N MB free)" under 64 MB free; "" otherwise.
std::string why_unwritable(const std::string& path);

}  // namespace relora::checkpoint_detail
