// Writing a checkpoint: every tensor and attribute into <path>.tmp, then flush, close, fsync
// and a durable rename, so a reader only ever sees complete files.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "checkpoint/checkpoint.h"
#include "checkpoint/durable.h"
#include "checkpoint/h5.h"
#include "checkpoint/schema.h"
#include "core/errors.h"

namespace relora {
namespace {

using checkpoint_detail::kDataGroup;
using checkpoint_detail::kLoraGroup;
using checkpoint_detail::kOptimizerGroup;
using checkpoint_detail::kRngGroup;
using checkpoint_detail::kWeightsGroup;

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

// alpha / rank of the run's config: the scale of every adapter.
float adapter_scale(const std::string& config_yaml) {
  try {
    const Config cfg = config_from_yaml_text(config_yaml, "RunState::config_yaml");
    return cfg.relora.alpha / static_cast<float>(cfg.relora.rank);
  } catch (const InputError& e) {
    throw InternalError(std::string("save_checkpoint: RunState::config_yaml is not a valid config: ") +
                        e.what());
  }
}

h5::Id create_group(hid_t parent, const std::string& name, const h5::Id& gcpl) {
  return h5::Id(H5_CHECK(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT)),
                H5Gclose);
}

// The group at `path` below `parent` ("model.layers.0.self_attn.q_proj/A"), creating each
// missing component.
h5::Id open_or_create_groups(hid_t parent, const std::string& path, const h5::Id& gcpl) {
  h5::Id group(H5_CHECK(H5Gopen2(parent, ".", H5P_DEFAULT)), H5Gclose);
  size_t begin = 0;
  while (begin <= path.size()) {
    const size_t end = std::min(path.find('/', begin), path.size());
    const std::string name = path.substr(begin, end - begin);
    if (H5_CHECK(H5Lexists(group.get(), name.c_str(), H5P_DEFAULT)) > 0) {
      group = h5::Id(H5_CHECK(H5Gopen2(group.get(), name.c_str(), H5P_DEFAULT)), H5Gclose);
    } else {
      group = create_group(group.get(), name, gcpl);
    }
    begin = end + 1;
  }
  return group;
}

void write_root_attributes(hid_t file, const RunState& state, bool relora_phase) {
  using h5::write_attribute;
  write_attribute(file, "format", std::string(checkpoint_detail::kFormat));
  write_attribute(file, "format_version", checkpoint_detail::kFormatVersion);
  write_attribute(file, "step", state.step);
  write_attribute(file, "tokens_seen", state.tokens_seen);
  write_attribute(file, "phase", std::string(relora_phase ? "relora" : "full"));
  write_attribute(file, "cycle", state.cycle);
  write_attribute(file, "restarts", state.restarts);
  write_attribute(file, "world_size", static_cast<int64_t>(state.world_size));
  write_attribute(file, "config_yaml", state.config_yaml);
  write_attribute(file, "created_utc", utc_now());
  write_attribute(file, "relora_version", std::string(RELORA_VERSION));
  write_attribute(file, "tokenizer_path", state.tokenizer_path);
  write_attribute(file, "tokenizer_checksum", state.tokenizer_checksum);
  write_attribute(file, "data_manifest_path", state.data_manifest_path);
  write_attribute(file, "data_manifest_checksum", state.data_manifest_checksum);
}

void write_tensors(hid_t file, const Llama& model, const AdamW& optimizer, float scale) {
  const h5::Id gcpl = h5::group_creation();
  h5::TensorWriter writer;
  const h5::Id weights = create_group(file, kWeightsGroup, gcpl);
  for (const Param* p : model.params()) {
    if (p->role != Role::adapter) writer.write(weights.get(), p->name, p->value.shape(), p->value.to_host().data());
  }

  if (model.relora_phase()) {
    const h5::Id lora = create_group(file, kLoraGroup, gcpl);
    for (const Param* a : model.adapter_params()) {
      if (a->name.size() < 2 || a->name.compare(a->name.size() - 2, 2, "/A") != 0) continue;
      const std::string module = a->name.substr(0, a->name.size() - 2);
      const Param* b = model.find(module + "/B");
      RELORA_CHECK(b != nullptr, "adapter " << a->name << " has no B");
      const h5::Id group = create_group(lora.get(), module, gcpl);
      h5::write_attribute(group.get(), "scale", scale);
      writer.write(group.get(), "A", a->value.shape(), a->value.to_host().data());
      writer.write(group.get(), "B", b->value.shape(), b->value.to_host().data());
    }
  }

  const h5::Id states = create_group(file, kOptimizerGroup, gcpl);
  for (const Param* p : model.trainable()) {
    const auto found = optimizer.states().find(p->name);
    AdamState zero;  // no state yet (no update since the tensor began training): the
                     // zero state the optimizer would create
    if (found == optimizer.states().end()) {
      zero.exp_avg = Tensor::zeros(p->value.shape());
      zero.exp_avg_sq = Tensor::zeros(p->value.shape());
    }
    const AdamState& state = found != optimizer.states().end() ? found->second : zero;
    RELORA_CHECK(state.exp_avg.shape() == p->value.shape(), "optimizer state of " << p->name);
    const h5::Id group = open_or_create_groups(states.get(), p->name, gcpl);
    h5::write_attribute(group.get(), "step", state.step);
    writer.write(group.get(), "exp_avg", state.exp_avg.shape(), state.exp_avg.to_host().data());
    writer.write(group.get(), "exp_avg_sq", state.exp_avg_sq.shape(), state.exp_avg_sq.to_host().data());
  }
}

void write_position(hid_t file, const RunState& state) {
  RELORA_CHECK(state.shard_paths.size() == state.shard_tokens.size(),
               state.shard_paths.size() << " shard paths, " << state.shard_tokens.size() << " token counts");
  const h5::Id gcpl = h5::group_creation();
  const h5::Id data = create_group(file, kDataGroup, gcpl);
  h5::write_attribute(data.get(), "cursor", state.data_cursor);
  h5::write_attribute(data.get(), "epoch", state.data_epoch);
  h5::write_attribute(data.get(), "shuffle_seed", state.shuffle_seed);
  h5::write_attribute(data.get(), "shards", state.shard_paths);
  h5::write_attribute(data.get(), "shard_tokens", state.shard_tokens);
  const h5::Id rng = create_group(file, kRngGroup, gcpl);
  h5::write_attribute(rng.get(), "seed", state.rng_seed);
}

void write_checkpoint_file(const std::string& path, const RunState& state, const Llama& model,
                           const AdamW& optimizer) {
  const float scale = model.relora_phase() ? adapter_scale(state.config_yaml) : 0.0f;
  const h5::QuietErrors quiet;
  h5::Id file(H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, h5::file_creation().get(),
                                 h5::file_access().get())),
              H5Fclose);
  write_root_attributes(file.get(), state, model.relora_phase());
  write_tensors(file.get(), model, optimizer, scale);
  write_position(file.get(), state);
  H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL));
  H5_CHECK(file.close());
}

}  // namespace

SaveStats save_checkpoint(const std::string& path, const RunState& state, const Llama& model,
                          const AdamW& optimizer) {
  const auto start = std::chrono::steady_clock::now();
  RELORA_CHECK(state.relora_phase == model.relora_phase(),
               "RunState says phase " << (state.relora_phase ? "relora" : "full")
                                      << ", the model is in the other");
  RELORA_CHECK(!state.config_yaml.empty(), "RunState::config_yaml is empty");
  const std::string tmp = path + ".tmp";
  try {
    write_checkpoint_file(tmp, state, model, optimizer);
    checkpoint_detail::fsync_file(tmp);
  } catch (const InputError&) {
    std::remove(tmp.c_str());
    throw;
  } catch (const std::exception&) {
    std::remove(tmp.c_str());
    // a file system that takes no file (gone, read-only, full) is the usual cause: say so
    const std::string why = checkpoint_detail::why_unwritable(tmp);
    if (!why.empty())
      RELORA_INPUT_ERROR("cannot write the checkpoint " << path << ": " << why
                         << "; make checkpoint.dir writable with room to spare (or point it elsewhere) and resume "
                            "with --resume auto");
    throw;
  }
  checkpoint_detail::rename_durably(tmp, path);
  struct stat info {};
  RELORA_CHECK(stat(path.c_str(), &info) == 0, "stat " << path);
  SaveStats stats;
  stats.bytes = static_cast<int64_t>(info.st_size);
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace relora
