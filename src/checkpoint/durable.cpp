// fsync of files and directories, durable renames and small atomic files.
#include "checkpoint/durable.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/errors.h"

namespace relora::checkpoint_detail {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw InternalError(what + ": " + std::strerror(errno));
}

void fsync_path(const std::string& path, int flags) {
  const int fd = open(path.c_str(), flags);
  if (fd < 0) fail("cannot open " + path + " to fsync it");
  if (fsync(fd) != 0) {
    const int error = errno;
    close(fd);
    errno = error;
    fail("fsync of " + path);
  }
  if (close(fd) != 0) fail("close of " + path);
}

}  // namespace

std::string directory_of(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

void fsync_file(const std::string& path) { fsync_path(path, O_RDONLY | O_CLOEXEC); }

void fsync_directory(const std::string& dir) {
  fsync_path(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

void rename_durably(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) fail("cannot rename " + from + " to " + to);
  fsync_directory(directory_of(to));
}

void write_file_durably(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create " + tmp);
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      close(fd);
      errno = error;
      fail("cannot write " + tmp);
    }
    written += static_cast<size_t>(n);
  }
  const bool synced = fsync(fd) == 0;
  const int error = errno;
  if (close(fd) != 0 || !synced) {
    if (!synced) errno = error;
    fail("cannot fsync and close " + tmp);
  }
  rename_durably(tmp, path);
}

std::string why_unwritable(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) return std::strerror(errno);
  const char block[4096] = {};
  const bool wrote = ::write(fd, block, sizeof(block)) == static_cast<ssize_t>(sizeof(block)) && ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  std::remove(path.c_str());
  if (!wrote) return std::strerror(error);
  struct statvfs fs {};
  if (::statvfs(directory_of(path).c_str(), &fs) == 0) {
    const double free_mb = static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize) / 1e6;
    if (free_mb < 64.0) {
      char text[64];
      std::snprintf(text, sizeof(text), "the file system is full (%.1f MB free)", free_mb);
      return text;
    }
  }
  return "";
}

}  // namespace relora::checkpoint_detail
