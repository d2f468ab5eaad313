// Config: YAML loading, --set overrides, validation messages, the resolved-YAML round trip,
// --help text, and the shipped configs/*.yaml.
#include <gtest/gtest.h>

#include "test_util.h"
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>

#include "config/config.h"
#include "core/errors.h"

namespace relora {
namespace {

namespace fs = std::filesystem;

// The message of the InputError that `action` must throw.
std::string input_error(const std::function<void()>& action) {
  try {
    action();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return "";
}

// Every part must be in the message, and the message must be one line.
void expect_message(const std::string& message, const std::vector<std::string>& parts) {
  for (const std::string& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos)
        << "'" << part << "' missing from: " << message;
  }
  EXPECT_EQ(message.find('\n'), std::string::npos) << "not one line: " << message;
}

void expect_same_config(const Config& a, const Config& b) {
  EXPECT_EQ(a.model.vocab_size, b.model.vocab_size);
  EXPECT_EQ(a.model.hidden_size, b.model.hidden_size);
  EXPECT_EQ(a.model.num_layers, b.model.num_layers);
  EXPECT_EQ(a.model.num_heads, b.model.num_heads);
  EXPECT_EQ(a.model.intermediate_size, b.model.intermediate_size);
  EXPECT_EQ(a.model.seq_len, b.model.seq_len);
  EXPECT_EQ(a.model.rms_norm_eps, b.model.rms_norm_eps);
  EXPECT_EQ(a.model.rope_theta, b.model.rope_theta);
  EXPECT_EQ(a.model.init_std, b.model.init_std);
  EXPECT_EQ(a.relora.rank, b.relora.rank);
  EXPECT_EQ(a.relora.alpha, b.relora.alpha);
  EXPECT_EQ(a.relora.targets, b.relora.targets);
  EXPECT_EQ(a.relora.embeddings, b.relora.embeddings);
  EXPECT_EQ(a.relora.warm_start_steps, b.relora.warm_start_steps);
  EXPECT_EQ(a.relora.reset_every, b.relora.reset_every);
  EXPECT_EQ(a.relora.optimizer_prune, b.relora.optimizer_prune);
  EXPECT_EQ(a.relora.restart_warmup_steps, b.relora.restart_warmup_steps);
  EXPECT_EQ(a.relora.master_on_host, b.relora.master_on_host);
  EXPECT_EQ(a.optimizer.lr, b.optimizer.lr);
  EXPECT_EQ(a.optimizer.beta1, b.optimizer.beta1);
  EXPECT_EQ(a.optimizer.beta2, b.optimizer.beta2);
  EXPECT_EQ(a.optimizer.eps, b.optimizer.eps);
  EXPECT_EQ(a.optimizer.weight_decay, b.optimizer.weight_decay);
  EXPECT_EQ(a.optimizer.grad_clip, b.optimizer.grad_clip);
  EXPECT_EQ(a.schedule.warmup_steps, b.schedule.warmup_steps);
  EXPECT_EQ(a.schedule.min_lr_ratio, b.schedule.min_lr_ratio);
  EXPECT_EQ(a.train.steps, b.train.steps);
  EXPECT_EQ(a.train.global_batch, b.train.global_batch);
  EXPECT_EQ(a.train.micro_batch, b.train.micro_batch);
  EXPECT_EQ(a.train.seed, b.train.seed);
  EXPECT_EQ(a.train.device, b.train.device);
  EXPECT_EQ(a.train.devices, b.train.devices);
  EXPECT_EQ(a.train.recompute, b.train.recompute);
  EXPECT_EQ(a.train.activation_dtype, b.train.activation_dtype);
  EXPECT_EQ(a.train.matmul, b.train.matmul);
  EXPECT_EQ(a.train.allreduce_dtype, b.train.allreduce_dtype);
  EXPECT_EQ(a.train.comm_timeout, b.train.comm_timeout);
  EXPECT_EQ(a.train.threads, b.train.threads);
  EXPECT_EQ(a.data.train, b.data.train);
  EXPECT_EQ(a.data.val, b.data.val);
  EXPECT_EQ(a.data.eval_every, b.data.eval_every);
  EXPECT_EQ(a.data.eval_batches, b.data.eval_batches);
  EXPECT_EQ(a.checkpoint.dir, b.checkpoint.dir);
  EXPECT_EQ(a.checkpoint.every, b.checkpoint.every);
  EXPECT_EQ(a.checkpoint.keep, b.checkpoint.keep);
  EXPECT_EQ(a.log.every, b.log.every);
}

// Every field away from its default, floats chosen to need all nine significant digits.
Config unusual_config() {
  Config c;
  c.model.vocab_size = 1000;
  c.model.hidden_size = 96;
  c.model.num_layers = 3;
  c.model.num_heads = 6;
  c.model.intermediate_size = 200;
  c.model.seq_len = 64;
  c.model.rms_norm_eps = 1.0f / 3.0f;
  c.model.rope_theta = 500000.5f;
  c.model.init_std = 0.1f;
  c.relora.rank = 7;
  c.relora.alpha = 0.3f;
  c.relora.targets = {"v_proj", "q_proj"};
  c.relora.embeddings = "full";
  c.relora.warm_start_steps = 11;
  c.relora.reset_every = 13;
  c.relora.optimizer_prune = 0.123456789f;
  c.relora.restart_warmup_steps = 3;
  c.optimizer.lr = 2.5e-4f;
  c.optimizer.beta1 = 0.85f;
  c.optimizer.beta2 = 0.95f;
  c.optimizer.eps = std::numeric_limits<float>::min();
  c.optimizer.weight_decay = 0.01f;
  c.optimizer.grad_clip = 0.7f;
  c.schedule.warmup_steps = 17;
  c.schedule.min_lr_ratio = 0.05f;
  c.train.steps = 123;
  c.train.global_batch = 12;
  c.train.micro_batch = 4;
  c.train.seed = std::numeric_limits<uint64_t>::max() - 1;
  c.train.device = "cuda";
  c.train.devices = 4;
  c.train.recompute = true;
  c.train.activation_dtype = "bf16";
  c.train.matmul = "fp32";
  c.train.allreduce_dtype = "bf16";
  c.train.comm_timeout = "90s";
  c.train.threads = 3;
  c.data.train = "*.bin";
  c.data.val = "val data/#1: \"x\"\\y\t~";
  c.data.eval_every = 0;
  c.data.eval_batches = 2;
  c.checkpoint.dir = "null";
  c.checkpoint.every = 0;
  c.checkpoint.keep = 1;
  c.log.every = 7;
  return c;
}

// A fresh directory per test for the YAML files it writes.
class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ =
        fs::temp_directory_path() / ("relora_test_config_" + std::to_string(getpid()) + "_" + test);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) const {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  fs::path dir_;
};

// ---- defaults and files ------------------------------------------------------------------

TEST(Config, DefaultsAreValid) {
  EXPECT_NO_THROW(validate_config(Config{}, "config"));
  expect_same_config(config_from_overrides({}), Config{});
}

TEST_F(ConfigFileTest, EmptyFileGivesDefaults) {
  const std::string path = write("empty.yaml", "# nothing set\n");
  const Config cfg = load_config(path);
  expect_same_config(cfg, Config{});
  EXPECT_EQ(cfg.source, path);
}

TEST_F(ConfigFileTest, MissingSectionsAndKeysKeepDefaults) {
  const Config cfg = load_config(write("partial.yaml", "relora:\n  rank: 16\nmodel:\n"));
  EXPECT_EQ(cfg.relora.rank, 16);
  Config expected;
  expected.relora.rank = 16;
  expect_same_config(cfg, expected);
}

TEST_F(ConfigFileTest, MissingFileIsNamed) {
  const std::string path = (dir_ / "absent.yaml").string();
  expect_message(input_error([&] { load_config(path); }), {"config file '" + path + "' not found"});
  expect_message(input_error([&] { load_config(dir_.string()); }), {dir_.string(), "directory"});
}

TEST_F(ConfigFileTest, SyntaxErrorNamesFileAndLine) {
  const std::string path = write("broken.yaml", "relora:\n  rank: 4\n  targets: [q_proj, v_proj\n");
  const std::string message = input_error([&] { load_config(path); });
  expect_message(message, {path + ":", "YAML syntax error"});
  const std::string after_path = message.substr(path.size() + 1);
  EXPECT_TRUE(!after_path.empty() && std::isdigit(static_cast<unsigned char>(after_path[0])))
      << "no line number in: " << message;
}

TEST_F(ConfigFileTest, UnknownKeySuggestsClosestKey) {
  const std::string path = write("typo.yaml", "relora:\n  rank: 4\n  rnak: 8\n");
  expect_message(input_error([&] { load_config(path); }),
                 {path + ":3", "unknown key 'relora.rnak'", "did you mean 'relora.rank'?"});
}

TEST_F(ConfigFileTest, KeyInWrongSectionSuggestsItsSection) {
  const std::string path = write("misplaced.yaml", "optimizer:\n  warmup_steps: 5\n");
  expect_message(
      input_error([&] { load_config(path); }),
      {path, "unknown key 'optimizer.warmup_steps'", "did you mean 'schedule.warmup_steps'?"});
}

TEST_F(ConfigFileTest, UnknownKeyWithoutCloseMatchListsSectionKeys) {
  const std::string path = write("far.yaml", "relora:\n  something_else: 1\n");
  expect_message(input_error([&] { load_config(path); }),
                 {path, "unknown key 'relora.something_else'", "keys in relora: rank, alpha"});
}

TEST_F(ConfigFileTest, UnknownSectionSuggestsClosestSection) {
  const std::string near = write("near.yaml", "relroa:\n  rank: 4\n");
  expect_message(input_error([&] { load_config(near); }),
                 {near + ":1", "unknown section 'relroa'", "did you mean 'relora'?"});
  const std::string far = write("far.yaml", "zzzzzz:\n  rank: 4\n");
  expect_message(input_error([&] { load_config(far); }),
                 {far, "unknown section 'zzzzzz'", "sections: model, relora, optimizer"});
  const std::string key = write("key.yaml", "lr: 0.01\n");
  expect_message(input_error([&] { load_config(key); }),
                 {key + ":1", "unknown section 'lr'", "did you mean 'optimizer.lr'?"});
}

TEST_F(ConfigFileTest, RepeatedKeysAndSectionsAreRejected) {
  const std::string key = write("key.yaml", "relora:\n  rank: 4\n  rank: 8\n");
  expect_message(input_error([&] { load_config(key); }), {key + ":3", "relora.rank", "twice"});
  const std::string section = write("section.yaml", "relora:\n  rank: 4\nrelora:\n  alpha: 8\n");
  expect_message(input_error([&] { load_config(section); }), {section + ":3", "'relora'", "twice"});
}

TEST_F(ConfigFileTest, WrongShapesAreRejected) {
  const std::string list = write("list.yaml", "- model\n- relora\n");
  expect_message(input_error([&] { load_config(list); }), {list, "top level"});
  const std::string scalar = write("scalar.yaml", "relora: 5\n");
  expect_message(input_error([&] { load_config(scalar); }),
                 {scalar, "section 'relora'", "key: value"});
}

TEST_F(ConfigFileTest, WrongTypesNameKeyAndValue) {
  struct Case {
    std::string yaml, key, expected, got;
  };
  const std::vector<Case> cases = {
      {"relora:\n  rank: abc\n", "relora.rank", "expected an integer", "got 'abc'"},
      {"relora:\n  rank: 1.5\n", "relora.rank", "expected an integer", "got '1.5'"},
      {"relora:\n  rank: [1]\n", "relora.rank", "expected an integer", "got a list"},
      {"relora:\n  rank:\n", "relora.rank", "expected an integer", "got an empty value"},
      {"relora:\n  rank: 99999999999\n", "relora.rank", "out of range", "2147483647"},
      {"optimizer:\n  lr: fast\n", "optimizer.lr", "expected a finite number", "got 'fast'"},
      {"optimizer:\n  lr: inf\n", "optimizer.lr", "expected a finite number", "got 'inf'"},
      {"optimizer:\n  lr: 1e99\n", "optimizer.lr", "out of range", "1e99"},
      {"train:\n  seed: -1\n", "train.seed", "expected a non-negative integer", "got '-1'"},
      {"data:\n  train: [a, b]\n", "data.train", "expected a string", "got a list"},
      {"checkpoint:\n  dir: {a: b}\n", "checkpoint.dir", "expected a string", "got a mapping"},
      {"relora:\n  targets: q_proj\n", "relora.targets", "expected a list", "got 'q_proj'"},
      {"relora:\n  targets: [q_proj, [v_proj]]\n", "relora.targets", "expected a list", "a list"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.yaml);
    const std::string path = write("types.yaml", c.yaml);
    expect_message(input_error([&] { load_config(path); }),
                   {path + ":2: " + c.key + ": ", c.expected, c.got});
  }
}

TEST_F(ConfigFileTest, ValidationErrorNamesFile) {
  const std::string path = write("rank.yaml", "model:\n  hidden_size: 256\nrelora:\n  rank: 300\n");
  expect_message(input_error([&] { load_config(path); }),
                 {path + ":4: relora.rank: ", "at most 255"});  // the line that set it
}

// ---- overrides -----------------------------------------------------------------------------

TEST_F(ConfigFileTest, OverridesApplyAfterFileInOrder) {
  const std::string path = write("base.yaml", "relora:\n  rank: 16\n  alpha: 8\n");
  const Config cfg = load_config(path, {"relora.rank=4", "relora.rank=8", "optimizer.lr=1e-4"});
  EXPECT_EQ(cfg.relora.rank, 8);
  EXPECT_EQ(cfg.relora.alpha, 8.0f);
  EXPECT_EQ(cfg.optimizer.lr, 1e-4f);
  expect_message(input_error([&] { load_config(path, {"relora.rank=600"}); }),
                 {"--set relora.rank=600: relora.rank: ", "at most"});  // the override that set it
}

TEST(ConfigOverrides, ValuesAreYaml) {
  const Config cfg =
      config_from_overrides({"relora.targets=[q_proj, v_proj]", "data.train=*.bin",
                             "data.val=", "train.seed=42", "relora.embeddings=full"});
  EXPECT_EQ(cfg.relora.targets, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(cfg.data.train, "*.bin");
  EXPECT_EQ(cfg.data.val, "");
  EXPECT_EQ(cfg.train.seed, 42u);
  EXPECT_EQ(cfg.relora.embeddings, "full");
}

TEST(ConfigOverrides, MalformedOverridesNameThemselves) {
  expect_message(input_error([] { config_from_overrides({"relora.rank"}); }),
                 {"--set relora.rank: ", "section.key=value"});
  expect_message(
      input_error([] { config_from_overrides({"relora.rnak=4"}); }),
      {"--set relora.rnak=4: ", "unknown key 'relora.rnak'", "did you mean 'relora.rank'?"});
  expect_message(input_error([] { config_from_overrides({"rank=4"}); }),
                 {"--set rank=4: ", "unknown key 'rank'", "did you mean 'relora.rank'?"});
  expect_message(input_error([] { config_from_overrides({"relora.rank=abc"}); }),
                 {"--set relora.rank=abc: relora.rank: expected an integer, got 'abc'"});
  expect_message(input_error([] { config_from_overrides({"relora.targets=q_proj"}); }),
                 {"--set relora.targets=q_proj: relora.targets: expected a list"});
}

// ---- validation ----------------------------------------------------------------------------

TEST(ConfigValidation, EachRuleNamesKeyAndAllowedValues) {
  struct Case {
    std::vector<std::string> overrides;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {{"model.vocab_size=0"}, {"model.vocab_size", "at least 1"}},
      {{"model.hidden_size=-4"}, {"model.hidden_size", "at least 1"}},
      {{"model.num_layers=0"}, {"model.num_layers", "at least 1"}},
      {{"model.num_heads=0"}, {"model.num_heads", "at least 1"}},
      {{"model.intermediate_size=0"}, {"model.intermediate_size", "at least 1"}},
      {{"model.seq_len=0"}, {"model.seq_len", "at least 1"}},
      {{"model.num_heads=7"}, {"model.num_heads", "must divide model.hidden_size = 512", "4 or 8"}},
      {{"model.hidden_size=510", "model.num_heads=10"},
       {"model.num_heads", "510 / 10 = 51", "even"}},
      {{"model.rms_norm_eps=0"}, {"model.rms_norm_eps", "greater than 0"}},
      {{"model.rope_theta=-1"}, {"model.rope_theta", "greater than 0"}},
      {{"model.init_std=0"}, {"model.init_std", "greater than 0"}},
      {{"relora.rank=-1"}, {"relora.rank", "at least 0"}},
      {{"relora.rank=512"}, {"relora.rank", "at most 511", "model.hidden_size = 512"}},
      {{"model.vocab_size=100"}, {"relora.rank", "at most 99", "model.vocab_size = 100"}},
      {{"model.intermediate_size=64"},
       {"relora.rank", "at most 63", "model.intermediate_size = 64"}},
      {{"relora.alpha=0"}, {"relora.alpha", "greater than 0"}},
      {{"relora.targets=[]"}, {"relora.targets", "at least one of q_proj"}},
      {{"relora.targets=[q_proj, qkv]"}, {"relora.targets", "unknown target 'qkv'", "down_proj"}},
      {{"relora.targets=[q_proj, q_proj]"}, {"relora.targets", "'q_proj' is listed twice"}},
      {{"relora.embeddings=tied"}, {"relora.embeddings", "lora, frozen, full", "'tied'"}},
      {{"relora.warm_start_steps=-1"}, {"relora.warm_start_steps", "at least 0"}},
      {{"relora.reset_every=-1"}, {"relora.reset_every", "at least 0"}},
      {{"relora.optimizer_prune=1"}, {"relora.optimizer_prune", "[0, 1)", "got 1"}},
      {{"relora.restart_warmup_steps=-1"}, {"relora.restart_warmup_steps", "at least 0"}},
      {{"optimizer.lr=0"}, {"optimizer.lr", "greater than 0"}},
      {{"optimizer.beta1=1"}, {"optimizer.beta1", "[0, 1)"}},
      {{"optimizer.beta2=-0.1"}, {"optimizer.beta2", "[0, 1)", "got -0.1"}},
      {{"optimizer.eps=0"}, {"optimizer.eps", "greater than 0"}},
      {{"optimizer.weight_decay=-0.5"}, {"optimizer.weight_decay", "at least 0"}},
      {{"optimizer.grad_clip=-1"}, {"optimizer.grad_clip", "at least 0"}},
      {{"schedule.warmup_steps=-1"}, {"schedule.warmup_steps", "at least 0"}},
      {{"schedule.min_lr_ratio=1.5"}, {"schedule.min_lr_ratio", "[0, 1]"}},
      {{"train.steps=0"}, {"train.steps", "at least 1"}},
      {{"train.global_batch=0"}, {"train.global_batch", "at least 1"}},
      {{"train.micro_batch=0"}, {"train.micro_batch", "at least 1"}},
      {{"train.global_batch=100"},
       {"train.micro_batch", "must divide train.global_batch = 100", "micro_batch 5 or 10",
        "global_batch 96 or 104"}},
      {{"train.global_batch=4"}, {"train.micro_batch", "micro_batch 4", "global_batch 8"}},
      {{"train.device=gpu"}, {"train.device", "auto, cpu or cuda", "'gpu'"}},
      {{"train.devices=-1"}, {"train.devices", "at least 0"}},
      {{"train.matmul=fp16"}, {"train.matmul", "bf16_copy, bf16, tf32 or fp32", "'fp16'"}},
      {{"train.allreduce_dtype=fp16"}, {"train.allreduce_dtype", "fp32 or bf16", "'fp16'"}},
      {{"train.activation_dtype=half"}, {"train.activation_dtype", "fp32 or bf16", "'half'"}},
      {{"train.matmul=fp32", "relora.master_on_host=true"}, {"relora.master_on_host", "bf16", "train.matmul: fp32"}},
      {{"train.matmul=tf32", "relora.master_on_host=true"}, {"relora.master_on_host", "bf16", "train.matmul: tf32"}},
      {{"train.threads=-1"}, {"train.threads", "at least 0"}},
      {{"data.eval_every=-1"}, {"data.eval_every", "at least 0"}},
      {{"data.eval_batches=0"}, {"data.eval_batches", "at least 1"}},
      {{"checkpoint.dir="}, {"checkpoint.dir", "must not be empty"}},
      {{"checkpoint.every=-1"}, {"checkpoint.every", "at least 0"}},
      {{"checkpoint.keep=0"}, {"checkpoint.keep", "at least 1"}},
      {{"log.every=0"}, {"log.every", "at least 1"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.overrides.back());
    const std::string message = input_error([&] { config_from_overrides(c.overrides); });
    expect_message(message, c.parts);
    // it starts with the override that set the key named, or "--set" for one left at its default
    const std::string key = c.parts.front();
    std::string origin = "--set: ";
    for (const std::string& o : c.overrides)
      if (o.rfind(key + "=", 0) == 0) origin = "--set " + o + ": ";
    EXPECT_EQ(message.rfind(origin + key + ": ", 0), 0u) << message;
  }
}

// eval and bench run one micro-batch at a time: any train.micro_batch, whatever
// train.global_batch says (training alone refuses one that does not divide it); every other
// check still applies.
TEST(ConfigValidation, MeasuringLeavesOutTheGlobalBatch) {
  const std::string yaml = "train:\n  global_batch: 8\n  micro_batch: 7\n";
  const Config cfg = config_from_yaml_text(yaml, "run.yaml", {}, ConfigUse::measuring);
  EXPECT_EQ(cfg.train.micro_batch, 7);
  expect_message(input_error([&] { config_from_yaml_text(yaml, "run.yaml"); }),
                 {"run.yaml:3: train.micro_batch: must divide train.global_batch = 8"});
  expect_message(input_error([&] { config_from_yaml_text(yaml, "run.yaml", {"train.micro_batch=0"},
                                                          ConfigUse::measuring); }),
                 {"train.micro_batch", "at least 1"});
}

// A bad value in a file is reported at its line; an override that set it, by the override.
TEST(ConfigValidation, MessagesNameTheLineOrOverrideThatSetTheKey) {
  const std::string yaml = "train:\n  steps: 10\n  matmul: fp16\n";
  std::string message = input_error([&] { config_from_yaml_text(yaml, "run.yaml"); });
  EXPECT_EQ(message.rfind("run.yaml:3: train.matmul: must be", 0), 0u) << message;
  message = input_error([&] { config_from_yaml_text(yaml, "run.yaml", {"train.matmul=half"}); });
  EXPECT_EQ(message.rfind("--set train.matmul=half: train.matmul: must be", 0), 0u) << message;
  // about a key no one set (micro_batch, against the global batch set): the file and overrides
  message = input_error([&] { config_from_yaml_text("train:\n  steps: 10\n", "run.yaml", {"train.global_batch=100"}); });
  EXPECT_EQ(message.rfind("run.yaml with --set overrides: train.micro_batch: ", 0), 0u) << message;
}

TEST(ConfigValidation, MessagesStartWithWhere) {
  Config cfg;
  cfg.optimizer.lr = std::numeric_limits<float>::quiet_NaN();
  const std::string message = input_error([&] { validate_config(cfg, "run.yaml"); });
  EXPECT_EQ(message.rfind("run.yaml: optimizer.lr: ", 0), 0u) << message;
}

TEST(ConfigValidation, ZeroTurnsActivitiesOff) {
  EXPECT_NO_THROW(
      config_from_overrides({"relora.rank=0", "relora.reset_every=0", "relora.warm_start_steps=0",
                             "relora.restart_warmup_steps=0", "optimizer.grad_clip=0",
                             "data.eval_every=0", "checkpoint.every=0", "train.threads=0"}));
}

TEST(ConfigValidation, RankLimitFollowsAdaptedMatrices) {
  // Attention-only adapters with frozen embeddings: only hidden_size bounds the rank.
  EXPECT_NO_THROW(config_from_overrides({"model.intermediate_size=64", "model.vocab_size=100",
                                         "relora.targets=[q_proj, v_proj]",
                                         "relora.embeddings=frozen", "relora.rank=300"}));
  EXPECT_NO_THROW(config_from_overrides({"train.device=auto"}));
}

// ---- resolved YAML and help ----------------------------------------------------------------

TEST_F(ConfigFileTest, ResolvedYamlRoundTripsExactly) {
  const Config original = unusual_config();
  ASSERT_NO_THROW(validate_config(original, "unusual"));
  const std::string yaml = config_to_yaml(original);
  const Config reloaded = load_config(write("resolved.yaml", yaml));
  expect_same_config(reloaded, original);
  const auto body = [](const std::string& text) { return text.substr(text.find('\n')); };
  EXPECT_EQ(body(config_to_yaml(reloaded)), body(yaml));
}

TEST_F(ConfigFileTest, FloatsRoundTripBitExactly) {
  // Learning rates spread over the whole positive float range, subnormals included.
  Config cfg;
  for (uint32_t bits = 1; bits < 0x7f800000u; bits += 0x00a3d70bu) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    cfg.optimizer.lr = value;
    SCOPED_TRACE(bits);
    EXPECT_EQ(load_config(write("lr.yaml", config_to_yaml(cfg))).optimizer.lr, value);
  }
}

TEST(ConfigYaml, ListsEveryKeyWithItsDoc) {
  const std::string yaml = config_to_yaml(Config{});
  const std::string help = config_keys_help();
  const YAML::Node root = YAML::Load(yaml);
  int keys = 0;
  for (const auto& section : root) {
    for (const auto& key : section.second) {
      const std::string name = section.first.Scalar() + "." + key.first.Scalar();
      EXPECT_NE(help.find("  " + name + " "), std::string::npos) << name << " missing from help";
      ++keys;
    }
  }
  EXPECT_EQ(keys, 50);
  EXPECT_NE(yaml.find("rank: 128"), std::string::npos);
  EXPECT_NE(yaml.find("# adapter rank r; 0: no adapters"), std::string::npos);
}

TEST(ConfigHelp, DefaultsAndDocsAreAligned) {
  const std::string help = config_keys_help();
  std::vector<std::string> lines;
  for (size_t start = 0, end; start < help.size(); start = end + 1) {
    end = help.find('\n', start);
    lines.push_back(help.substr(start, end - start));
  }
  const auto column_of = [&](const std::string& text) {
    for (const std::string& line : lines) {
      const size_t at = line.find(text);
      if (at != std::string::npos) return at;
    }
    return std::string::npos;
  };
  EXPECT_NE(help.find("  relora.rank "), std::string::npos);
  EXPECT_EQ(column_of("128"), column_of("0.001"));  // relora.rank and optimizer.lr defaults
  EXPECT_EQ(column_of("adapter rank r"), column_of("peak learning rate"));
  EXPECT_EQ(column_of("adapter rank r"), column_of("linear layers given adapters"));
  EXPECT_EQ(column_of("adapter rank r"), column_of("steps between evaluations (and one at the end); 0: only at the end"));
}

// ---- shipped configs -----------------------------------------------------------------------

TEST(ShippedConfigs, AllLoadAndValidate) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(fs::path(testing::source_dir()) / "configs")) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    EXPECT_NO_THROW(load_config(entry.path().string()));
    names.insert(entry.path().filename().string());
  }
  for (const char* expected : {"tiny.yaml", "llama_60m.yaml", "llama_130m.yaml", "llama_250m.yaml",
                               "llama_350m.yaml", "llama_1b.yaml"}) {
    EXPECT_EQ(names.count(expected), 1u) << expected << " missing from configs/";
  }
}

int64_t parameter_count(const ModelConfig& m) {
  const int64_t v = m.vocab_size, d = m.hidden_size, l = m.num_layers, f = m.intermediate_size;
  return v * d * 2 + l * (4 * d * d + 3 * d * f + 2 * d) + d;
}

TEST(ShippedConfigs, TinyHasAboutFiveMillionParameters) {
  const Config cfg = load_config(testing::source_dir() + "/configs/tiny.yaml");
  const int64_t count = parameter_count(cfg.model);
  EXPECT_GE(count, 4'500'000);
  EXPECT_LE(count, 5'500'000);
  EXPECT_EQ(cfg.train.device, "cpu");
  EXPECT_EQ(cfg.data.train, "data/tiny/train_*.bin");
}

TEST(ShippedConfigs, PaperSizesMatchTheReloraPaper) {
  struct Size {
    const char* file;
    int hidden, layers, heads, intermediate;
  };
  for (const Size& s :
       {Size{"llama_60m.yaml", 512, 8, 8, 1376}, Size{"llama_130m.yaml", 768, 12, 12, 2048},
        Size{"llama_250m.yaml", 768, 24, 16, 2560}, Size{"llama_350m.yaml", 1024, 24, 16, 2736},
        Size{"llama_1b.yaml", 2048, 24, 32, 5461}}) {
    SCOPED_TRACE(s.file);
    const Config cfg = load_config(testing::source_dir() + "/configs/" + s.file);
    EXPECT_EQ(cfg.model.hidden_size, s.hidden);
    EXPECT_EQ(cfg.model.num_layers, s.layers);
    EXPECT_EQ(cfg.model.num_heads, s.heads);
    EXPECT_EQ(cfg.model.intermediate_size, s.intermediate);
    EXPECT_EQ(cfg.model.vocab_size, 32000);
    EXPECT_EQ(cfg.model.seq_len, 512);
    EXPECT_EQ(cfg.relora.rank, 128);
    EXPECT_EQ(cfg.checkpoint.dir, "runs/" + fs::path(s.file).stem().string());
  }
}

}  // namespace
}  // namespace relora

namespace relora {
namespace {

TEST(ConfigDuration, ParsesDurationsAndRejectsOthers) {
  EXPECT_EQ(parse_duration("", "x", "train.time_limit"), 0);
  EXPECT_EQ(parse_duration("3h50m", "x", "train.time_limit"), 3 * 3600 + 50 * 60);
  EXPECT_EQ(parse_duration("90m", "x", "train.time_limit"), 5400);
  EXPECT_EQ(parse_duration("45s", "x", "train.time_limit"), 45);
  EXPECT_EQ(parse_duration("2h30m10s", "x", "train.time_limit"), 9010);
  for (const char* bad : {"3", "h", "3x", "10m5h", "5m5m", "-3h", "1h 2m"}) {
    try {
      parse_duration(bad, "run.yaml", "train.comm_timeout");
      ADD_FAILURE() << bad << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("run.yaml: train.comm_timeout"), std::string::npos) << e.what();
    }
  }
}

TEST(ConfigBool, ReadsTrueFalseOnlyAndWritesThemBack) {
  EXPECT_TRUE(config_from_overrides({"train.recompute=true"}).train.recompute);
  EXPECT_FALSE(config_from_overrides({"train.recompute=false"}).train.recompute);
  try {
    config_from_overrides({"train.recompute=yes"});
    ADD_FAILURE() << "yes accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("train.recompute: expected true or false, got 'yes'"),
              std::string::npos)
        << e.what();
  }
  Config cfg = config_from_overrides({"train.recompute=true"});
  EXPECT_NE(config_to_yaml(cfg).find("recompute: true"), std::string::npos);
}

}  // namespace
}  // namespace relora
