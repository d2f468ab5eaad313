// Whole-file reading and atomic writing (see files.h).
#include "data_pipeline/files.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/errors.h"

namespace relora {

std::string read_whole_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) RELORA_INPUT_ERROR(path << ": cannot open: " << std::strerror(errno));
  std::stringstream bytes;
  bytes << file.rdbuf();
  RELORA_CHECK(!file.bad(), "reading " << path << ": " << std::strerror(errno));
  return bytes.str();
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
    if (!file) {
      RELORA_INPUT_ERROR(tmp << ": cannot create: " << std::strerror(errno)
                             << " (check the output directory and its permissions)");
    }
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    file.flush();
    RELORA_CHECK(file.good(), "writing " << tmp << ": " << std::strerror(errno));
  }
  RELORA_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0,
               "renaming " << tmp << " to " << path << ": " << std::strerror(errno));
}

}  // namespace relora
