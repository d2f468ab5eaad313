// A run directory's checkpoints: step_*.h5 names, the `latest` pointer, retention, and the
// choice of the checkpoint to resume from.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "checkpoint/checkpoint.h"
#include "checkpoint/durable.h"
#include "core/errors.h"

namespace relora {
namespace {

namespace fs = std::filesystem;

constexpr const char* kLatest = "latest";

struct StepFile {
  int64_t step;
  std::string name;
};

// The step of "step_00001234.h5" (suffix ".h5"), or -1 for any other name.
int64_t step_of(const std::string& name, const std::string& suffix) {
  const std::string prefix = "step_";
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return -1;
  }
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  const bool all_digits = std::all_of(digits.begin(), digits.end(),
                                      [](unsigned char c) { return std::isdigit(c) != 0; });
  if (digits.size() > 18 || !all_digits) return -1;
  return std::stoll(digits);
}

// The directory's files named step_<digits><suffix>, newest (highest step) first.
std::vector<StepFile> step_files(const std::string& dir, const std::string& suffix) {
  std::vector<StepFile> files;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    const int64_t step = step_of(name, suffix);
    if (step >= 0 && entry.is_regular_file(error)) files.push_back({step, name});
  }
  std::sort(files.begin(), files.end(),
            [](const StepFile& a, const StepFile& b) { return a.step > b.step; });
  return files;
}

// The checkpoint name <dir>/latest holds, or "" without one.
std::string read_latest(const std::string& dir) {
  std::ifstream in(fs::path(dir) / kLatest);
  std::string name;
  std::getline(in, name);
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
  return name;
}

void warn(const std::string& message) { std::cerr << "relora: warning: " << message << std::endl; }

}  // namespace

std::string checkpoint_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%08lld.h5", static_cast<long long>(step));
  return name;
}

void publish_latest(const std::string& dir, const std::string& name) {
  checkpoint_detail::write_file_durably((fs::path(dir) / kLatest).string(), name + "\n");
}

void apply_retention(const std::string& dir, int keep, int64_t saved_step) {
  RELORA_CHECK(keep >= 1, "keep " << keep);
  const std::string latest = read_latest(dir), saved = checkpoint_name(saved_step);
  const std::vector<StepFile> files = step_files(dir, ".h5");
  // never deleted: the file saved and the one `latest` names; those up to saved_step use slots
  int slots = keep;
  for (const StepFile& file : files)
    if ((file.name == latest || file.name == saved) && file.step <= saved_step) --slots;
  std::vector<std::string> doomed;
  for (const StepFile& file : files) {
    if (file.name == latest || file.name == saved || file.step > saved_step) continue;
    if (slots > 0) {
      --slots;
    } else {
      doomed.push_back(file.name);
    }
  }
  for (const StepFile& file : step_files(dir, ".h5.tmp")) doomed.push_back(file.name);
  for (const std::string& name : doomed) {
    std::error_code error;
    if (!fs::remove(fs::path(dir) / name, error) && error) {
      warn("cannot delete old checkpoint " + (fs::path(dir) / name).string() + ": " + error.message());
    }
  }
}

std::vector<std::string> checkpoints_after(const std::string& dir, int64_t step) {
  std::vector<std::string> names;
  for (const StepFile& file : step_files(dir, ".h5"))
    if (file.step > step) names.push_back(file.name);
  return names;
}

std::string find_resume_checkpoint(const std::string& dir) {
  std::set<std::string> tried;
  const std::string latest = read_latest(dir);
  // with `latest` naming a step, only older ones are fallbacks: later ones are a
  // continuation that a resume from an older checkpoint left behind
  const int64_t latest_step = step_of(latest, ".h5");
  const int64_t newest_fallback = latest_step >= 0 ? latest_step - 1 : INT64_MAX;
  std::error_code error;
  if (!latest.empty() && !fs::exists(fs::path(dir) / latest, error)) {
    warn((fs::path(dir) / kLatest).string() + " names " + latest +
         ", which does not exist; trying the newest other checkpoint");
  } else if (!latest.empty()) {
    const std::string path = (fs::path(dir) / latest).string();
    try {
      read_run_state(path);
      return path;
    } catch (const InputError& e) {
      warn((fs::path(dir) / kLatest).string() + " names a checkpoint that cannot be resumed from: " +
           e.what() + "; trying the newest other checkpoint");
    }
    tried.insert(latest);
  }
  for (const StepFile& file : step_files(dir, ".h5")) {
    if (tried.count(file.name) || file.step > newest_fallback) continue;
    const std::string path = (fs::path(dir) / file.name).string();
    try {
      read_run_state(path);
      return path;
    } catch (const InputError& e) {
      warn(std::string("skipping ") + e.what());
    }
    tried.insert(file.name);
  }
  // checkpoints that all fail: starting fresh would overwrite the run's metrics and files
  if (!tried.empty())
    RELORA_INPUT_ERROR("--resume auto: none of the " << tried.size() << " checkpoint(s) it tried in " << dir
                       << " can be resumed from (the warnings above say why; steps after the one `latest` "
                       "names are not tried); resume one with --resume PATH, or start over with another "
                       "checkpoint.dir");
  return "";
}

}  // namespace relora
