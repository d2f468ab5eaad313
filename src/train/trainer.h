// Trainer: owns the order of things in a run — data, model, optimizer, gradient sync,
// ReLoRA timeline, evaluation and outputs (<checkpoint.dir>/config.yaml, metrics.jsonl).
// Every rank runs the same trainer on its own share of each global batch; rank 0 alone
// writes files and prints progress.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "config/config.h"
#include "data/loader.h"
#include "dist/communicator.h"
#include "model/llama.h"
#include "optim/adamw.h"
#include "relora/schedule.h"
#include "train/step.h"

namespace relora {

struct TrainSummary {
  std::vector<double> losses;  // training loss of every update this run made, in order
  int64_t first_step = 1;      // the update losses[0] belongs to (> 1 when resumed)
  bool stopped_early = false;  // by SIGUSR1/SIGTERM or train.time_limit, after a checkpoint
  std::string last_checkpoint;  // path of the last checkpoint written ("" if none)
  int64_t restarts = 0;
  double final_val_loss = -1.0;  // -1 without a validation set
  int64_t comm_bytes_full = 0, comm_bytes_relora = 0;  // per update, last seen in each phase
  int buckets_started_early = 0;  // buckets started before backward ended, last update
};

class Trainer {
 public:
  // Local work only (no communication): checks the batch split for this world size,
  // opens the data, builds and initialises the model. Errors are InputError.
  Trainer(const Config& cfg, Communicator& comm);
  ~Trainer();
  // Collective. spec: "" (start fresh: refused when checkpoint.dir holds checkpoints; run()
  // alone, as tests call it, does not check), "auto" (<checkpoint.dir>/latest or the newest
  // complete checkpoint; fresh if there is none) or a checkpoint path. Every rank reads the
  // file (checkpoint.read: shared) or rank 0 reads it and broadcasts (broadcast).
  void resume(const std::string& spec);
  // Collective: every rank must have the same config, data and weights.
  void check_ranks_agree();
  TrainSummary run();

  const Llama& model() const { return *model_; }

 private:
  // One update: this rank's micro-batches from the training data, then AdamW.
  void optimizer_step(int64_t update, double* loss, double* grad_norm, double* lr);
  // Local: model, optimizer and data position from the checkpoint at `path`.
  void load_checkpoint(const std::string& path);
  // Before a resume in the ReLoRA phase: a new model and optimizer (their weights and state
  // come from the checkpoint) in device memory sized by resume_peak_bytes, the warm start's
  // larger block given back first.
  void rebuild_for_relora_resume();
  // Collective: rank 0's model, optimizer state and position to every rank.
  void broadcast_state();
  // Rank 0 writes the checkpoint of `step` (then `latest`, retention); every rank waits for
  // it. Returns its path.
  std::string save_checkpoint_at(int64_t step);
  // Applies the ReLoRA event scheduled after `update` and returns it.
  Event after_update(int64_t update);
  // "memory per rank, full-rank phase: ..." for each phase this run has, as run() prints them.
  std::vector<std::string> budget_lines() const;
  // reserve_device_arena(bytes); when the device cannot hold it, its InputError carries the
  // budget, which run() has not printed yet.
  void reserve_arena(int64_t bytes) const;

  // train.time_limit counts from here: loading data, model and checkpoint is part of a job
  std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();
  Config cfg_;
  Communicator& comm_;
  int threads_;
  int accumulation_;  // micro-batches per rank per update
  std::unique_ptr<Ops> ops_;
  std::string backend_reason_;  // which backend and why, for the start-up line
  std::unique_ptr<Loader> train_data_, val_data_;
  std::unique_ptr<Llama> model_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<Communicator> grad_comm_;  // NCCL for GPU gradients, or none: comm_
  std::unique_ptr<TrainStep> step_;
  Schedule schedule_;
  int64_t restarts_ = 0;
  int64_t start_step_ = 0;     // updates done before this run (the resumed checkpoint's step)
  std::string resumed_from_;   // checkpoint path, or ""
};

// The world sizes that split global_batch into whole micro-batches: "1, 2, 4 or 8".
std::string valid_world_sizes(int global_batch, int micro_batch);

}  // namespace relora
