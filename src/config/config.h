// One typed Config for a run, read from YAML (yaml-cpp) with `--set section.key=value`
// overrides. Every key has a default and a one-line doc; the key table in config.cpp is the
// single source for parsing, validation, `relora train --help` and the resolved config file.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace relora {

struct ModelConfig {
  int vocab_size = 32000;
  int hidden_size = 512;
  int num_layers = 8;
  int num_heads = 8;
  int intermediate_size = 1376;
  int seq_len = 512;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  float init_std = 0.02f;
};

struct ReloraConfig {
  int rank = 128;  // 0: no adapters, full-rank training throughout
  float alpha = 32.0f;
  // any of q_proj k_proj v_proj o_proj gate_proj up_proj down_proj
  std::vector<std::string> targets = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                      "gate_proj", "up_proj", "down_proj"};
  std::string embeddings = "lora";  // lora | frozen | full
  int warm_start_steps = 1000;
  int reset_every = 2000;  // 0: no restarts
  float optimizer_prune = 0.99f;
  int restart_warmup_steps = 50;
  bool master_on_host = false;  // GPU: frozen block weights bf16 on the device, fp32 on the host
};

struct OptimizerConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float grad_clip = 1.0f;  // 0: no clipping
};

struct ScheduleConfig {
  int warmup_steps = 100;
  float min_lr_ratio = 0.1f;
};

struct TrainConfig {
  int steps = 10000;
  int global_batch = 64;  // sequences per optimizer update
  int micro_batch = 8;    // sequences per forward/backward
  uint64_t seed = 1234;
  std::string device = "auto";  // auto (cuda when usable, else cpu) | cpu | cuda
  int devices = 0;               // GPUs per node used; rank binds to local_rank % devices; 0: all
  std::string matmul = "bf16_copy";  // GPU products: bf16_copy | bf16 | tf32 (fp32 accumulation) | fp32; CPU: fp32
  bool recompute = false;        // recompute block activations in backward
  std::string activation_dtype = "fp32";  // saved activations: fp32 | bf16 (half the memory)
  std::string comm_timeout = "10m";  // NCCL: a collective waiting longer ends the job
  int threads = 0;             // 0: every core in this process's affinity mask
  float bucket_mb = 25.0f;     // gradient all-reduce bucket size (MB)
  std::string allreduce_dtype = "fp32";  // gradient all-reduce: fp32 | bf16 (half the bytes)
  std::string time_limit;      // "3h50m", "90m", "45s"; empty: none
};

struct DataConfig {
  std::string train;     // glob pattern of token shards
  std::string val;       // glob pattern; empty: no evaluation
  int eval_every = 500;  // 0: never
  int eval_batches = 20;
};

struct CheckpointConfig {
  std::string dir = "runs/default";
  int every = 1000;  // 0: only at the end
  int keep = 3;
  int every_minutes = 0;          // 0: no time-based checkpoints
  std::string read = "shared";    // shared (every rank reads) | broadcast (rank 0 reads)
};

struct LogConfig {
  int every = 10;
};

struct Config {
  ModelConfig model;
  ReloraConfig relora;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  TrainConfig train;
  DataConfig data;
  CheckpointConfig checkpoint;
  LogConfig log;
  std::string source;  // the file it was read from ("" for defaults)
};

// What a config is loaded for: `training` (relora train) checks everything; `measuring`
// (relora eval and bench, one micro-batch at a time) leaves out train.global_batch's
// relation to train.micro_batch, which only training uses.
enum class ConfigUse { training, measuring };

// Reads `path`, applies `overrides` ("section.key=value", value parsed as YAML) in order,
// validates. Throws InputError with one line naming the file (or "--set"), the key, and
// what is allowed: missing/unreadable file, YAML syntax error (with line), unknown section
// or key (with the closest known key suggested), wrong type, out-of-range value.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {},
                   ConfigUse use = ConfigUse::training);

// A config from YAML text (e.g. the resolved config stored in a checkpoint) and overrides,
// validated; `where` names the text's origin in messages, like a file name.
Config config_from_yaml_text(const std::string& yaml, const std::string& where,
                             const std::vector<std::string>& overrides = {},
                             ConfigUse use = ConfigUse::training);

// Defaults plus overrides (no file), validated. For tests and tools.
Config config_from_overrides(const std::vector<std::string>& overrides);

// Where each key set by a file or an override came from: "section.key" -> "run.yaml:12"
// or "--set section.key=value" (the last that set it).
using KeyOrigins = std::map<std::string, std::string>;

// Cross-field and range checks (also run by load_config). A message about a key starts with
// where that key was set (origins), else with `where`.
void validate_config(const Config& cfg, const std::string& where, const KeyOrigins& origins = {},
                     ConfigUse use = ConfigUse::training);

// The full resolved config as YAML (every key, in table order), loadable by load_config.
std::string config_to_yaml(const Config& cfg);

// train.comm_timeout of a validated config, in seconds.
int64_t comm_timeout_seconds(const Config& cfg);

// A duration key (train.time_limit, train.comm_timeout) in seconds: "3h50m", "90m", "45s",
// "2h30m10s", "" -> 0. Throws InputError naming `where` and `key` for anything else.
int64_t parse_duration(const std::string& text, const std::string& where, const std::string& key);

// Aligned lines "  section.key  default  doc" for --help, one per key in table order.
std::string config_keys_help();

}  // namespace relora
