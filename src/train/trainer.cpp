// The training loop: accumulate gradients over micro-batches, clip, AdamW, then the ReLoRA
// event after the update (adapter start or merge-and-restart), logging and evaluation.
#include "train/trainer.h"

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "core/errors.h"
#include "relora/restart.h"
#include "train/evaluate.h"
#include "train/metrics.h"
#include "train/threads.h"

namespace relora {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// mkdir -p
void make_dirs(const std::string& dir) {
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    partial = dir.substr(0, pos);
    if (partial.empty()) continue;
    if (mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST)
      RELORA_INPUT_ERROR("checkpoint.dir '" << dir << "': cannot create '" << partial
                                            << "': " << std::strerror(errno));
  }
}

// Writes text to path through a temporary name and a rename, so it is never half-written.
void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) RELORA_INPUT_ERROR(tmp << ": cannot write: " << std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    RELORA_INPUT_ERROR(path << ": cannot rename from " << tmp << ": " << std::strerror(errno));
}

}  // namespace

Trainer::Trainer(const Config& cfg) : cfg_(cfg), schedule_(cfg) {
  if (cfg_.data.train.empty())
    RELORA_INPUT_ERROR(cfg_.source << ": data.train is empty: set it to a glob of token shards, "
                                      "e.g. --set data.train='data/tiny/train_*.bin'");
  threads_ = configure_threads(cfg_.train.threads);
  ops_ = make_cpu_ops();
  train_data_ = std::make_unique<Loader>(cfg_.data.train, cfg_.model.vocab_size, cfg_.model.seq_len,
                                         cfg_.train.seed, true);
  if (!cfg_.data.val.empty())
    val_data_ = std::make_unique<Loader>(cfg_.data.val, cfg_.model.vocab_size, cfg_.model.seq_len,
                                         cfg_.train.seed, false);
  make_dirs(cfg_.checkpoint.dir);
  model_ = std::make_unique<Llama>(cfg_.model, cfg_.relora, *ops_, cfg_.train.micro_batch);
  model_->init_weights(cfg_.train.seed);
  optimizer_ = std::make_unique<AdamW>(cfg_.optimizer, *ops_);
  inputs_.resize(static_cast<size_t>(cfg_.train.micro_batch) * cfg_.model.seq_len);
  targets_.resize(inputs_.size());
}

Trainer::~Trainer() = default;

void Trainer::optimizer_step(int64_t update, double* loss, double* grad_norm, double* lr) {
  const int micro = cfg_.train.micro_batch, global = cfg_.train.global_batch;
  const int64_t tokens_per_update = static_cast<int64_t>(global) * cfg_.model.seq_len;
  for (Param* p : trainable_) p->grad.fill(0.0f);
  double loss_sum = 0.0;
  for (int offset = 0; offset < global; offset += micro) {
    train_data_->read(offset, micro, inputs_.data(), targets_.data());
    loss_sum += model_->forward(inputs_.data(), targets_.data(), micro, true,
                                1.0f / static_cast<float>(tokens_per_update));
    model_->backward(inputs_.data(), micro);
  }
  train_data_->advance(global);
  *loss = loss_sum / static_cast<double>(tokens_per_update);
  *grad_norm = global_grad_norm(*ops_, trainable_);
  clip_gradients(*ops_, trainable_, *grad_norm, cfg_.optimizer.grad_clip);
  *lr = schedule_.lr(update);
  optimizer_->step(trainable_, static_cast<float>(*lr));
}

Event Trainer::after_update(int64_t update) {
  const Event event = schedule_.event_after(update);
  switch (event) {
    case Event::start_adapters:
      start_adapters(*model_, *optimizer_, cfg_.train.seed, update);
      trainable_ = model_->trainable();
      break;
    case Event::restart:
      merge_and_restart(*model_, *optimizer_, cfg_.relora, cfg_.train.seed, update);
      ++restarts_;
      break;
    case Event::none:
      break;
  }
  return event;
}

TrainSummary Trainer::run() {
  const std::string dir = cfg_.checkpoint.dir;
  write_file_atomic(dir + "/config.yaml", config_to_yaml(cfg_));
  MetricsLog metrics(dir + "/metrics.jsonl");
  Progress progress(cfg_.train.steps, cfg_.log.every);
  char line[256];
  std::snprintf(line, sizeof(line),
                "relora: %.2fM parameters, %d threads, %ld training windows, %d steps of %d x %d tokens",
                model_->num_parameters() / 1e6, threads_, static_cast<long>(train_data_->num_samples()),
                cfg_.train.steps, cfg_.train.global_batch, cfg_.model.seq_len);
  progress.message(line);

  TrainSummary summary;
  after_update(0);  // warm_start_steps 0: adapters from the start
  trainable_ = model_->trainable();
  const int64_t tokens_per_update = static_cast<int64_t>(cfg_.train.global_batch) * cfg_.model.seq_len;
  const auto run_start = Clock::now();
  auto interval_start = run_start;
  int64_t interval_steps = 0;
  for (int64_t u = 1; u <= cfg_.train.steps; ++u) {
    double loss, grad_norm, lr;
    optimizer_step(u, &loss, &grad_norm, &lr);
    summary.losses.push_back(loss);
    ++interval_steps;
    const double interval_s = seconds_since(interval_start);
    StepRecord rec;
    rec.step = u;
    rec.relora_phase = schedule_.relora_phase(u);
    rec.cycle = schedule_.cycle(u);
    rec.loss = loss;
    rec.lr = lr;
    rec.grad_norm = grad_norm;
    rec.tokens = u * tokens_per_update;
    rec.tokens_per_s = interval_steps * tokens_per_update / interval_s;
    rec.step_ms = 1e3 * interval_s / interval_steps;
    progress.update(rec, seconds_since(run_start));
    if (u == 1 || u % cfg_.log.every == 0 || u == cfg_.train.steps) {
      metrics.step(rec);
      interval_start = Clock::now();
      interval_steps = 0;
    }
    const Event event = after_update(u);
    if (event == Event::restart) {
      metrics.restart(u, schedule_.cycle(u + 1));
      std::snprintf(line, sizeof(line), "relora: step %ld: merged adapters, cycle %ld begins",
                    static_cast<long>(u), static_cast<long>(schedule_.cycle(u + 1)));
      progress.message(line);
    } else if (event == Event::start_adapters) {
      std::snprintf(line, sizeof(line), "relora: step %ld: warm start done, ReLoRA cycle 1 begins",
                    static_cast<long>(u));
      progress.message(line);
    }
    const bool eval_now = val_data_ && ((cfg_.data.eval_every > 0 && u % cfg_.data.eval_every == 0) ||
                                        u == cfg_.train.steps);
    if (eval_now) {
      EvalResult r = evaluate(*model_, *val_data_, cfg_.train.micro_batch, cfg_.data.eval_batches);
      metrics.eval(u, r.loss, r.perplexity);
      summary.final_val_loss = r.loss;
      std::snprintf(line, sizeof(line), "relora: step %ld: val_loss %.4f val_ppl %.2f (%ld tokens)",
                    static_cast<long>(u), r.loss, r.perplexity, static_cast<long>(r.tokens));
      progress.message(line);
    }
  }
  progress.finish();
  summary.restarts = restarts_;
  std::snprintf(line, sizeof(line), "relora: done in %.1fs; metrics in %s/metrics.jsonl",
                seconds_since(run_start), dir.c_str());
  progress.message(line);
  return summary;
}

}  // namespace relora
