// `relora inspect`: a checkpoint's attributes, tensors and stored config as readable text.
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "checkpoint/schema.h"

namespace relora {
namespace {

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string or_unknown(const std::string& text) { return text.empty() ? "unknown" : text; }

}  // namespace

std::string describe_checkpoint(const std::string& path) {
  using checkpoint_detail::kLoraGroup;
  using checkpoint_detail::kOptimizerGroup;
  using checkpoint_detail::kWeightsGroup;
  const std::string where = checkpoint_detail::describe_file(path);
  const h5::QuietErrors quiet;
  const h5::Id file = checkpoint_detail::open_checkpoint(path);
  const RunState state = checkpoint_detail::read_run_state(file.get(), path);
  struct stat info {};
  stat(path.c_str(), &info);

  // One line per tensor: optimizer state as one line per tensor (both moments, its step).
  struct Line {
    std::string name, detail;
  };
  std::vector<Line> lines;
  int64_t weight_count = 0, weight_numel = 0, adapter_count = 0, adapter_numel = 0, state_count = 0;
  float scale = 0.0f;
  const std::string exp_avg = "/exp_avg";
  for (const std::string& dataset : h5::list_datasets(file.get(), where)) {
    const std::vector<int64_t> shape = h5::dataset_shape(file.get(), dataset, where);
    if (starts_with(dataset, std::string(kOptimizerGroup) + "/")) {
      if (!ends_with(dataset, exp_avg)) continue;  // exp_avg_sq: on its exp_avg's line
      const std::string group = dataset.substr(0, dataset.size() - exp_avg.size());
      h5::Id state_group(H5_CHECK_READ(where, H5Gopen2(file.get(), group.c_str(), H5P_DEFAULT)), H5Gclose);
      const int64_t step = h5::read_int64_attribute(state_group.get(), group, "step", where);
      lines.push_back({group, h5::shape_text(shape) + "  exp_avg, exp_avg_sq, step " + std::to_string(step)});
      ++state_count;
      continue;
    }
    lines.push_back({dataset, h5::shape_text(shape)});
    if (starts_with(dataset, std::string(kWeightsGroup) + "/")) {
      ++weight_count;
      weight_numel += numel(shape);
    } else if (starts_with(dataset, std::string(kLoraGroup) + "/")) {
      if (adapter_count++ == 0) {
        const std::string module = dataset.substr(0, dataset.rfind('/'));
        h5::Id group(H5_CHECK_READ(where, H5Gopen2(file.get(), module.c_str(), H5P_DEFAULT)), H5Gclose);
        scale = h5::read_float_attribute(group.get(), module, "scale", where);
      }
      adapter_numel += numel(shape);
    }
  }

  std::ostringstream out;
  char size[32];
  std::snprintf(size, sizeof(size), "%.1f MB", static_cast<double>(info.st_size) / 1e6);
  out << "checkpoint " << path << ": " << size << ", format " << checkpoint_detail::kFormatVersion
      << ", written " << state.created_utc << " by relora " << state.relora_version << "\n";
  out << "  step " << state.step << ", phase " << (state.relora_phase ? "relora" : "full")
      << ", cycle " << state.cycle << ", restarts " << state.restarts << ", tokens seen "
      << state.tokens_seen << ", world size " << state.world_size << "\n";
  out << "  data: cursor " << state.data_cursor << " (epoch " << state.data_epoch
      << "), shuffle seed " << state.shuffle_seed << ", shards: " << state.shard_paths.size() << "\n";
  for (size_t i = 0; i < state.shard_paths.size(); ++i) {
    out << "    " << state.shard_paths[i] << "  " << state.shard_tokens[i] << " tokens\n";
  }
  out << "  rng seed " << state.rng_seed << "\n";
  out << "  tokenizer: " << or_unknown(state.tokenizer_path) << " (checksum "
      << or_unknown(state.tokenizer_checksum) << ")\n";
  out << "  data manifest: " << or_unknown(state.data_manifest_path) << " (checksum "
      << or_unknown(state.data_manifest_checksum) << ")\n";
  out << "  parameters: " << weight_numel << " in " << weight_count << " base tensors";
  if (adapter_count > 0) {
    out << ", " << adapter_numel << " in " << adapter_count << " adapter tensors (scale " << scale << ")";
  }
  out << "; Adam state for " << state_count << " tensors\n";
  out << "  tensors:\n";
  size_t width = 0;
  for (const Line& line : lines) width = std::max(width, line.name.size());
  for (const Line& line : lines) {
    out << "    " << line.name << std::string(width - line.name.size() + 2, ' ') << line.detail << "\n";
  }
  out << "  config:\n";
  std::istringstream config(state.config_yaml);
  for (std::string line; std::getline(config, line);) out << "    " << line << "\n";
  return out.str();
}

}  // namespace relora
