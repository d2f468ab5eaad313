// Whole-model tests: gradients of every trainable tensor against central finite
// differences (full-rank phase, and ReLoRA phase with B != 0 and embedding adapters), and
// merge-and-restart leaving the model's function unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "config/config.h"
#include "core/rng.h"
#include "model/llama.h"
#include "optim/adamw.h"
#include "relora/restart.h"
#include "test_util.h"

namespace relora {
namespace {

constexpr int kB = 2;

ModelConfig tiny_model() {
  ModelConfig m = testing::small_test_model();
  m.init_std = 0.3f;  // large enough that every path carries gradient
  return m;
}

ReloraConfig tiny_relora(const std::string& embeddings) {
  ReloraConfig r;
  r.rank = 3;
  r.alpha = 6.0f;
  r.embeddings = embeddings;
  return r;
}

struct Batch {
  std::vector<int32_t> inputs, targets;
};

Batch random_batch(const ModelConfig& m, uint64_t seed) {
  Batch b;
  const int n = kB * m.seq_len;
  for (int i = 0; i < n; ++i) {
    b.inputs.push_back(static_cast<int32_t>(uniform_at({seed, RngPurpose::test, 1, 0}, i) * m.vocab_size));
    b.targets.push_back(static_cast<int32_t>(uniform_at({seed, RngPurpose::test, 2, 0}, i) * m.vocab_size));
  }
  return b;
}

// Gives every adapter non-trivial values (B != 0, embedding A != 0).
void randomise_adapters(Llama& model) {
  for (Param* p : model.adapter_params())
    fill_normal(p->value.data(), p->value.numel(), 0.0f, 0.2f, {7, RngPurpose::test, tensor_id(p->name), 0});
}

// Checks d(mean loss)/d(param) of every trainable tensor at up to 5 elements each.
void check_gradients(Llama& model, const Batch& b) {
  const int n = kB * model.config().seq_len;
  for (Param* p : model.trainable()) p->grad.fill(0.0f);
  model.forward(b.inputs.data(), b.targets.data(), kB, true, 1.0f / n);
  model.backward(kB);
  auto loss = [&]() { return model.forward(b.inputs.data(), b.targets.data(), kB, false, 0.0f) / n; };
  int checked = 0;
  for (Param* p : model.trainable()) {
    const int64_t numel = p->value.numel();
    for (int j = 0; j < 5 && j < numel; ++j) {
      const int64_t i = (j * 7919 + 3) % numel;
      float* x = p->value.data() + i;
      const float saved = *x;
      // central difference with Richardson extrapolation: error O(eps^4), not O(eps^2)
      auto central = [&](float eps) {
        *x = saved + eps;
        const double up = loss();
        *x = saved - eps;
        const double down = loss();
        *x = saved;
        return (up - down) / (2.0 * eps);
      };
      const double numeric = (4.0 * central(1e-2f) - central(2e-2f)) / 3.0;
      const double analytic = p->grad.data()[i];
      EXPECT_NEAR(analytic, numeric, 2e-3 * std::fabs(numeric) + 2e-4) << p->name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

TEST(Model, GradientsFullRankPhase) {
  auto ops = make_cpu_ops();
  ModelConfig m = tiny_model();
  Llama model(m, tiny_relora("lora"), *ops, kB);
  model.init_weights(1);
  EXPECT_EQ(model.trainable().size(), model.params().size());
  check_gradients(model, random_batch(m, 3));
}

TEST(Model, GradientsReloraPhaseWithAdapters) {
  for (const char* emb : {"lora", "full", "frozen"}) {
    SCOPED_TRACE(emb);
    auto ops = make_cpu_ops();
    ModelConfig m = tiny_model();
    Llama model(m, tiny_relora(emb), *ops, kB);
    model.init_weights(1);
    model.enter_relora_phase({1, 0});
    randomise_adapters(model);
    for (Param* p : model.params()) {
      const bool is_target = p->name.find("_proj.weight") != std::string::npos;
      if (is_target) {
        EXPECT_FALSE(p->trainable()) << p->name;
      }
      if (p->is_norm) {
        EXPECT_TRUE(p->trainable()) << p->name;
      }
    }
    EXPECT_EQ(model.find("model.embed_tokens.weight")->trainable(), std::string(emb) == "full");
    EXPECT_EQ(model.find("model.embed_tokens/A") != nullptr, std::string(emb) == "lora");
    check_gradients(model, random_batch(m, 5));
  }
}

// The loss and every trainable gradient after two micro-batches of B sequences, accumulated
// by a model that holds up to max_batch (in the ReLoRA phase with random adapters).
struct Accumulated {
  double loss = 0.0;
  std::vector<std::vector<float>> grads;
};
Accumulated accumulate(ActivationStorage storage, bool relora_phase, int max_batch = kB, int B = kB) {
  auto ops = make_cpu_ops();
  const ModelConfig m = tiny_model();
  Llama model(m, tiny_relora("lora"), *ops, max_batch, storage);
  model.init_weights(1);
  if (relora_phase) {
    model.enter_relora_phase({1, 0});
    randomise_adapters(model);
  }
  Accumulated out;
  for (uint64_t seed : {3, 4}) {
    const Batch b = random_batch(m, seed);
    out.loss += model.forward(b.inputs.data(), b.targets.data(), B, true, 1.0f / (B * m.seq_len));
    model.backward(B);
  }
  for (Param* p : model.trainable()) out.grads.emplace_back(p->grad.data(), p->grad.data() + p->grad.numel());
  return out;
}

// Recomputing block activations in backward gives bit-identical gradients (the CPU ops are
// deterministic), in both phases, over two micro-batches of gradient accumulation.
TEST(Model, RecomputeGivesIdenticalGradients) {
  for (bool relora_phase : {false, true}) {
    SCOPED_TRACE(relora_phase ? "relora" : "full");
    const Accumulated kept = accumulate({false, false}, relora_phase);
    const Accumulated recomputed = accumulate({true, false}, relora_phase);
    EXPECT_EQ(kept.loss, recomputed.loss);
    ASSERT_EQ(kept.grads.size(), recomputed.grads.size());
    for (size_t i = 0; i < kept.grads.size(); ++i) EXPECT_EQ(kept.grads[i], recomputed.grads[i]) << "tensor " << i;
  }
}

// bf16 activation storage computes the forward in fp32 as before (the same loss, to the
// bit) and gives backward the activations rounded to bf16: every gradient within bf16's
// relative precision of the fp32 one (as a whole tensor), and not all of them identical.
TEST(Model, Bf16ActivationsRoundOnlyWhatBackwardSees) {
  for (bool relora_phase : {false, true}) {
    const Accumulated fp32 = accumulate({false, false}, relora_phase);
    for (bool recompute : {false, true}) {
      SCOPED_TRACE(std::string(relora_phase ? "relora" : "full") + (recompute ? " recompute" : ""));
      const Accumulated bf16 = accumulate({recompute, true}, relora_phase);
      EXPECT_EQ(bf16.loss, fp32.loss);
      ASSERT_EQ(bf16.grads.size(), fp32.grads.size());
      double worst = 0.0;
      for (size_t i = 0; i < fp32.grads.size(); ++i) {
        const double relative = testing::relative_l2_error(bf16.grads[i], fp32.grads[i]);
        EXPECT_LT(relative, 2e-2) << "tensor " << i;
        worst = std::max(worst, relative);
      }
      EXPECT_GT(worst, 1e-5);  // rounded: bf16 keeps 8 significant bits
      std::printf("worst relative gradient difference %.2e\n", worst);
    }
  }
}

// A micro-batch smaller than the model's largest rounds and widens only its own rows: the
// same bits as a model built for that size.
TEST(Model, Bf16ActivationsOfASmallerMicroBatch) {
  for (bool recompute : {false, true}) {
    SCOPED_TRACE(recompute ? "recompute" : "");
    const Accumulated sized = accumulate({recompute, true}, true, 1, 1);
    const Accumulated larger = accumulate({recompute, true}, true, kB, 1);
    EXPECT_EQ(sized.loss, larger.loss);
    ASSERT_EQ(sized.grads.size(), larger.grads.size());
    for (size_t i = 0; i < sized.grads.size(); ++i) EXPECT_EQ(sized.grads[i], larger.grads[i]) << "tensor " << i;
  }
}

TEST(Model, ParameterNamesAreHuggingFace) {
  auto ops = make_cpu_ops();
  Llama model(tiny_model(), tiny_relora("lora"), *ops, 1);
  for (const char* name :
       {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.o_proj.weight", "model.layers.1.mlp.gate_proj.weight",
        "model.layers.0.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight",
        "model.layers.1.post_attention_layernorm.weight", "model.norm.weight", "lm_head.weight"})
    EXPECT_NE(model.find(name), nullptr) << name;
  EXPECT_EQ(model.find("model.layers.0.mlp.down_proj.weight")->value.shape(),
            (std::vector<int64_t>{8, 12}));
}

TEST(Model, MergeAndRestartKeepsOutputs) {
  auto ops = make_cpu_ops();
  ModelConfig m = tiny_model();
  ReloraConfig r = tiny_relora("lora");
  Llama model(m, r, *ops, kB);
  model.init_weights(1);
  AdamW opt(OptimizerConfig{}, *ops);
  start_adapters(model, opt, 1, 0);
  randomise_adapters(model);
  // one optimizer update so the adapters have Adam moments to prune
  Batch b = random_batch(m, 9);
  const int n = kB * m.seq_len;
  for (Param* p : model.trainable()) p->grad.fill(0.0f);
  model.forward(b.inputs.data(), b.targets.data(), kB, true, 1.0f / n);
  model.backward(kB);
  opt.step(model.trainable(), 1e-3f);

  model.forward(b.inputs.data(), b.targets.data(), kB, false, 0.0f);
  const float* logits = model.logits().data();
  std::vector<float> before(logits, logits + static_cast<size_t>(n) * m.vocab_size);
  const Param* qa = model.find("model.layers.0.self_attn.q_proj/A");
  std::vector<float> old_a(qa->value.data(), qa->value.data() + qa->value.numel());

  merge_and_restart(model, opt, r, 1, 42);

  model.forward(b.inputs.data(), b.targets.data(), kB, false, 0.0f);
  float max_diff = 0.0f;
  for (size_t i = 0; i < before.size(); ++i) max_diff = std::max(max_diff, std::fabs(before[i] - logits[i]));
  EXPECT_LT(max_diff, 1e-4f);
  // fresh A (a new draw), B re-initialised as at creation
  int same = 0;
  for (int64_t i = 0; i < qa->value.numel(); ++i) same += qa->value.data()[i] == old_a[i];
  EXPECT_EQ(same, 0);
  for (Param* p : model.adapter_params()) {
    const bool zero_init = p->name == "model.embed_tokens/A" || p->name.back() == 'B';
    const bool normal_init = p->name == "model.embed_tokens/B";
    double sum_sq = 0.0;
    for (int64_t i = 0; i < p->value.numel(); ++i) sum_sq += p->value.data()[i] * p->value.data()[i];
    if (zero_init && !normal_init) {
      EXPECT_EQ(sum_sq, 0.0) << p->name;
    } else {
      EXPECT_GT(sum_sq, 0.0) << p->name;
    }
    // moments pruned with one mask: the largest 1% (at least... floor) survive
    AdamState* s = opt.state(p->name);
    ASSERT_NE(s, nullptr) << p->name;
    int64_t kept = 0;
    for (int64_t i = 0; i < p->value.numel(); ++i) {
      const bool m_zero = s->exp_avg.data()[i] == 0.0f;
      EXPECT_EQ(m_zero, s->exp_avg_sq.data()[i] == 0.0f) << p->name << "[" << i << "]";
      kept += !m_zero;
    }
    EXPECT_LE(kept, p->value.numel() - static_cast<int64_t>(std::floor(0.99 * p->value.numel())));
    EXPECT_EQ(s->step, 1);
  }
}

}  // namespace
}  // namespace relora

namespace relora {
namespace {

int64_t trainable_elements(const Llama& model) {
  int64_t n = 0;
  for (const Param* p : model.trainable()) n += p->value.numel();
  return n;
}

TEST(Model, TrainableCountsMatchTheRegistry) {
  auto ops = make_cpu_ops();
  for (const char* emb : {"lora", "full", "frozen"}) {
    for (const std::vector<std::string>& targets :
         {std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
          std::vector<std::string>{"v_proj", "down_proj", "up_proj"}}) {
      ReloraConfig r = tiny_relora(emb);
      r.targets = targets;
      Llama model(tiny_model(), r, *ops, 1);
      TrainableCounts counts = count_trainable(tiny_model(), r);
      EXPECT_EQ(counts.full_phase, trainable_elements(model)) << emb;
      model.enter_relora_phase({1, 0});
      EXPECT_EQ(counts.relora_phase, trainable_elements(model)) << emb << " " << targets.size();
    }
  }
}

}  // namespace
}  // namespace relora

namespace relora {
namespace {

// What crosses the network per update in the ReLoRA phase, as a share of the warm start:
// printed for the shipped sizes, asserted for tiny (embeddings: lora).
TEST(Model, ReloraPhaseCommunicationShare) {
  for (const char* name : {"tiny", "llama_60m", "llama_350m", "llama_1b"}) {
    const Config cfg = load_config(testing::source_dir() + "/configs/" + name + ".yaml");
    const TrainableCounts counts = count_trainable(cfg.model, cfg.relora);
    const double ratio = static_cast<double>(counts.relora_phase) / counts.full_phase;
    std::printf("%-11s all-reduce per update: warm start %.1f MB, ReLoRA phase %.1f MB (%.1f%%)\n", name,
                4e-6 * counts.full_phase, 4e-6 * counts.relora_phase, 100.0 * ratio);
    if (std::string(name) == "tiny") {
      EXPECT_LT(ratio, 0.20);
    }
  }
}

}  // namespace
}  // namespace relora
