// Comparing a checkpoint's config with the config of the run resuming from it: the keys that
// must match (they fix tensor shapes and which adapters exist) and every key that changed.
#include <algorithm>

#include "checkpoint/checkpoint.h"
#include "config/field_values.h"
#include "config/key_table.h"
#include "core/errors.h"

namespace relora {
namespace {

using config_detail::ConfigKey;

// The keys a resumed run must share with its checkpoint.
const char* const kStructuralKeys[] = {
    "model.vocab_size", "model.hidden_size", "model.num_layers",   "model.num_heads",
    "model.intermediate_size", "relora.rank", "relora.targets", "relora.embeddings",
};

// relora.targets is a set: [q_proj, v_proj] and [v_proj, q_proj] adapt the same modules.
bool same_value(const ConfigKey& key, const Config& a, const Config& b) {
  if (key.full_name() == "relora.targets") {
    std::vector<std::string> x = a.relora.targets, y = b.relora.targets;
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    return x == y;
  }
  return config_detail::field_yaml(key, a) == config_detail::field_yaml(key, b);
}

// "key: checkpoint A, config B" for each of `names` whose value differs.
template <size_t N>
std::vector<std::string> differences(const char* const (&names)[N], const Config& checkpoint_cfg,
                                     const Config& now) {
  std::vector<std::string> lines;
  for (const char* name : names) {
    const ConfigKey* key = config_detail::find_config_key(name);
    RELORA_CHECK(key != nullptr, name);
    if (!same_value(*key, checkpoint_cfg, now)) {
      lines.push_back(std::string(name) + ": checkpoint " + config_detail::field_yaml(*key, checkpoint_cfg) +
                      ", config " + config_detail::field_yaml(*key, now));
    }
  }
  return lines;
}

}  // namespace

std::vector<std::string> incompatible_keys(const Config& checkpoint_cfg, const Config& now) {
  return differences(kStructuralKeys, checkpoint_cfg, now);
}

std::vector<std::string> data_order_changes(const Config& checkpoint_cfg, const Config& now) {
  const char* const keys[] = {"train.global_batch", "model.seq_len", "train.seed"};
  return differences(keys, checkpoint_cfg, now);
}

std::vector<std::string> changed_keys(const Config& checkpoint_cfg, const Config& now) {
  std::vector<std::string> lines;
  for (const ConfigKey& key : config_detail::config_keys()) {
    if (!same_value(key, checkpoint_cfg, now)) {
      lines.push_back(key.full_name() + " " + config_detail::field_yaml(key, checkpoint_cfg) +
                      " -> " + config_detail::field_yaml(key, now));
    }
  }
  return lines;
}

}  // namespace relora
