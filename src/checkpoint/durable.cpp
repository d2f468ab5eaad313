// fsync of files and directories, durable renames and small atomic files.
#include "checkpoint/durable.h"

#include <fcntl.h>
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

}  // namespace relora::checkpoint_detail
