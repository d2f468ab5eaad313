// Checkpoints: one HDF5 file per checkpoint (schema in docs/CHECKPOINTS.md), written
// atomically (temporary name, fsync, rename, fsync of the directory), read back with
// validation that names the file and what is wrong; the run directory's `latest` pointer,
// retention, and the choice of the checkpoint to resume from.
// A bad, truncated, corrupt or mismatched checkpoint throws InputError (one line, exit 2);
// a failed library call while writing throws InternalError.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/llama.h"
#include "optim/adamw.h"

namespace relora {

// What a checkpoint holds besides tensors.
struct RunState {
  int64_t step = 0;         // optimizer updates done
  int64_t tokens_seen = 0;  // target tokens trained on so far
  int64_t cycle = 0;
  int64_t restarts = 0;
  bool relora_phase = false;  // must match the model's phase at save
  int world_size = 1;         // ranks of the run that saved it
  std::string config_yaml;    // the full resolved config (config_to_yaml); required at save
  // Written by save_checkpoint (the time of the save, RELORA_VERSION); filled by reading.
  std::string created_utc, relora_version;
  // Provenance; empty where unknown.
  std::string tokenizer_path, tokenizer_checksum, data_manifest_path, data_manifest_checksum;
  // Data position: the global sample cursor, its epoch, the shuffle seed, and the training
  // shards with their token counts (to detect a changed dataset on resume).
  int64_t data_cursor = 0, data_epoch = 0;
  uint64_t shuffle_seed = 0;
  std::vector<std::string> shard_paths;
  std::vector<int64_t> shard_tokens;
  uint64_t rng_seed = 0;  // the counter-based RNG's whole state
};

struct SaveStats {
  int64_t bytes = 0;     // size of the checkpoint file
  double seconds = 0.0;  // wall time of the whole save, fsyncs and rename included
};

// Writes `path` atomically: path.tmp, flush, close, fsync, rename to path, fsync of the
// directory (a failed save removes path.tmp). Holds every parameter of `model` in its
// current phase (base weights under /weights, adapters under /lora) and the optimizer
// state of every trainable parameter (zero moments at step 0 where the optimizer has not
// yet created it, which is what it would create).
SaveStats save_checkpoint(const std::string& path, const RunState& state, const Llama& model,
                          const AdamW& optimizer);

// Attributes only; validates that `path` is a readable checkpoint of a known format version.
RunState read_run_state(const std::string& path);

// Loads every parameter of `model` (already put in the checkpoint's phase by the caller) and
// the optimizer state of every trainable parameter. Every tensor must be present with the
// model's shape and an intact checksum, and the checkpoint must hold no tensor the model
// lacks.
void read_tensors(const std::string& path, Llama& model, AdamW& optimizer);

// "step_00001234.h5"
std::string checkpoint_name(int64_t step);

// Points <dir>/latest at checkpoint `name` (a file in dir): written as latest.tmp, fsynced,
// renamed, directory fsynced.
void publish_latest(const std::string& dir, const std::string& name);

// After a successful save of step `saved_step`, from the one process that writes
// checkpoints: deletes all but the newest `keep` step_*.h5 files (by step) of `dir` up to
// that step, never the file saved or the one `latest` names (those up to the step count
// towards `keep`), and leftover step_*.h5.tmp files of interrupted saves. Files of later
// steps (a continuation abandoned by resuming an earlier checkpoint) are left alone.
void apply_retention(const std::string& dir, int keep, int64_t saved_step);

// The step_*.h5 files of `dir` after `step`, newest first.
std::vector<std::string> checkpoints_after(const std::string& dir, int64_t step);

// For `--resume auto`: <dir>/latest's checkpoint if it opens and validates, else the newest
// step_*.h5 before latest's step (any, without a `latest`) that does, with a warning on
// stderr for each one skipped saying why; "" if there is none at all, an InputError if
// there are some and none validates (a fresh start would overwrite the run). Validation reads the attributes (truncation and format problems);
// tensor checksums are verified by read_tensors.
std::string find_resume_checkpoint(const std::string& dir);

// Settings a resumed run may not change: the model's shape keys (vocab_size, hidden_size,
// num_layers, num_heads, intermediate_size) and relora.rank, relora.targets (as a set),
// relora.embeddings. One line per difference, "model.hidden_size: checkpoint 256, config
// 512"; empty if compatible.
std::vector<std::string> incompatible_keys(const Config& checkpoint_cfg, const Config& now);

// Settings that fix what a step is and the order of the data (train.global_batch,
// model.seq_len, train.seed): a resumed run keeps them, or its data would not continue
// where the checkpoint's left off. Lines as incompatible_keys.
std::vector<std::string> data_order_changes(const Config& checkpoint_cfg, const Config& now);

// Every key whose value differs, "train.steps 300 -> 600", in key-table order.
std::vector<std::string> changed_keys(const Config& checkpoint_cfg, const Config& now);

// `relora inspect PATH`: step, phase, cycle, restarts, world size, data position, every
// tensor with its shape, parameter counts and the stored config, as text.
std::string describe_checkpoint(const std::string& path);

}  // namespace relora
