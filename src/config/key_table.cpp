// The config key table and key lookup, with "did you mean" suggestions for unknown keys
// (optimal string alignment distance: a swap of two neighbouring letters counts as one edit).
#include "config/key_table.h"

#include <algorithm>

namespace relora::config_detail {
namespace {

// One table row; the YAML key is the field's own name, so the two cannot drift apart.
// clang-format off
#define RELORA_CONFIG_KEY(section, name, doc)                                 \
  ConfigKey{#section, #name, doc,                                             \
            [](Config& c) -> FieldRef { return &c.section.name; },            \
            [](const Config& c) -> ConstFieldRef { return &c.section.name; }}
// clang-format on

const std::vector<ConfigKey> kKeys = {
    RELORA_CONFIG_KEY(model, vocab_size,
                      "tokens in the vocabulary; must match the shards' tokenizer"),
    RELORA_CONFIG_KEY(model, hidden_size, "model width"),
    RELORA_CONFIG_KEY(model, num_layers, "transformer blocks"),
    RELORA_CONFIG_KEY(model, num_heads,
                      "attention heads; must divide hidden_size into an even head size"),
    RELORA_CONFIG_KEY(model, intermediate_size, "SwiGLU MLP width"),
    RELORA_CONFIG_KEY(model, seq_len, "tokens per training sequence"),
    RELORA_CONFIG_KEY(model, rms_norm_eps, "epsilon inside RMSNorm"),
    RELORA_CONFIG_KEY(model, rope_theta, "RoPE base frequency"),
    RELORA_CONFIG_KEY(model, init_std, "standard deviation of the normal weight init"),

    RELORA_CONFIG_KEY(relora, rank,
                      "adapter rank r; 0: no adapters, full-rank training throughout"),
    RELORA_CONFIG_KEY(relora, alpha, "adapter scale is alpha / rank"),
    RELORA_CONFIG_KEY(relora, targets,
                      "linear layers given adapters: q_proj k_proj v_proj o_proj gate_proj up_proj "
                      "down_proj"),
    RELORA_CONFIG_KEY(
        relora, embeddings,
        "embedding and output head: lora (adapters), frozen, or full (trained full-rank)"),
    RELORA_CONFIG_KEY(relora, warm_start_steps,
                      "full-rank steps before the first low-rank cycle; 0: adapters from step 0"),
    RELORA_CONFIG_KEY(relora, reset_every, "steps between merge-and-restarts; 0: never restart"),
    RELORA_CONFIG_KEY(
        relora, optimizer_prune,
        "fraction of adapter Adam moments zeroed (smallest first) at a restart, in [0,1)"),
    RELORA_CONFIG_KEY(relora, restart_warmup_steps,
                      "steps re-warming the lr from 0 after a restart; 0: no re-warm"),
    RELORA_CONFIG_KEY(relora, master_on_host,
                      "GPU, ReLoRA phase: frozen block weights as bf16 on the device, their fp32 masters "
                      "(for merges) in pinned host memory; no effect on the CPU; only with train.matmul: "
                      "bf16_copy or bf16"),

    RELORA_CONFIG_KEY(optimizer, lr, "peak learning rate"),
    RELORA_CONFIG_KEY(optimizer, beta1, "AdamW first-moment decay, in [0,1)"),
    RELORA_CONFIG_KEY(optimizer, beta2, "AdamW second-moment decay, in [0,1)"),
    RELORA_CONFIG_KEY(optimizer, eps, "AdamW epsilon"),
    RELORA_CONFIG_KEY(optimizer, weight_decay, "decoupled AdamW weight decay; 0: none"),
    RELORA_CONFIG_KEY(optimizer, grad_clip,
                      "clip the global gradient norm to this; 0: no clipping"),

    RELORA_CONFIG_KEY(schedule, warmup_steps, "linear lr warm-up at the start of the run; 0: none"),
    RELORA_CONFIG_KEY(schedule, min_lr_ratio, "cosine decay floor as a fraction of lr, in [0,1]"),

    RELORA_CONFIG_KEY(train, steps, "optimizer updates in the whole run"),
    RELORA_CONFIG_KEY(train, global_batch,
                      "sequences per optimizer update over all ranks; fixed for the run"),
    RELORA_CONFIG_KEY(train, micro_batch,
                      "sequences per forward/backward; must divide global_batch"),
    RELORA_CONFIG_KEY(train, seed,
                      "seed of every random stream: init, data order, adapter re-init"),
    RELORA_CONFIG_KEY(train, device,
                      "auto (CUDA when a GPU is usable, else CPU), cpu, or cuda"),
    RELORA_CONFIG_KEY(train, devices,
                      "GPUs per node to bind ranks to (rank on the node mod this); 0: all visible"),
    RELORA_CONFIG_KEY(train, matmul,
                      "GPU matrix products on tensor cores, fp32 sums: bf16_copy (a weight product's inputs, "
                      "its adapter joined along K, rounded into bf16 copies first, then cuBLAS's kernels for "
                      "bf16), bf16 or tf32 (inputs "
                      "rounded to bf16 or TF32 inside cuBLAS), or fp32 (slower, for checks); CPU: fp32 "
                      "whatever it says"),
    RELORA_CONFIG_KEY(train, recompute,
                      "recompute each block's activations in backward: less memory, ~1/3 more compute"),
    RELORA_CONFIG_KEY(train, activation_dtype,
                      "what backward keeps of each block: fp32, or bf16 (half the memory; rounded "
                      "when kept, computed in fp32)"),
    RELORA_CONFIG_KEY(train, comm_timeout,
                      "how long a GPU collective may wait for a peer before the job ends, e.g. 10m"),
    RELORA_CONFIG_KEY(train, threads,
                      "CPU threads per process; 0: every core this process may use"),
    RELORA_CONFIG_KEY(train, bucket_mb,
                      "size of a gradient all-reduce bucket in MB (multi-rank runs)"),
    RELORA_CONFIG_KEY(train, allreduce_dtype,
                      "gradient all-reduce in fp32, or bf16: half the bytes, gradients rounded to bf16 (multi-rank runs)"),
    RELORA_CONFIG_KEY(train, time_limit,
                      "stop, checkpoint and exit 0 this long after relora train started, e.g. 3h50m; empty: no limit"),

    RELORA_CONFIG_KEY(data, train, "glob of training token shards, e.g. data/c4/train_*.bin"),
    RELORA_CONFIG_KEY(data, val, "glob of validation token shards; empty: no evaluation"),
    RELORA_CONFIG_KEY(data, eval_every, "steps between evaluations (and one at the end); 0: only at the end"),
    RELORA_CONFIG_KEY(data, eval_batches, "validation batches per evaluation"),

    RELORA_CONFIG_KEY(checkpoint, dir, "run directory: resolved config.yaml, metrics.jsonl, step_*.h5 checkpoints, latest"),
    RELORA_CONFIG_KEY(checkpoint, every, "steps between checkpoints; 0: only at the end (and on SIGUSR1/SIGTERM)"),
    RELORA_CONFIG_KEY(checkpoint, keep, "newest checkpoints kept; older ones are deleted"),
    RELORA_CONFIG_KEY(checkpoint, every_minutes, "minutes between checkpoints; 0: none by time"),
    RELORA_CONFIG_KEY(checkpoint, read,
                      "resume: shared (every rank reads the file) or broadcast (rank 0 reads)"),

    RELORA_CONFIG_KEY(log, every, "steps between metrics lines"),
};

#undef RELORA_CONFIG_KEY

size_t edit_distance(const std::string& a, const std::string& b) {
  // d[i][j]: edits turning a[0,i) into b[0,j); insert, delete, substitute, swap neighbours.
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t substitute = d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, substitute});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// The candidate nearest to `name`, or "" when even the nearest needs too many edits to be
// a plausible typo (more than a third of the name, or more than one for short names).
std::string closest(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(1, name.size() / 3) + 1;
  for (const std::string& candidate : candidates) {
    const size_t distance = edit_distance(name, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  return best;
}

std::string join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

std::vector<std::string> full_key_names() {
  std::vector<std::string> names;
  for (const ConfigKey& key : kKeys) names.push_back(key.full_name());
  return names;
}

// A key of the same name in another section ("optimizer.warmup_steps" -> schedule's).
std::string same_name_elsewhere(const std::string& name) {
  for (const ConfigKey& key : kKeys) {
    if (name == key.name) return key.full_name();
  }
  return "";
}

}  // namespace

const std::vector<ConfigKey>& config_keys() { return kKeys; }

const std::vector<std::string>& config_sections() {
  static const std::vector<std::string> sections = [] {
    std::vector<std::string> names;
    for (const ConfigKey& key : kKeys) {
      if (names.empty() || names.back() != key.section) names.push_back(key.section);
    }
    return names;
  }();
  return sections;
}

const ConfigKey* find_config_key(const std::string& full_name) {
  for (const ConfigKey& key : kKeys) {
    if (key.full_name() == full_name) return &key;
  }
  return nullptr;
}

bool is_config_section(const std::string& name) {
  const std::vector<std::string>& sections = config_sections();
  return std::find(sections.begin(), sections.end(), name) != sections.end();
}

std::string unknown_key_message(const std::string& full_name) {
  const std::string head = "unknown key '" + full_name + "'";
  const size_t dot = full_name.find('.');
  const std::string section = full_name.substr(0, dot);
  const std::string name = dot == std::string::npos ? full_name : full_name.substr(dot + 1);

  std::string suggestion = same_name_elsewhere(name);
  if (suggestion.empty()) suggestion = closest(full_name, full_key_names());
  if (!suggestion.empty()) return head + " (did you mean '" + suggestion + "'?)";
  if (!is_config_section(section)) {
    return head + " (keys are section.key; sections: " + join(config_sections(), ", ") + ")";
  }
  std::vector<std::string> section_keys;
  for (const ConfigKey& key : kKeys) {
    if (section == key.section) section_keys.push_back(key.name);
  }
  return head + " (keys in " + section + ": " + join(section_keys, ", ") + ")";
}

std::string unknown_section_message(const std::string& name) {
  const std::string head = "unknown section '" + name + "'";
  std::string suggestion = same_name_elsewhere(name);
  if (suggestion.empty()) suggestion = closest(name, config_sections());
  if (!suggestion.empty()) return head + " (did you mean '" + suggestion + "'?)";
  return head + " (sections: " + join(config_sections(), ", ") + ")";
}

}  // namespace relora::config_detail
