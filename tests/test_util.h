// Shared helpers for the tests: a temporary directory that cleans up after itself, the
// configs and batches many tests share, a tensor's relative error, and checks of
// InputError messages.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/errors.h"
#include "core/rng.h"
#include "model/params.h"
#include "train/step.h"

namespace relora::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "relora_test_XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The source tree the tests read configs and fixtures from: $RELORA_SOURCE_DIR when set
// (an unpacked bundle on another machine), else the tree this binary was built from.
inline std::string source_dir() {
  const char* dir = std::getenv("RELORA_SOURCE_DIR");
  return dir != nullptr && *dir != '\0' ? dir : RELORA_SOURCE_DIR;
}

// A model small enough for finite differences: V 13, C 8, 2 layers of 2 heads, F 12, T 5.
inline ModelConfig small_test_model() {
  ModelConfig m;
  m.vocab_size = 13;
  m.hidden_size = 8;
  m.num_layers = 2;
  m.num_heads = 2;
  m.intermediate_size = 12;
  m.seq_len = 5;
  return m;
}

// small_test_model with adapters (rank 3) whose restarts prune half the moments.
inline Config small_training_config() {
  Config cfg;
  cfg.model = small_test_model();
  cfg.relora.rank = 3;
  cfg.relora.alpha = 6.0f;
  cfg.relora.optimizer_prune = 0.5f;
  cfg.train.device = "cpu";  // a Trainer or bench made from it: the CPU, on a machine with a GPU too
  return cfg;
}

// Uniform random tokens for micro-batch m (of micro sequences) of update *step: a new
// batch for every update, the same on every backend.
inline MicroBatchSource random_micro_batches(const ModelConfig& model, int micro, const int64_t* step) {
  return [&model, micro, step](int m, int32_t* inputs, int32_t* targets) {
    const int n = micro * model.seq_len;
    for (int i = 0; i < n; ++i) {
      const uint64_t at = static_cast<uint64_t>((*step * 16 + m) * n + i);
      inputs[i] = static_cast<int32_t>(uniform_at({5, RngPurpose::test, 1, 0}, at) * model.vocab_size);
      targets[i] = static_cast<int32_t>(uniform_at({5, RngPurpose::test, 2, 0}, at) * model.vocab_size);
    }
  };
}

// The gradients of `params` as a list of tensors (sharing their storage), for
// global_grad_norm and clip_gradients.
inline std::vector<Tensor> gradients_of(const std::vector<Param*>& params) {
  std::vector<Tensor> grads;
  for (Param* p : params) grads.push_back(p->grad);
  return grads;
}

// ||got - want|| / ||want|| over a whole tensor (2-norms; ||got - want|| when want is all
// zero), infinite when it is not finite (a NaN in got included).
inline double relative_l2_error(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    diff += d * d;
    norm += static_cast<double>(want[i]) * want[i];
  }
  const double error = norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
  return std::isfinite(error) ? error : std::numeric_limits<double>::infinity();
}

// The message of the InputError that `f` throws ("" and a test failure if it throws none).
inline std::string input_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return "";
}

// `message` is one line holding every part.
inline void expect_contains(const std::string& message, std::initializer_list<std::string> parts) {
  for (const std::string& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
  EXPECT_EQ(message.find('\n'), std::string::npos) << "not one line: " << message;
}

}  // namespace relora::testing
