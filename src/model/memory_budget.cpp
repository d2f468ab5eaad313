// Memory per rank by category: parameter counts from the config, activation buffers as
// Llama and LoraLinear allocate them.
#include "model/memory_budget.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core/errors.h"
#include "model/llama.h"

namespace relora {
namespace {

// relora.master_on_host takes effect: a device backend in the ReLoRA phase.
bool bf16_masters(const ReloraConfig& relora, const Ops& ops, bool relora_phase) {
  return relora_phase && relora.rank > 0 && relora.master_on_host && ops.device() != Device::cpu;
}

// Elements of each block projection, in the order the model moves them to the host.
std::vector<int64_t> block_projections(const ModelConfig& model) {
  const int64_t C = model.hidden_size, F = model.intermediate_size;
  std::vector<int64_t> sizes;
  for (int l = 0; l < model.num_layers; ++l)
    for (int64_t n : {C * C, C * C, C * C, C * C, F * C, F * C, C * F}) sizes.push_back(n);
  return sizes;
}

// Bytes of the bf16 scratch a product's input is rounded into (Llama::weight_words_scratch_).
int64_t words_scratch_bytes(const ModelConfig& model, int max_batch) {
  return 2 * static_cast<int64_t>(max_batch) * model.seq_len *
         std::max(model.hidden_size, model.intermediate_size);
}

// The most the switch to the ReLoRA phase holds, `base` being what is alive before it. With
// bf16 masters, first the scratch, then each projection's bf16 copy arrives just before its
// fp32 value leaves; then (in any case) the adapters with gradients of their own (moved
// into new buckets by the rebuild, which frees the old staging first) and their activation
// buffers, while the full-rank phase's gradients and Adam state are still alive.
int64_t phase_change_bytes(int64_t base, const MemoryBudget& full, const MemoryBudget& low_rank,
                           const ModelConfig& model, const ReloraConfig& relora, const Ops& ops,
                           int max_batch) {
  int64_t moving_masters = 0;
  if (bf16_masters(relora, ops, true)) {
    int64_t freed = 0, most = 0;
    for (int64_t n : block_projections(model)) {
      most = std::max(most, 2 * n - freed);
      freed += 2 * n;  // 4 bytes leave, 2 stay
    }
    moving_masters = base + words_scratch_bytes(model, max_batch) + most;
  }
  const int64_t adapters_arrive = base - (full.weights - low_rank.weights) + 2 * low_rank.adapters +
                                  (low_rank.activations - full.activations);
  return std::max(moving_masters, adapters_arrive);
}

// The first number in `path` (a /proc or /sys file), or -1 ("max", absent, unreadable).
int64_t number_in(const std::string& path) {
  std::ifstream in(path);
  int64_t value = -1;
  return in >> value ? value : -1;
}

// The memory this process may use: MemTotal, or its cgroup's limit (v2 memory.max, v1
// memory.limit_in_bytes; at its own cgroup's path and at the root, as a container sees
// it) when that is lower; -1 when unknown. Not MemAvailable, which falls as the node's
// other ranks build their models.
int64_t host_memory_limit() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t limit = -1, kib = 0;
  while (meminfo >> key && key != "MemTotal:") meminfo.ignore(1 << 10, '\n');
  if (key == "MemTotal:" && meminfo >> kib) limit = kib * 1024;
  std::vector<std::string> files = {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
  std::ifstream cgroups("/proc/self/cgroup");  // lines "id:controllers:path"
  for (std::string line; std::getline(cgroups, line);) {
    const size_t first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1), path = line.substr(second + 1);
    if (controllers.empty()) files.push_back("/sys/fs/cgroup" + path + "/memory.max");
    if (controllers.find("memory") != std::string::npos)
      files.push_back("/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes");
  }
  for (const std::string& file : files) {
    const int64_t cgroup_limit = number_in(file);
    if (cgroup_limit > 0 && (limit < 0 || cgroup_limit < limit)) limit = cgroup_limit;
  }
  return limit;
}

}  // namespace

MemoryBudget memory_budget(const ModelConfig& model, const ReloraConfig& relora, const Ops& ops,
                           int max_batch, ActivationStorage storage, bool bf16_staging, bool relora_phase) {
  constexpr int64_t kFloat = 4;
  const int64_t V = model.vocab_size, C = model.hidden_size, F = model.intermediate_size,
                L = model.num_layers, T = model.seq_len, H = model.num_heads, r = relora.rank;
  const int64_t N = static_cast<int64_t>(max_batch) * T, D = C / H;
  const bool adapters_on = relora_phase && r > 0;
  const TrainableCounts counts = count_trainable(model, relora);
  const int64_t norms = (2 * L + 1) * C;
  const int64_t parameters = counts.full_phase;  // every base weight and norm
  const int64_t trainable = adapters_on ? counts.relora_phase : counts.full_phase;
  const int64_t adapter_elements =
      adapters_on ? counts.relora_phase - norms - (relora.embeddings == "full" ? 2 * V * C : 0) : 0;

  // A block's activations: its input x (N,C); the wide ones n1, q, k, v, y, h, n2 (N,C) and
  // g, u, act (N,F); the narrow ones rstd1, rstd2 (N) and attention's saved state. Each
  // block's own, or one set for all (Llama's constructor): recompute shares all but x;
  // bf16 storage shares x and the wide ones and keeps bf16 words of x (and, without
  // recompute, of the wide ones) per block.
  const int64_t wide = 7 * N * C + 3 * N * F;
  const int64_t narrow =
      2 * N + ops.attention_saved_floats(max_batch, static_cast<int>(T), static_cast<int>(H));
  const int64_t one_set = L > 0 ? 1 : 0;  // a shared set exists only with blocks to share it
  int64_t activations = (storage.bf16 ? one_set : L) * N * C +
                        (storage.recompute || storage.bf16 ? one_set : L) * wide +
                        (storage.recompute ? one_set : L) * narrow;
  const int64_t kept_words = storage.bf16 ? L * (N * C + (storage.recompute ? 0 : wide)) : 0;
  activations += 2 * T * (D / 2)           // RoPE tables
                 + 3 * N                   // token ids and their order (i32)
                 + 2 * N + 2 * N * C       // final rstd, losses; final norm out, residual out
                 + N * V                   // logits
                 + 6 * N * C + 3 * N * F   // backward buffers
                 + ops.attention_scratch_floats(max_batch, static_cast<int>(T),
                                                static_cast<int>(H), static_cast<int>(D));
  if (adapters_on) {
    // x A^T of each adapted linear, the adapter scratch, the embedding's gathered columns
    int64_t adapted = L * static_cast<int64_t>(relora.targets.size()) + 1;
    if (relora.embeddings == "lora") adapted += 2;
    activations += adapted * N * r;
  }
  MemoryBudget budget;
  budget.weights = kFloat * parameters;
  if (bf16_masters(relora, ops, relora_phase)) {
    int64_t projections = 0;
    for (int64_t n : block_projections(model)) projections += n;
    budget.weights -= 2 * projections;  // bf16 on the device
    budget.host_masters = kFloat * projections;
  }
  budget.adapters = kFloat * adapter_elements;
  budget.gradients = kFloat * trainable + (bf16_staging ? 2 * trainable : 0);
  budget.optimizer = 2 * kFloat * trainable;
  budget.activations = kFloat * activations + 2 * kept_words +
                       2 * product_scratch_words(model, ops, max_batch, relora.rank);
  if (bf16_masters(relora, ops, relora_phase)) budget.activations += words_scratch_bytes(model, max_batch);
  return budget;
}

int64_t peak_bytes(const ModelConfig& model, const ReloraConfig& relora, const Ops& ops,
                   int max_batch, ActivationStorage storage, bool bf16_staging) {
  const MemoryBudget full = memory_budget(model, relora, ops, max_batch, storage, bf16_staging, false);
  const MemoryBudget low_rank = memory_budget(model, relora, ops, max_batch, storage, bf16_staging, true);
  return std::max(low_rank.total(),
                  phase_change_bytes(full.total(), full, low_rank, model, relora, ops, max_batch));
}

int64_t eval_peak_bytes(const ModelConfig& model, const ReloraConfig& relora, const Ops& ops,
                        int max_batch, ActivationStorage storage, bool relora_phase) {
  const MemoryBudget full = memory_budget(model, relora, ops, max_batch, storage, false, false);
  if (!relora_phase) return full.total();
  const MemoryBudget low_rank = memory_budget(model, relora, ops, max_batch, storage, false, true);
  // the full-rank model with gradients, no optimizer state, switching phase
  return std::max(low_rank.total(), phase_change_bytes(full.total() - full.optimizer, full,
                                                       low_rank, model, relora, ops, max_batch));
}

int64_t resume_peak_bytes(const ModelConfig& model, const ReloraConfig& relora, const Ops& ops,
                          int max_batch, ActivationStorage storage, bool bf16_staging) {
  const MemoryBudget low_rank = memory_budget(model, relora, ops, max_batch, storage, bf16_staging, true);
  const int64_t rebuild = low_rank.total() + 4 * count_trainable(model, relora).relora_phase;
  return std::max(eval_peak_bytes(model, relora, ops, max_batch, storage, true), rebuild);
}

std::string memory_remedies(const ActivationStorage& storage) {
  std::vector<std::string> settings;
  if (!storage.recompute) settings.push_back("train.recompute: true");
  if (!storage.bf16) settings.push_back("train.activation_dtype: bf16");
  std::string text = "lower train.micro_batch";
  for (size_t i = 0; i < settings.size(); ++i)
    text += (i == 0 ? ", set " : " or ") + settings[i];
  return text;
}

void reserve_device_arena(const Ops& ops, int64_t peak, int world_size, const ActivationStorage& storage) {
  if (ops.device() != Device::cuda) return;
  try {
    device_memory()->reserve(peak + peak / 20 + (64 << 20),
                             kRuntimeHeadroom + (world_size > 1 ? kNcclHeadroom : 0));
  } catch (const InputError& e) {
    RELORA_INPUT_ERROR(e.what() << "; " << memory_remedies(storage)
                                << " (activations), or use a GPU with more memory (weights, gradients "
                                   "and optimizer state are not sharded)");
  }
}

void check_host_memory(const Ops& ops, int64_t peak, int ranks_on_node, const ActivationStorage& storage) {
  if (ops.device() != Device::cpu) return;
  const int64_t limit = host_memory_limit();
  if (limit <= 0) return;
  if (peak * ranks_on_node <= limit) return;
  char sizes[200];
  std::snprintf(sizes, sizeof(sizes),
                "%.1f GB of host memory (%d rank(s) on this node, %.1f GB each by the memory budget) and "
                "this node has %.1f GB",
                static_cast<double>(peak) * ranks_on_node / 1e9, ranks_on_node,
                static_cast<double>(peak) / 1e9, static_cast<double>(limit) / 1e9);
  RELORA_INPUT_ERROR("the run needs " << sizes << " (its memory, or its cgroup's limit); "
                                       << memory_remedies(storage)
                                       << ", run fewer ranks per node, or train a smaller model");
}

std::string describe(const MemoryBudget& b) {
  auto gb = [](int64_t bytes) { return static_cast<double>(bytes) / 1e9; };
  char text[240];
  int length = std::snprintf(
      text, sizeof(text),
      "%.2f GB (weights %.2f, adapters %.2f, gradients %.2f, optimizer %.2f, activations %.2f)",
      gb(b.total()), gb(b.weights), gb(b.adapters), gb(b.gradients), gb(b.optimizer), gb(b.activations));
  if (b.host_masters > 0 && length > 0 && length < static_cast<int>(sizeof(text)))
    std::snprintf(text + length, sizeof(text) - length, "; host masters %.2f GB", gb(b.host_masters));
  return text;
}

}  // namespace relora
