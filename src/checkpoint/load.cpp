// Reading a checkpoint: opening and validating the file (HDF5, not truncated, our format and
// version), its attributes, and every tensor into a model and optimizer, with one clear
// line naming the file for anything wrong.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "checkpoint/schema.h"
#include "core/errors.h"

namespace relora {
namespace checkpoint_detail {
namespace {

// Whether the file starts with HDF5's signature (relora writes no user block).
bool has_hdf5_signature(const std::string& path) {
  static const char kSignature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  char head[8] = {};
  std::ifstream in(path, std::ios::binary);
  in.read(head, sizeof(head));
  return in.gcount() == sizeof(head) && std::memcmp(head, kSignature, sizeof(head)) == 0;
}

}  // namespace

h5::Id open_checkpoint(const std::string& path) {
  const std::string where = describe_file(path);
  std::error_code error;
  if (!std::filesystem::exists(path, error)) RELORA_INPUT_ERROR(where << ": no such file");
  if (std::filesystem::is_directory(path, error)) {
    RELORA_INPUT_ERROR(where << " is a directory; give a step_*.h5 file");
  }
  if (!std::ifstream(path, std::ios::binary)) {
    RELORA_INPUT_ERROR(where << ": cannot be read: " << std::strerror(errno));
  }
  const h5::Id fapl = h5::file_access();
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (id < 0) {
    const std::string message = h5::last_error_message();
    if (!has_hdf5_signature(path)) {
      RELORA_INPUT_ERROR(where << ": not an HDF5 file (no HDF5 signature at its start)");
    }
    if (message.find("truncated") != std::string::npos) {
      RELORA_INPUT_ERROR(where << ": the file is truncated, an interrupted write or copy (HDF5: "
                               << message << ")");
    }
    RELORA_INPUT_ERROR(where << ": cannot be opened, the file is corrupt (HDF5: " << message << ")");
  }
  h5::Id file(id, H5Fclose);
  if (H5_CHECK_READ(where, H5Aexists(file.get(), "format")) == 0) {
    RELORA_INPUT_ERROR(where << ": not a relora checkpoint (the file has no 'format' attribute)");
  }
  const std::string format = h5::read_string_attribute(file.get(), "/", "format", where);
  if (format != kFormat) {
    RELORA_INPUT_ERROR(where << ": not a relora checkpoint (format is '" << format
                             << "', expected '" << kFormat << "')");
  }
  const int64_t version = h5::read_int64_attribute(file.get(), "/", "format_version", where);
  if (version != kFormatVersion) {
    RELORA_INPUT_ERROR(where << ": format_version " << version << " is not one relora "
                             << RELORA_VERSION << " reads (it reads " << kFormatVersion
                             << "); use the relora version that wrote it");
  }
  return file;
}

RunState read_run_state(hid_t file, const std::string& path) {
  const std::string where = describe_file(path);
  auto integer = [&](hid_t obj, const char* obj_path, const char* name) {
    return h5::read_int64_attribute(obj, obj_path, name, where);
  };
  auto text = [&](const char* name) { return h5::read_string_attribute(file, "/", name, where); };
  RunState state;
  state.step = integer(file, "/", "step");
  state.tokens_seen = integer(file, "/", "tokens_seen");
  const std::string phase = text("phase");
  if (phase != "full" && phase != "relora") {
    RELORA_INPUT_ERROR(where << ": attribute 'phase' is '" << phase << "', expected full or relora");
  }
  state.relora_phase = phase == "relora";
  state.cycle = integer(file, "/", "cycle");
  state.restarts = integer(file, "/", "restarts");
  state.world_size = static_cast<int>(integer(file, "/", "world_size"));
  state.config_yaml = text("config_yaml");
  state.created_utc = text("created_utc");
  state.relora_version = text("relora_version");
  state.tokenizer_path = text("tokenizer_path");
  state.tokenizer_checksum = text("tokenizer_checksum");
  state.data_manifest_path = text("data_manifest_path");
  state.data_manifest_checksum = text("data_manifest_checksum");

  for (const char* group : {kDataGroup, kRngGroup}) {
    if (!h5::path_exists(file, group, where)) RELORA_INPUT_ERROR(where << ": group " << group << " is missing");
  }
  h5::Id data(H5_CHECK_READ(where, H5Gopen2(file, kDataGroup, H5P_DEFAULT)), H5Gclose);
  state.data_cursor = integer(data.get(), kDataGroup, "cursor");
  state.data_epoch = integer(data.get(), kDataGroup, "epoch");
  state.shuffle_seed = h5::read_uint64_attribute(data.get(), kDataGroup, "shuffle_seed", where);
  state.shard_paths = h5::read_strings_attribute(data.get(), kDataGroup, "shards", where);
  state.shard_tokens = h5::read_int64s_attribute(data.get(), kDataGroup, "shard_tokens", where);
  if (state.shard_paths.size() != state.shard_tokens.size()) {
    RELORA_INPUT_ERROR(where << ": " << kDataGroup << " lists " << state.shard_paths.size()
                             << " shards but " << state.shard_tokens.size() << " token counts");
  }
  h5::Id rng(H5_CHECK_READ(where, H5Gopen2(file, kRngGroup, H5P_DEFAULT)), H5Gclose);
  state.rng_seed = h5::read_uint64_attribute(rng.get(), kRngGroup, "seed", where);
  return state;
}

}  // namespace checkpoint_detail

namespace {

using checkpoint_detail::describe_file;

// A tensor to load: where it is in the file, what it is called in messages, and where its
// values go.
struct TensorSlot {
  std::string path;
  std::string name;
  Tensor* target;
};

std::vector<TensorSlot> tensor_slots(Llama& model, AdamW& optimizer) {
  std::vector<TensorSlot> slots;
  for (Param* p : model.params()) {
    slots.push_back({checkpoint_detail::tensor_path(*p), p->name, &p->value});
  }
  for (Param* p : model.trainable()) {
    AdamState& state = optimizer.state_for(*p);
    const std::string group = checkpoint_detail::optimizer_path(p->name);
    slots.push_back({group + "/exp_avg", "the Adam exp_avg of " + p->name, &state.exp_avg});
    slots.push_back({group + "/exp_avg_sq", "the Adam exp_avg_sq of " + p->name, &state.exp_avg_sq});
  }
  return slots;
}

// Every slot present with the model's shape, and nothing in the file beyond the slots.
void check_tensor_layout(hid_t file, const std::vector<TensorSlot>& slots, const std::string& where) {
  std::set<std::string> expected;
  for (const TensorSlot& slot : slots) {
    expected.insert(slot.path);
    if (!h5::path_exists(file, slot.path, where)) {
      RELORA_INPUT_ERROR(where << ": dataset " << slot.path << " is missing (the model has "
                               << slot.name << "; was the checkpoint written with other "
                               << "model or relora settings?)");
    }
    const std::vector<int64_t> stored = h5::dataset_shape(file, slot.path, where);
    if (stored != slot.target->shape()) {
      RELORA_INPUT_ERROR(where << ": model shape differs from the checkpoint: " << slot.name << " is "
                               << h5::shape_text(stored) << " in the checkpoint, "
                               << h5::shape_text(slot.target->shape()) << " in the config");
    }
  }
  for (const std::string& path : h5::list_datasets(file, where)) {
    if (!expected.count(path)) {
      RELORA_INPUT_ERROR(where << ": dataset " << path << " has no place in the model (was the "
                               << "checkpoint written with other model or relora settings?)");
    }
  }
}

}  // namespace

RunState read_run_state(const std::string& path) {
  const h5::QuietErrors quiet;
  const h5::Id file = checkpoint_detail::open_checkpoint(path);
  return checkpoint_detail::read_run_state(file.get(), path);
}

void read_tensors(const std::string& path, Llama& model, AdamW& optimizer) {
  const std::string where = describe_file(path);
  const h5::QuietErrors quiet;
  const h5::Id file = checkpoint_detail::open_checkpoint(path);
  const std::string phase = h5::read_string_attribute(file.get(), "/", "phase", where);
  RELORA_CHECK((phase == "relora") == model.relora_phase(),
               where << " is in phase " << phase << ": put the model in that phase before loading");
  const std::vector<TensorSlot> slots = tensor_slots(model, optimizer);
  check_tensor_layout(file.get(), slots, where);
  for (const TensorSlot& slot : slots) {
    Tensor host = slot.target->on_host() ? *slot.target : Tensor::zeros(slot.target->shape());
    h5::read_tensor(file.get(), slot.path, host.data(), where);
    if (!slot.target->on_host()) slot.target->copy_from_host(host.data());
  }
  for (Param* p : model.trainable()) {
    const std::string group_path = checkpoint_detail::optimizer_path(p->name);
    h5::Id group(H5_CHECK_READ(where, H5Gopen2(file.get(), group_path.c_str(), H5P_DEFAULT)), H5Gclose);
    optimizer.state(p->name)->step = h5::read_int64_attribute(group.get(), group_path, "step", where);
  }
  model.refresh_bf16_weights();  // host masters (relora.master_on_host) were read
}

}  // namespace relora
