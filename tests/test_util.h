// Shared helpers for the tests: a temporary directory that cleans up after itself, and a
// small model/run config.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <string>

namespace relora::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "relora_test_XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace relora::testing
