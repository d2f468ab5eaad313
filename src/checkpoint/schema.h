// The checkpoint file's layout shared by writing, reading and inspecting: the format name
// and version, where each tensor lives, and opening a file as a validated checkpoint.
//   /                        attributes: format, format_version, step, tokens_seen, phase,
//                            cycle, restarts, world_size, config_yaml, created_utc,
//                            relora_version, tokenizer_*, data_manifest_*
//   /weights/<HF name>       base weights (W0 in the ReLoRA phase), float32, model shapes
//   /lora/<module>/A, B      adapters (A [r,in], B [out,r]); attribute scale on the group
//   /optimizer/<tensor>/exp_avg, exp_avg_sq   per trainable tensor; attribute step
//   /data                    attributes: cursor, epoch, shuffle_seed, shards, shard_tokens
//   /rng                     attribute: seed
#pragma once
#include <cstdint>
#include <string>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "model/params.h"

namespace relora::checkpoint_detail {

constexpr const char* kFormat = "relora-checkpoint";
constexpr int64_t kFormatVersion = 1;

constexpr const char* kWeightsGroup = "/weights";
constexpr const char* kLoraGroup = "/lora";
constexpr const char* kOptimizerGroup = "/optimizer";
constexpr const char* kDataGroup = "/data";
constexpr const char* kRngGroup = "/rng";

// "/weights/<name>" for a base tensor, "/lora/<module>/A" (or B) for an adapter.
inline std::string tensor_path(const Param& p) {
  return std::string(p.role == Role::adapter ? kLoraGroup : kWeightsGroup) + "/" + p.name;
}

// "/optimizer/<name>": the group of a tensor's Adam state.
inline std::string optimizer_path(const std::string& name) {
  return std::string(kOptimizerGroup) + "/" + name;
}

// "checkpoint <path>": how messages name the file.
inline std::string describe_file(const std::string& path) { return "checkpoint " + path; }

// Opens `path` read-only as a checkpoint: the file must exist, be HDF5, open (not truncated
// or corrupt), and carry format "relora-checkpoint" with a format_version this build reads.
// Throws InputError naming the file otherwise. Call inside an h5::QuietErrors.
h5::Id open_checkpoint(const std::string& path);

// The root, /data and /rng attributes of an opened checkpoint.
RunState read_run_state(hid_t file, const std::string& path);

}  // namespace relora::checkpoint_detail
