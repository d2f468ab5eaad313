// Range and cross-field checks of a Config. Each failure is one line:
// "<where>: <section.key>: <what is wrong and what is allowed>".
#include <algorithm>
#include <cctype>
#include <climits>
#include <set>

#include "config/config.h"
#include "config/field_values.h"
#include "core/errors.h"

namespace relora {
namespace {

using config_detail::float_text;

const std::vector<std::string> kTargets = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                           "gate_proj", "up_proj", "down_proj"};
const std::vector<std::string> kAttentionTargets = {"q_proj", "k_proj", "v_proj", "o_proj"};
const std::vector<std::string> kEmbeddingModes = {"lora", "frozen", "full"};

bool contains(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

std::string join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

// The divisors of n nearest to `near` from below and above: "5 or 10", or one of them.
std::string nearest_divisors(int n, int near) {
  int below = 1;
  for (int d = std::min(near, n); d >= 1; --d) {
    if (n % d == 0) {
      below = d;
      break;
    }
  }
  int above = n;
  for (int d = std::max(near, 1); d <= n; ++d) {
    if (n % d == 0) {
      above = d;
      break;
    }
  }
  if (below == above) return std::to_string(below);
  return std::to_string(below) + " or " + std::to_string(above);
}

class Checker {
 public:
  Checker(const std::string& where, const KeyOrigins& origins) : where_(where), origins_(origins) {}

  // "<where key was set>: key: problem" (the file and line, or the --set), else where_.
  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    const auto origin = origins_.find(key);
    RELORA_INPUT_ERROR((origin != origins_.end() ? origin->second : where_) << ": " << key << ": "
                                                                            << problem);
  }

  void at_least(const char* key, int value, int minimum) const {
    if (value < minimum) {
      fail(key, "must be at least " + std::to_string(minimum) + ", got " + std::to_string(value));
    }
  }

  // Written as !(a < b) so that NaN fails every check.
  void positive(const char* key, float value) const {
    if (!(value > 0.0f)) fail(key, "must be greater than 0, got " + float_text(value));
  }

  void non_negative(const char* key, float value) const {
    if (!(value >= 0.0f)) fail(key, "must be at least 0, got " + float_text(value));
  }

  // [low, high) or, with high_included, [low, high].
  void in_range(const char* key, float value, float low, float high, bool high_included) const {
    const bool ok = value >= low && (high_included ? value <= high : value < high);
    if (!ok) {
      fail(key, "must be in [" + float_text(low) + ", " + float_text(high) +
                    (high_included ? "]" : ")") + ", got " + float_text(value));
    }
  }

 private:
  std::string where_;
  const KeyOrigins& origins_;
};

void check_model(const Checker& check, const ModelConfig& model) {
  check.at_least("model.vocab_size", model.vocab_size, 1);
  check.at_least("model.hidden_size", model.hidden_size, 1);
  check.at_least("model.num_layers", model.num_layers, 1);
  check.at_least("model.num_heads", model.num_heads, 1);
  check.at_least("model.intermediate_size", model.intermediate_size, 1);
  check.at_least("model.seq_len", model.seq_len, 1);
  if (model.hidden_size % model.num_heads != 0) {
    check.fail("model.num_heads",
               "must divide model.hidden_size = " + std::to_string(model.hidden_size) + ", got " +
                   std::to_string(model.num_heads) +
                   "; nearest divisors: " + nearest_divisors(model.hidden_size, model.num_heads));
  }
  const int head_size = model.hidden_size / model.num_heads;
  if (head_size % 2 != 0) {
    check.fail("model.num_heads",
               "gives head size hidden_size / num_heads = " + std::to_string(model.hidden_size) +
                   " / " + std::to_string(model.num_heads) + " = " + std::to_string(head_size) +
                   ", but RoPE needs an even head size; change either");
  }
  check.positive("model.rms_norm_eps", model.rms_norm_eps);
  check.positive("model.rope_theta", model.rope_theta);
  check.positive("model.init_std", model.init_std);
}

void check_targets(const Checker& check, const std::vector<std::string>& targets) {
  if (targets.empty()) {
    check.fail("relora.targets", "must name at least one of " + join(kTargets, ", "));
  }
  std::set<std::string> seen;
  for (const std::string& target : targets) {
    if (!contains(kTargets, target)) {
      check.fail("relora.targets",
                 "unknown target '" + target + "'; allowed: " + join(kTargets, ", "));
    }
    if (!seen.insert(target).second) {
      check.fail("relora.targets", "'" + target + "' is listed twice; list each target once");
    }
  }
}

// The rank must stay below the smaller side of every adapted matrix: hidden x hidden for the
// attention projections, hidden x intermediate for the MLP, vocab x hidden for the embeddings.
void check_rank(const Checker& check, const Config& cfg) {
  const ModelConfig& model = cfg.model;
  const ReloraConfig& relora = cfg.relora;
  if (relora.rank == 0) return;
  int smallest = INT_MAX;
  std::string smallest_key;
  const auto consider = [&](int size, const char* key) {
    if (size < smallest) {
      smallest = size;
      smallest_key = key;
    }
  };
  for (const std::string& target : relora.targets) {
    consider(model.hidden_size, "model.hidden_size");
    if (!contains(kAttentionTargets, target))
      consider(model.intermediate_size, "model.intermediate_size");
  }
  if (relora.embeddings == "lora") {
    consider(model.hidden_size, "model.hidden_size");
    consider(model.vocab_size, "model.vocab_size");
  }
  if (relora.rank >= smallest) {
    check.fail("relora.rank", "must be at most " + std::to_string(smallest - 1) + ", below " +
                                  smallest_key + " = " + std::to_string(smallest) +
                                  " (the smallest side of an adapted matrix), got " +
                                  std::to_string(relora.rank));
  }
}

void check_relora(const Checker& check, const Config& cfg) {
  const ReloraConfig& relora = cfg.relora;
  check.at_least("relora.rank", relora.rank, 0);
  check.positive("relora.alpha", relora.alpha);
  check_targets(check, relora.targets);
  if (!contains(kEmbeddingModes, relora.embeddings)) {
    check.fail("relora.embeddings", "must be one of " + join(kEmbeddingModes, ", ") + ", got '" +
                                        relora.embeddings + "'");
  }
  check_rank(check, cfg);
  check.at_least("relora.warm_start_steps", relora.warm_start_steps, 0);
  check.at_least("relora.reset_every", relora.reset_every, 0);
  check.in_range("relora.optimizer_prune", relora.optimizer_prune, 0.0f, 1.0f, false);
  check.at_least("relora.restart_warmup_steps", relora.restart_warmup_steps, 0);
}

void check_optimizer(const Checker& check, const OptimizerConfig& optimizer,
                     const ScheduleConfig& schedule) {
  check.positive("optimizer.lr", optimizer.lr);
  check.in_range("optimizer.beta1", optimizer.beta1, 0.0f, 1.0f, false);
  check.in_range("optimizer.beta2", optimizer.beta2, 0.0f, 1.0f, false);
  check.positive("optimizer.eps", optimizer.eps);
  check.non_negative("optimizer.weight_decay", optimizer.weight_decay);
  check.non_negative("optimizer.grad_clip", optimizer.grad_clip);
  check.at_least("schedule.warmup_steps", schedule.warmup_steps, 0);
  check.in_range("schedule.min_lr_ratio", schedule.min_lr_ratio, 0.0f, 1.0f, true);
}

void check_train(const Checker& check, const TrainConfig& train, ConfigUse use) {
  check.at_least("train.steps", train.steps, 1);
  check.at_least("train.global_batch", train.global_batch, 1);
  check.at_least("train.micro_batch", train.micro_batch, 1);
  if (use == ConfigUse::training && train.global_batch % train.micro_batch != 0) {
    const int lower_multiple = train.global_batch / train.micro_batch * train.micro_batch;
    const int upper_multiple = lower_multiple + train.micro_batch;
    check.fail("train.micro_batch",
               "must divide train.global_batch = " + std::to_string(train.global_batch) + ", got " +
                   std::to_string(train.micro_batch) + "; use micro_batch " +
                   nearest_divisors(train.global_batch, train.micro_batch) + ", or global_batch " +
                   (lower_multiple > 0 ? std::to_string(lower_multiple) + " or " : "") +
                   std::to_string(upper_multiple));
  }
  if (train.device != "cpu" && train.device != "auto" && train.device != "cuda") {
    check.fail("train.device", "must be auto, cpu or cuda, got '" + train.device + "'");
  }
  check.at_least("train.devices", train.devices, 0);
  if (train.matmul != "bf16_copy" && train.matmul != "bf16" && train.matmul != "tf32" &&
      train.matmul != "fp32") {
    check.fail("train.matmul", "must be bf16_copy, bf16, tf32 or fp32, got '" + train.matmul + "'");
  }
  if (train.activation_dtype != "fp32" && train.activation_dtype != "bf16") {
    check.fail("train.activation_dtype", "must be fp32 or bf16, got '" + train.activation_dtype + "'");
  }
  check.at_least("train.threads", train.threads, 0);
  if (train.allreduce_dtype != "fp32" && train.allreduce_dtype != "bf16") {
    check.fail("train.allreduce_dtype", "must be fp32 or bf16, got '" + train.allreduce_dtype + "'");
  }
  if (!(train.bucket_mb > 0.0f && train.bucket_mb <= 4096.0f)) {
    check.fail("train.bucket_mb", "must be in (0, 4096], got " + float_text(train.bucket_mb));
  }
}

}  // namespace

void validate_config(const Config& cfg, const std::string& where, const KeyOrigins& origins, ConfigUse use) {
  const Checker check(where, origins);
  check_model(check, cfg.model);
  check_relora(check, cfg);
  check_optimizer(check, cfg.optimizer, cfg.schedule);
  check_train(check, cfg.train, use);
  if (cfg.train.matmul != "bf16" && cfg.train.matmul != "bf16_copy" && cfg.relora.master_on_host) {
    check.fail("relora.master_on_host", "keeps the frozen weights in bf16, so their products cannot be " +
                                            cfg.train.matmul + " (train.matmul: " + cfg.train.matmul +
                                            "): set one of them the other way");
  }
  check.at_least("data.eval_every", cfg.data.eval_every, 0);
  check.at_least("data.eval_batches", cfg.data.eval_batches, 1);
  if (cfg.checkpoint.dir.empty()) {
    check.fail("checkpoint.dir",
               "must not be empty; give the directory for this run's checkpoints");
  }
  check.at_least("checkpoint.every", cfg.checkpoint.every, 0);
  check.at_least("checkpoint.keep", cfg.checkpoint.keep, 1);
  check.at_least("log.every", cfg.log.every, 1);
  check.at_least("checkpoint.every_minutes", cfg.checkpoint.every_minutes, 0);
  if (cfg.checkpoint.read != "shared" && cfg.checkpoint.read != "broadcast") {
    check.fail("checkpoint.read", "must be shared or broadcast, got '" + cfg.checkpoint.read + "'");
  }
  parse_duration(cfg.train.time_limit, where, "train.time_limit");
  if (parse_duration(cfg.train.comm_timeout, where, "train.comm_timeout") <= 0)
    check.fail("train.comm_timeout", "must be a positive duration like 10m, got '" + cfg.train.comm_timeout + "'");
}

int64_t comm_timeout_seconds(const Config& cfg) {
  return parse_duration(cfg.train.comm_timeout, cfg.source, "train.comm_timeout");
}

int64_t parse_duration(const std::string& text, const std::string& where, const std::string& key) {
  // A sequence of <number><unit>, units h, m, s, each at most once and in that order.
  int64_t total = 0;
  size_t pos = 0;
  const std::string units = "hms";
  size_t next_unit = 0;
  while (pos < text.size()) {
    size_t digits = pos;
    while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
    const size_t unit = digits < text.size() ? units.find(text[digits], next_unit) : std::string::npos;
    if (digits == pos || digits - pos > 9 || unit == std::string::npos) {
      RELORA_INPUT_ERROR(where << ": " << key << ": expected a duration like 3h50m, 90m or 45s, got '"
                               << text << "'");
    }
    const int64_t value = std::stoll(text.substr(pos, digits - pos));
    total += value * (unit == 0 ? 3600 : unit == 1 ? 60 : 1);
    next_unit = unit + 1;
    pos = digits + 1;
  }
  return total;
}

}  // namespace relora
