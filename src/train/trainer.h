// Trainer: owns the order of things in a run — data, model, optimizer, ReLoRA timeline,
// evaluation and outputs (<checkpoint.dir>/config.yaml and metrics.jsonl).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/ops.h"
#include "config/config.h"
#include "data/loader.h"
#include "model/llama.h"
#include "optim/adamw.h"
#include "relora/schedule.h"

namespace relora {

struct TrainSummary {
  std::vector<double> losses;  // training loss of every update, in order
  int64_t restarts = 0;
  double final_val_loss = -1.0;  // -1 without a validation set
};

class Trainer {
 public:
  // Validates what the run needs (data files, output directory) before any work.
  explicit Trainer(const Config& cfg);
  ~Trainer();
  TrainSummary run();

 private:
  void optimizer_step(int64_t update, double* loss, double* grad_norm, double* lr);
  // Applies the ReLoRA event scheduled after `update` and returns it.
  Event after_update(int64_t update);

  Config cfg_;
  int threads_;
  std::unique_ptr<Ops> ops_;
  std::unique_ptr<Loader> train_data_, val_data_;
  std::unique_ptr<Llama> model_;
  std::unique_ptr<AdamW> optimizer_;
  Schedule schedule_;
  std::vector<Param*> trainable_;
  std::vector<int32_t> inputs_, targets_;  // (micro_batch, T)
  int64_t restarts_ = 0;
};

}  // namespace relora
