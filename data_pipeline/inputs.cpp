// Expansion of --input arguments into files (see inputs.h).
#include "data_pipeline/inputs.h"

#include <fnmatch.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <system_error>

#include "core/errors.h"
#include "data/shard.h"

namespace relora {
namespace {

namespace fs = std::filesystem;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool has_glob_characters(const std::string& s) {
  return s.find_first_of("*?[") != std::string::npos;
}

// Collects files in order, skipping excluded names and anything already collected.
class InputCollector {
 public:
  explicit InputCollector(const std::vector<std::string>& excludes) : excludes_(excludes) {}

  void add(const fs::path& path, const std::string& argument) {
    if (is_excluded(path)) return;
    std::error_code ec;
    fs::file_status status = fs::status(path, ec);
    if (ec) {
      RELORA_INPUT_ERROR("--input " << argument << ": cannot read " << path.string() << ": "
                                    << ec.message());
    }
    if (fs::is_directory(status)) {
      add_directory(path, argument);
    } else if (fs::is_regular_file(status)) {
      add_file(path, argument);
    } else if (path.string() == argument) {
      RELORA_INPUT_ERROR("--input " << argument << ": not a regular file or directory");
    }
  }

  std::vector<InputFile> take() { return std::move(files_); }

 private:
  bool is_excluded(const fs::path& path) const {
    std::string name = path.filename().string();
    if (name.empty()) name = path.parent_path().filename().string();  // "dir/" names "dir"
    for (const std::string& pattern : excludes_) {
      if (::fnmatch(pattern.c_str(), name.c_str(), 0) == 0) return true;
    }
    return false;
  }

  // Canonical path of `path`, for recognising a file or directory seen before.
  static std::string identity(const fs::path& path, const std::string& argument) {
    std::error_code ec;
    fs::path canonical = fs::canonical(path, ec);
    if (ec) {
      RELORA_INPUT_ERROR("--input " << argument << ": cannot resolve " << path.string() << ": "
                                    << ec.message());
    }
    return canonical.string();
  }

  void add_directory(const fs::path& dir, const std::string& argument) {
    if (!seen_directories_.insert(identity(dir, argument)).second) return;
    std::error_code ec;
    std::vector<fs::path> entries;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().filename().string().rfind('.', 0) == 0) continue;  // hidden
      entries.push_back(it->path());
    }
    if (ec) {
      RELORA_INPUT_ERROR("--input " << argument << ": cannot list directory " << dir.string()
                                    << ": " << ec.message());
    }
    std::sort(entries.begin(), entries.end());
    for (const fs::path& entry : entries) add(entry, argument);
  }

  void add_file(const fs::path& path, const std::string& argument) {
    if (!seen_files_.insert(identity(path, argument)).second) return;
    std::error_code ec;
    uintmax_t bytes = fs::file_size(path, ec);
    if (ec) {
      RELORA_INPUT_ERROR("--input " << argument << ": cannot read " << path.string() << ": "
                                    << ec.message());
    }
    files_.push_back({path.string(), format_of(path.string()), static_cast<int64_t>(bytes)});
  }

  const std::vector<std::string>& excludes_;
  std::set<std::string> seen_files_, seen_directories_;
  std::vector<InputFile> files_;
};

}  // namespace

InputFormat format_of(const std::string& path) {
  return ends_with(path, ".jsonl") || ends_with(path, ".jsonl.gz") ? InputFormat::jsonl
                                                                   : InputFormat::text;
}

std::vector<InputFile> resolve_inputs(const std::vector<std::string>& arguments,
                                      const std::vector<std::string>& excludes) {
  InputCollector collector(excludes);
  for (const std::string& argument : arguments) {
    std::error_code ec;
    if (fs::exists(argument, ec)) {
      collector.add(argument, argument);
    } else if (has_glob_characters(argument)) {
      for (const std::string& match : glob_files(argument, "--input"))
        collector.add(match, argument);
    } else {
      RELORA_INPUT_ERROR("--input " << argument << ": no such file or directory");
    }
  }
  std::vector<InputFile> files = collector.take();
  if (files.empty()) {
    RELORA_INPUT_ERROR(
        "--input: no file to read (the directories are empty, or --exclude skipped "
        "every file)");
  }
  return files;
}

}  // namespace relora
