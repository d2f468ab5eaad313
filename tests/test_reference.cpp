// The C++ model, AdamW and merge-and-restart against the PyTorch reference
// (tests/reference/llama_ref.py, computed in float64), through the fixtures it wrote in
// tests/reference/fixtures/ (regenerate with `tests/reference/llama_ref.py --fixtures`).
// One timeline on a small model (V=37, C=16, L=2, H=2, F=24, T=8, B=2, rank 4, every
// projection but k_proj adapted, embeddings: lora), starting from the fixture's weights:
//   full-rank: logits, loss, every gradient, grad norm, one clipped AdamW update;
//   ReLoRA phase with the fixture's adapters (B != 0): logits, loss, adapter and norm
//   gradients, two AdamW updates (the first clipped, weight decay 0.1), Adam moments;
//   merge-and-restart with the fixture's fresh A (linears) and B (embedding): merged
//   weights, pruned moments, Adam steps kept; one update after the restart.
// Each element must satisfy |cpp - ref| <= kRtol |ref| + kAtol max|ref over its array|.
#include <gtest/gtest.h>

#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "config/config.h"
#include "model/llama.h"
#include "optim/adamw.h"
#include "relora/restart.h"

namespace relora {
namespace {

constexpr double kRtol = 1e-4;
constexpr double kAtol = 1e-5;  // times the largest |ref| of the array

// The fixture files: <stem>.txt (config lines and the index of arrays) and <stem>.bin
// (little-endian float32/int32 arrays at the byte offsets the index gives).
class Fixture {
 public:
  struct Array {
    std::vector<int64_t> shape;
    std::vector<float> values;   // f32 arrays
    std::vector<int32_t> ints;   // i32 arrays
  };

  explicit Fixture(const std::string& stem) {
    std::ifstream index(stem + ".txt");
    std::ifstream blob(stem + ".bin", std::ios::binary);
    if (!index || !blob) throw std::runtime_error("cannot read " + stem + ".{txt,bin}");
    const std::vector<char> bytes((std::istreambuf_iterator<char>(blob)),
                                  std::istreambuf_iterator<char>());
    std::string line;
    while (std::getline(index, line)) {
      std::istringstream fields(line);
      std::string kind, name;
      fields >> kind >> name;
      if (kind == "config") {
        fields >> config_[name];
      } else if (kind == "array") {
        std::string dtype;
        size_t offset = 0;
        fields >> dtype >> offset;
        Array a;
        size_t count = 1;
        for (int64_t dim; fields >> dim;) {
          a.shape.push_back(dim);
          count *= static_cast<size_t>(dim);
        }
        if (offset + 4 * count > bytes.size() || (dtype != "f32" && dtype != "i32"))
          throw std::runtime_error(stem + ".txt: bad array line: " + line);
        if (dtype == "f32") {
          a.values.resize(count);
          std::memcpy(a.values.data(), bytes.data() + offset, 4 * count);
        } else {
          a.ints.resize(count);
          std::memcpy(a.ints.data(), bytes.data() + offset, 4 * count);
        }
        arrays_[name] = std::move(a);
      } else if (!kind.empty() && kind[0] != '#') {
        throw std::runtime_error(stem + ".txt: unknown line: " + line);
      }
    }
  }

  bool has(const std::string& name) const { return arrays_.count(name) > 0; }
  const Array& array(const std::string& name) const {
    auto it = arrays_.find(name);
    if (it == arrays_.end()) throw std::runtime_error("fixture has no array " + name);
    return it->second;
  }
  size_t count_with_prefix(const std::string& prefix) const {
    return std::count_if(arrays_.begin(), arrays_.end(),
                         [&](const auto& kv) { return kv.first.rfind(prefix, 0) == 0; });
  }
  const std::string& text(const std::string& key) const {
    auto it = config_.find(key);
    if (it == config_.end()) throw std::runtime_error("fixture has no config " + key);
    return it->second;
  }
  int integer(const std::string& key) const { return std::stoi(text(key)); }
  float real(const std::string& key) const { return std::stof(text(key)); }

 private:
  std::map<std::string, std::string> config_;
  std::map<std::string, Array> arrays_;
};

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::istringstream in(text);
  for (std::string part; std::getline(in, part, ',');) parts.push_back(part);
  return parts;
}

// Compares values with fixture arrays, failing with the worst element of an array, and
// keeps the worst element of the whole run for the summary line.
class Checker {
 public:
  explicit Checker(const Fixture& fixture) : fixture_(fixture) {}

  void tensor(const std::string& name, const Tensor& actual) {
    const Fixture::Array& ref = fixture_.array(name);
    ASSERT_EQ(actual.shape(), ref.shape) << name;
    values(name, actual.data(), ref.values);
  }

  void scalar(const std::string& name, double actual) {
    const float as_float = static_cast<float>(actual);
    values(name, &as_float, fixture_.array(name).values);
  }

  // The zero pattern of a pruned moment must match exactly: the same elements pruned.
  void same_zeros(const std::string& name, const Tensor& actual) {
    const std::vector<float>& ref = fixture_.array(name).values;
    ASSERT_EQ(static_cast<size_t>(actual.numel()), ref.size()) << name;
    int64_t differ = 0;
    for (size_t i = 0; i < ref.size(); ++i)
      differ += (actual.data()[i] == 0.0f) != (ref[i] == 0.0f);
    EXPECT_EQ(differ, 0) << name << ": elements zeroed in one but not the other";
  }

  void print_summary() const {
    std::printf("reference: %d arrays compared, worst error %.3f of the tolerance at %s\n",
                arrays_compared_, worst_ratio_, worst_name_.c_str());
  }

 private:
  void values(const std::string& name, const float* actual, const std::vector<float>& ref) {
    ASSERT_FALSE(ref.empty()) << name << " is not a float array";
    double scale = 0.0;
    for (float r : ref) scale = std::max(scale, std::fabs(static_cast<double>(r)));
    double worst = -1.0, worst_allowed = 0.0;
    size_t worst_index = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double diff = std::fabs(static_cast<double>(actual[i]) - ref[i]);
      const double allowed = kRtol * std::fabs(static_cast<double>(ref[i])) + kAtol * scale;
      const double ratio = allowed > 0.0 ? diff / allowed : (diff == 0.0 ? 0.0 : INFINITY);
      if (!(ratio <= worst)) {  // also takes NaN
        worst = ratio;
        worst_allowed = allowed;
        worst_index = i;
      }
    }
    ++arrays_compared_;
    if (!(worst <= worst_ratio_)) {
      worst_ratio_ = worst;
      worst_name_ = name + "[" + std::to_string(worst_index) + "]";
    }
    EXPECT_LE(worst, 1.0) << name << "[" << worst_index << "]: C++ " << actual[worst_index]
                          << " vs PyTorch " << ref[worst_index] << ", |diff| "
                          << std::fabs(actual[worst_index] - ref[worst_index]) << " > allowed "
                          << worst_allowed;
  }

  const Fixture& fixture_;
  int arrays_compared_ = 0;
  double worst_ratio_ = 0.0;
  std::string worst_name_ = "-";
};

void load(Param& p, const Fixture::Array& source) {
  ASSERT_EQ(p.value.shape(), source.shape) << p.name;
  std::copy(source.values.begin(), source.values.end(), p.value.data());
}

TEST(Reference, MatchesPyTorchThroughAReloraTimeline) {
  const Fixture fx(testing::source_dir() + "/tests/reference/fixtures/llama_small");
  ModelConfig mc;
  mc.vocab_size = fx.integer("vocab_size");
  mc.hidden_size = fx.integer("hidden_size");
  mc.num_layers = fx.integer("num_layers");
  mc.num_heads = fx.integer("num_heads");
  mc.intermediate_size = fx.integer("intermediate_size");
  mc.seq_len = fx.integer("seq_len");
  mc.rms_norm_eps = fx.real("rms_norm_eps");
  mc.rope_theta = fx.real("rope_theta");
  ReloraConfig rc;
  rc.rank = fx.integer("rank");
  rc.alpha = fx.real("alpha");
  rc.embeddings = fx.text("embeddings");
  rc.targets = split_commas(fx.text("targets"));
  rc.optimizer_prune = fx.real("optimizer_prune");
  OptimizerConfig oc;
  oc.beta1 = fx.real("beta1");
  oc.beta2 = fx.real("beta2");
  oc.eps = fx.real("eps");
  oc.weight_decay = fx.real("weight_decay");
  oc.grad_clip = fx.real("grad_clip");
  const float lr = fx.real("lr");
  const int B = fx.integer("batch"), N = B * mc.seq_len;
  const int32_t* inputs = fx.array("inputs").ints.data();
  const int32_t* targets = fx.array("targets").ints.data();
  ASSERT_EQ(fx.array("inputs").ints.size(), static_cast<size_t>(N));

  auto ops = make_cpu_ops();
  Llama model(mc, rc, *ops, B);
  for (Param* p : model.params()) load(*p, fx.array("init/" + p->name));
  AdamW optimizer(oc, *ops);
  Checker check(fx);

  // Logits and loss of a forward pass, compared under stage.
  auto compare_forward = [&](const std::string& stage) {
    const double loss = model.forward(inputs, targets, B, false, 0.0f) / N;
    check.scalar(stage + "/loss", loss);
    const Fixture::Array& ref = fx.array(stage + "/logits");
    Tensor logits = Tensor::zeros(ref.shape);
    std::copy(model.logits().data(), model.logits().data() + logits.numel(), logits.data());
    check.tensor(stage + "/logits", logits);
  };
  // One update as the trainer does it: gradients of the mean loss, global norm, clipping,
  // AdamW. Compares the loss and the norm, and the gradients where the fixture has them.
  auto update = [&](const std::string& stage) {
    const std::vector<Param*> trainable = model.trainable();
    for (Param* p : trainable) p->grad.fill(0.0f);
    const double loss = model.forward(inputs, targets, B, true, 1.0f / N) / N;
    model.backward(B);
    check.scalar(stage + "/loss", loss);
    const std::string grads = stage + "/grad/";
    if (fx.count_with_prefix(grads) > 0) {
      EXPECT_EQ(fx.count_with_prefix(grads), trainable.size()) << "trainable tensors of " << stage;
      for (Param* p : trainable) check.tensor(grads + p->name, p->grad);
    }
    const double norm = global_grad_norm(*ops, testing::gradients_of(trainable));
    check.scalar(stage + "/grad_norm", norm);
    clip_gradients(*ops, testing::gradients_of(trainable), norm, oc.grad_clip);
    optimizer.step(trainable, lr);
    return trainable;
  };

  // full-rank phase
  compare_forward("full");
  update("full");
  for (Param* p : model.params()) check.tensor("full/after_step/" + p->name, p->value);

  // ReLoRA phase with the fixture's adapters (the C++ draws its own: overwritten)
  start_adapters(model, optimizer, 1, 1);
  for (Param* p : model.adapter_params()) load(*p, fx.array("relora/init/" + p->name));
  compare_forward("relora");
  update("relora");
  const std::vector<Param*> trainable = update("relora/step2");
  for (Param* p : trainable) {
    const AdamState* s = optimizer.state(p->name);
    ASSERT_NE(s, nullptr) << p->name;
    check.tensor("relora/after_steps/" + p->name, p->value);
    check.tensor("relora/exp_avg/" + p->name, s->exp_avg);
    check.tensor("relora/exp_avg_sq/" + p->name, s->exp_avg_sq);
  }

  // merge-and-restart; the fixture supplies the drawn halves of the fresh adapters
  merge_and_restart(model, optimizer, rc, 1, 3);
  for (Param* p : model.adapter_params()) {
    if (fx.has("restart/fresh/" + p->name)) {
      load(*p, fx.array("restart/fresh/" + p->name));
    } else {
      const float* v = p->value.data();
      EXPECT_TRUE(std::all_of(v, v + p->value.numel(), [](float x) { return x == 0.0f; }))
          << p->name << " is not re-initialised to zero";
    }
    const AdamState* s = optimizer.state(p->name);
    ASSERT_NE(s, nullptr) << p->name;
    for (const char* moment : {"exp_avg", "exp_avg_sq"}) {
      const std::string name = std::string("restart/") + moment + "/" + p->name;
      const Tensor& actual = std::string(moment) == "exp_avg" ? s->exp_avg : s->exp_avg_sq;
      check.same_zeros(name, actual);
      check.tensor(name, actual);
    }
    EXPECT_EQ(s->step, fx.array("restart/adam_step/" + p->name).ints.at(0)) << p->name;
  }
  // merged weights; a frozen weight without adapters (k_proj) keeps its full-rank value
  for (Param* p : model.params()) {
    if (p->role == Role::adapter || p->is_norm) continue;
    const std::string merged = "restart/weight/" + p->name;
    check.tensor(fx.has(merged) ? merged : "full/after_step/" + p->name, p->value);
  }
  for (Param* p : update("restart")) check.tensor("restart/after_step/" + p->name, p->value);

  check.print_summary();
}

}  // namespace
}  // namespace relora
