// Evaluation loop: forward only, losses summed in double.
#include "train/evaluate.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/memory_budget.h"
#include "optim/adamw.h"

namespace relora {

std::unique_ptr<Llama> model_for_eval(const Config& cfg, Ops& ops, const std::string& checkpoint,
                                      const RunState& state) {
  const int batch = cfg.train.micro_batch;
  const bool relora_phase = !checkpoint.empty() && state.relora_phase;
  const ActivationStorage storage = activation_storage(cfg.train);
  reserve_device_arena(ops, eval_peak_bytes(cfg.model, cfg.relora, ops, batch, storage, relora_phase),
                       1, storage);  // no NCCL
  auto model = std::make_unique<Llama>(cfg.model, cfg.relora, ops, batch, storage);
  model->init_weights(cfg.train.seed);
  if (!checkpoint.empty()) {
    AdamW optimizer(cfg.optimizer, ops);  // read_tensors verifies the state it holds
    if (relora_phase) model->enter_relora_phase(AdapterInit{cfg.train.seed, state.step});
    read_tensors(checkpoint, *model, optimizer);
  }
  return model;
}

EvalResult evaluate(Llama& model, Loader& data, int batch_size, int64_t max_batches, Communicator& comm) {
  const int T = model.config().seq_len;
  int64_t windows = data.num_samples();
  if (max_batches > 0 && max_batches <= windows / batch_size) windows = max_batches * batch_size;
  std::vector<int32_t> inputs(static_cast<size_t>(batch_size) * T), targets(inputs.size());
  const int64_t saved_cursor = data.cursor();
  data.set_cursor(0);
  double loss_sum = 0.0;
  const int64_t stride = static_cast<int64_t>(batch_size) * comm.world_size();
  for (int64_t start = static_cast<int64_t>(batch_size) * comm.rank(); start < windows; start += stride) {
    int b = static_cast<int>(std::min<int64_t>(batch_size, windows - start));
    data.read(start, b, inputs.data(), targets.data());
    loss_sum += model.forward(inputs.data(), targets.data(), b, false, 0.0f);
  }
  data.set_cursor(saved_cursor);
  comm.all_reduce(&loss_sum, 1, ReduceOp::sum);
  EvalResult r;
  r.tokens = windows * T;
  r.loss = r.tokens > 0 ? loss_sum / static_cast<double>(r.tokens) : 0.0;
  r.perplexity = std::exp(r.loss);
  return r;
}

}  // namespace relora
