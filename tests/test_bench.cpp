// The benchmark's numbers: model_flops_per_token against a hand count and against the
// products the model actually runs (every Ops::gemm of a forward and backward, counted),
// `relora bench`'s JSON line from two steps of a small model (fields present and sane; no
// timing assertions), and its --profile (TimedOps).
#include <gtest/gtest.h>

#include "forwarding_ops.h"
#include "test_util.h"

#include <memory>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "backend/timed_ops.h"
#include "config/config.h"
#include "core/errors.h"
#include "core/rng.h"
#include "data_pipeline/json.h"
#include "dist/communicator.h"
#include "model/llama.h"
#include "train/bench.h"

namespace relora {
namespace {

ModelConfig small_model() { return testing::small_test_model(); }

ReloraConfig small_relora(const std::string& embeddings) {
  ReloraConfig r;
  r.rank = 3;
  r.embeddings = embeddings;
  return r;
}

TEST(BenchFlops, MatchHandCount) {
  const ModelConfig m = small_model();  // V 13, C 8, L 2, F 12, T 5, r 3
  // Per layer: q,k,v,o 4*8*8 = 256 and gate, up, down 3*8*12 = 288 weights, so 2*544 = 1088
  // in the blocks and 8*13 = 104 in lm_head: 1192 weights. Attention 12*T*C = 480 per layer.
  // Full-rank: 6*1192 + 2*480 = 8112.
  EXPECT_EQ(model_flops_per_token(m, small_relora("lora"), false), 8112);
  // ReLoRA, embeddings lora: every weight frozen, 4*1192 = 4768. Adapters r*(in+out) per
  // layer: 4*3*16 + 2*3*20 + 3*20 = 372, so 2*372 = 744, and lm_head 3*(8+13) = 63: 6*807
  // = 4842. Embedding adapter 6*r*C = 144. Attention 960. Sum 10714.
  EXPECT_EQ(model_flops_per_token(m, small_relora("lora"), true), 10714);
  // embeddings frozen: no lm_head and embedding adapters: 4768 + 6*744 + 960 = 10192
  EXPECT_EQ(model_flops_per_token(m, small_relora("frozen"), true), 10192);
  // embeddings full: lm_head trains, 6*104 instead of 4*104: 10192 + 2*104 = 10400
  EXPECT_EQ(model_flops_per_token(m, small_relora("full"), true), 10400);
  // only v_proj adapted: 4768 + 6*2*3*16 + 960 + lm_head and embedding adapters 6*63 + 144
  ReloraConfig only_v = small_relora("lora");
  only_v.targets = {"v_proj"};
  EXPECT_EQ(model_flops_per_token(m, only_v, true), 4768 + 576 + 960 + 378 + 144);
  // rank 0: full-rank throughout
  ReloraConfig no_adapters = small_relora("lora");
  no_adapters.rank = 0;
  EXPECT_EQ(model_flops_per_token(m, no_adapters, true), 8112);
}

// The CPU backend, with gemm and gemm_on_words adding their 2*M*N*K to `flops`; with
// gemm_copies, products on bf16 words as under CUDA's bf16_copy (the adapters concatenated).
class CountingOps final : public testing::ForwardingOps {
 public:
  explicit CountingOps(bool gemm_copies) : ForwardingOps(Device::cpu, gemm_copies) {}
  int64_t flops = 0;
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override {
    flops += 2LL * M * N * K;
    ForwardingOps::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void gemm_on_words(bool ta, bool tb, int M, int N, int K, float alpha, const uint16_t* A, int lda,
                     const uint16_t* B, int ldb, float beta, float* C, int ldc) override {
    flops += 2LL * M * N * K;
    ForwardingOps::gemm_on_words(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
};

// The formula is what the model computes: the products of one forward and backward add up
// to it, less attention (which calls BLAS itself, on the causal blocks only), with the
// adapters apart and concatenated with their weights (bf16_copy's products) alike.
TEST(BenchFlops, MatchTheProductsTheModelRuns) {
  const ModelConfig m = small_model();
  constexpr int kBatch = 2;
  const int64_t tokens = static_cast<int64_t>(kBatch) * m.seq_len;
  const int64_t attention = 12LL * m.seq_len * m.hidden_size * m.num_layers;
  std::vector<int32_t> inputs(tokens), targets(tokens);
  for (int64_t i = 0; i < tokens; ++i) {
    inputs[i] = static_cast<int32_t>(uniform_at({1, RngPurpose::test, 1, 0}, i) * m.vocab_size);
    targets[i] = static_cast<int32_t>(uniform_at({1, RngPurpose::test, 2, 0}, i) * m.vocab_size);
  }
  for (bool copies : {false, true}) {
    for (const char* embeddings : {"lora", "frozen", "full"}) {
      for (bool relora_phase : {false, true}) {
        SCOPED_TRACE(std::string(embeddings) + (relora_phase ? " relora" : " full") +
                     (copies ? " concatenated" : ""));
        const ReloraConfig r = small_relora(embeddings);
        CountingOps ops(copies);
        Llama model(m, r, ops, kBatch);
        model.init_weights(1);
        if (relora_phase) model.enter_relora_phase({1, 0});
        ops.flops = 0;
        ops.word_products = 0;
        model.forward(inputs.data(), targets.data(), kBatch, true, 1.0f / tokens);
        model.backward(kBatch);
        EXPECT_EQ(ops.flops, (model_flops_per_token(m, r, relora_phase) - attention) * tokens);
        EXPECT_EQ(ops.word_products > 0, copies);
      }
    }
  }
}

std::vector<std::string> small_bench_overrides() {
  return {"model.vocab_size=64",       "model.hidden_size=32",       "model.num_layers=2",
          "model.num_heads=2",         "model.intermediate_size=48", "model.seq_len=16",
          "relora.rank=4",             "train.micro_batch=2",        "train.global_batch=2",
          "train.threads=2",           "train.device=cpu"};  // on a machine with a GPU too
}

double number(const JsonValue& object, const char* key) {
  const JsonValue* v = object.find(key);
  EXPECT_NE(v, nullptr) << key;
  if (v == nullptr) return 0.0;
  EXPECT_EQ(v->type, JsonValue::Type::number) << key;
  return v->number;
}

BenchOptions two_steps(bool relora_phase, bool profile) {
  BenchOptions options;
  options.steps = 2;
  options.warmup = 1;
  options.relora_phase = relora_phase;
  options.profile = profile;
  return options;
}

TEST(Bench, TwoStepsGiveSaneFields) {
  const Config cfg = config_from_overrides(small_bench_overrides());
  auto comm = make_local_comm();
  for (bool relora_phase : {false, true}) {
    SCOPED_TRACE(relora_phase ? "relora" : "full");
    const std::string line = bench_json(run_bench(cfg, *comm, two_steps(relora_phase, false)));
    JsonValue json;
    std::string error;
    ASSERT_TRUE(parse_json(line, &json, &error)) << error << ": " << line;
    const JsonValue* phase = json.find("phase");
    ASSERT_NE(phase, nullptr);
    EXPECT_EQ(phase->string, relora_phase ? "relora" : "full");
    const JsonValue* device = json.find("device");
    ASSERT_NE(device, nullptr);
    EXPECT_EQ(device->string.rfind("cpu", 0), 0u) << device->string;
    const JsonValue* matmul = json.find("matmul");
    ASSERT_NE(matmul, nullptr);
    EXPECT_EQ(matmul->string, "fp32");  // the CPU's products, whatever train.matmul says

    EXPECT_EQ(number(json, "tokens_per_step"), 2 * 16);
    EXPECT_EQ(number(json, "model_flops_per_token"),
              model_flops_per_token(cfg.model, cfg.relora, relora_phase));
    EXPECT_EQ(number(json, "threads"), 2);
    EXPECT_EQ(number(json, "world_size"), 1);
    EXPECT_GT(number(json, "tokens_per_s"), 0.0);
    const double step_ms = number(json, "step_ms");
    EXPECT_GT(step_ms, 0.0);
    const double forward = number(json, "forward_ms"), backward = number(json, "backward_ms");
    const double optimizer = number(json, "optimizer_ms"), comm_ms = number(json, "comm_ms");
    EXPECT_GT(forward, 0.0);
    EXPECT_GT(backward, 0.0);
    EXPECT_GT(optimizer, 0.0);
    EXPECT_GE(comm_ms, 0.0);
    EXPECT_LE(forward + backward + optimizer + comm_ms, step_ms * 1.001 + 0.01);  // 2-decimal rounding
    EXPECT_GT(number(json, "achieved_gflops"), 0.0);
    EXPECT_GT(number(json, "peak_gflops"), 0.0);
    EXPECT_GT(number(json, "train_product_gflops"), 0.0);
    const double mfu = number(json, "mfu");
    EXPECT_GT(mfu, 0.0);
    EXPECT_LT(mfu, 1.5);
    EXPECT_GT(number(json, "peak_mem_bytes"), 1e6);
    EXPECT_EQ(number(json, "device_reserved_bytes"), 0.0);  // no arena on the CPU
  }
}

// --profile: the products it times are the model's FLOPs exactly (gemms and attention, per
// step), AdamW is one call per step, and the timed ops change no number.
TEST(Bench, ProfileTimesEveryProductOnce) {
  const Config cfg = config_from_overrides(small_bench_overrides());
  auto comm = make_local_comm();
  for (bool relora_phase : {false, true}) {
    SCOPED_TRACE(relora_phase ? "relora" : "full");
    const BenchResult r = run_bench(cfg, *comm, two_steps(relora_phase, true));
    ASSERT_FALSE(r.profile.empty());
    double flops = 0.0, seconds = 0.0;
    int64_t adamw_calls = 0;
    for (const OpTime& t : r.profile) {
      flops += t.flops;
      seconds += t.seconds;
      if (t.op == "adamw") adamw_calls = t.calls;
      EXPECT_GT(t.calls, 0) << t.op;
    }
    EXPECT_EQ(flops, static_cast<double>(r.model_flops_per_token) * r.tokens_per_step * 2);
    EXPECT_EQ(adamw_calls, 2);
    EXPECT_GT(seconds, 0.0);
    const std::string table = profile_table(r);
    EXPECT_NE(table.find("adamw"), std::string::npos) << table;
  }
}

TEST(TimedOps, ChangesNoNumber) {
  const ModelConfig m = small_model();
  const ReloraConfig r = small_relora("lora");
  constexpr int kBatch = 2;
  const int64_t tokens = static_cast<int64_t>(kBatch) * m.seq_len;
  std::vector<int32_t> inputs(tokens), targets(tokens);
  for (int64_t i = 0; i < tokens; ++i) {
    inputs[i] = static_cast<int32_t>(uniform_at({3, RngPurpose::test, 1, 0}, i) * m.vocab_size);
    targets[i] = static_cast<int32_t>(uniform_at({3, RngPurpose::test, 2, 0}, i) * m.vocab_size);
  }
  auto cpu = make_cpu_ops();
  TimedOps timed(*cpu);
  std::vector<float> grads[2];
  double losses[2];
  for (int run = 0; run < 2; ++run) {
    Llama model(m, r, run == 0 ? *cpu : static_cast<Ops&>(timed), kBatch);
    model.init_weights(1);
    model.enter_relora_phase({1, 0});
    losses[run] = model.forward(inputs.data(), targets.data(), kBatch, true, 1.0f / tokens);
    model.backward(kBatch);
    for (Param* p : model.trainable())
      grads[run].insert(grads[run].end(), p->grad.data(), p->grad.data() + p->grad.numel());
  }
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_EQ(grads[0], grads[1]);
  EXPECT_FALSE(timed.times().empty());
}

TEST(Bench, RefusesTheReloraPhaseWithoutAdapters) {
  std::vector<std::string> overrides = small_bench_overrides();
  overrides.push_back("relora.rank=0");
  const Config cfg = config_from_overrides(overrides);
  BenchOptions options;
  options.relora_phase = true;
  EXPECT_THROW(check_bench_options(cfg, options), InputError);
  options.relora_phase = false;
  options.steps = 0;
  EXPECT_THROW(check_bench_options(cfg, options), InputError);
}

// A CPU bench larger than the node's memory is refused before anything is allocated, as
// train is (exit 2), not left to the OOM killer: 64 layers of width 16384 need terabytes.
TEST(Bench, TooBigForTheNodeIsRefusedBeforeAllocating) {
  std::vector<std::string> overrides = small_bench_overrides();
  overrides.insert(overrides.end(), {"model.hidden_size=16384", "model.num_heads=128",
                                     "model.intermediate_size=65536", "model.num_layers=64"});
  const Config cfg = config_from_overrides(overrides);
  auto comm = make_local_comm();
  testing::expect_contains(testing::input_error_of([&] { run_bench(cfg, *comm, two_steps(false, false)); }),
                           {"the run needs", "GB of host memory", "this node has"});
}

}  // namespace
}  // namespace relora
