// The training loop: each rank accumulates gradients over its micro-batches of the global
// batch; during the last backward the gradient buckets are all-reduced as they complete;
// then clip, AdamW, and the ReLoRA event after the update (adapter start or
// merge-and-restart, followed by a check that all replicas still agree), logging and
// evaluation.
#include "train/trainer.h"

#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "backend/select.h"
#include "checkpoint/checkpoint.h"
#include "core/errors.h"
#include "dist/collective.h"
#include "dist/replica_check.h"
#include "model/memory_budget.h"
#include "relora/restart.h"
#include "train/evaluate.h"
#include "train/metrics.h"
#include "train/step.h"
#include "train/threads.h"

namespace relora {
namespace {

using Clock = std::chrono::steady_clock;

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

// The signal that asked the run to stop (SIGUSR1 or SIGTERM), 0 if none.
volatile sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int signo) { g_stop_signal = signo; }

// SIGUSR1 and SIGTERM finish the current step, checkpoint and exit 0 while installed.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction action = {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGUSR1, &action, &old_usr1_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGUSR1, &old_usr1_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_usr1_ = {}, old_term_ = {};
};

std::string join_lines(const std::vector<std::string>& lines, const char* separator) {
  std::string out;
  for (const std::string& l : lines) out += (out.empty() ? "" : separator) + l;
  return out;
}

// Keeps the records of metrics.jsonl up to `step` (those of lost steps are dropped, and
// lines that are not whole records, as a crash in the middle of a write leaves, with a
// warning); atomic, so an interrupted resume leaves the file as it was.
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  int64_t broken = 0;
  while (std::getline(in, line)) {
    const size_t at = line.find("\"step\":");
    const char* digits = at == std::string::npos ? nullptr : line.c_str() + at + 7;
    char* end = nullptr;
    const long long record_step = digits ? std::strtoll(digits, &end, 10) : 0;
    if (line.empty() || line.front() != '{' || line.back() != '}' || (digits && end == digits)) {
      ++broken;
      continue;
    }
    if (digits && record_step > step) continue;
    kept += line + "\n";
  }
  in.close();
  if (broken > 0)
    std::fprintf(stderr, "relora: warning: %s: dropped %lld line(s) that are not whole records\n",
                 path.c_str(), static_cast<long long>(broken));
  write_file_atomic(path, kept);
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// mkdir -p
void make_dirs(const std::string& dir) {
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    const std::string partial = dir.substr(0, pos);
    if (mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST)
      RELORA_INPUT_ERROR("checkpoint.dir '" << dir << "': cannot create '" << partial
                                            << "': " << std::strerror(errno));
  }
}


// The path and content hash of `name` in the directory of the first training shard (the
// data pipeline writes tokenizer.model and manifest.json there); empty if absent.
void provenance(const std::vector<std::string>& shards, const char* name, std::string* path,
                std::string* checksum) {
  if (shards.empty()) return;
  const size_t slash = shards[0].find_last_of('/');
  const std::string candidate = (slash == std::string::npos ? "" : shards[0].substr(0, slash + 1)) + name;
  std::ifstream in(candidate, std::ios::binary);
  if (!in) return;
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  char hex[32];
  std::snprintf(hex, sizeof(hex), "fnv1a64:%016llx",
                static_cast<unsigned long long>(content_hash(bytes.data(), bytes.size())));
  *path = candidate;
  *checksum = hex;
}

}  // namespace

std::string valid_world_sizes(int global_batch, int micro_batch) {
  std::string out;
  const int micro_batches = global_batch / micro_batch;
  std::vector<int> sizes;
  for (int w = 1; w <= micro_batches; ++w)
    if (micro_batches % w == 0) sizes.push_back(w);
  for (size_t i = 0; i < sizes.size(); ++i)
    out += (i == 0 ? "" : i + 1 == sizes.size() ? " or " : ", ") + std::to_string(sizes[i]);
  return out;
}

Trainer::Trainer(const Config& cfg, Communicator& comm) : cfg_(cfg), comm_(comm), schedule_(cfg) {
  const int world = comm_.world_size(), global = cfg_.train.global_batch, micro = cfg_.train.micro_batch;
  if (global % (world * micro) != 0)
    RELORA_INPUT_ERROR(cfg_.source << ": train.global_batch " << global << " is not a multiple of "
                                   << world << " ranks x train.micro_batch " << micro
                                   << "; with these batch sizes run on " << valid_world_sizes(global, micro)
                                   << " rank(s), or change them");
  accumulation_ = global / (world * micro);
  if (cfg_.data.train.empty())
    RELORA_INPUT_ERROR(cfg_.source << ": data.train is empty: set it to a glob of token shards, "
                                      "e.g. --set data.train='data/tiny/train_*.bin'");
  threads_ = configure_threads(cfg_.train.threads);
  Backend backend = make_backend(cfg_.train.device, cfg_.train.devices, cfg_.train.matmul, comm_.local_rank(),
                                 comm_.local_size());
  ops_ = std::move(backend.ops);
  backend_reason_ = backend.reason;
  check_gradient_communicator(ops_->device(), world);  // refused here, once, not in run()
  train_data_ = std::make_unique<Loader>(cfg_.data.train, cfg_.model.vocab_size, cfg_.model.seq_len,
                                         cfg_.train.seed, true, comm_.local_rank(), comm_.local_size());
  if (!cfg_.data.val.empty())
    val_data_ = std::make_unique<Loader>(cfg_.data.val, cfg_.model.vocab_size, cfg_.model.seq_len,
                                         cfg_.train.seed, false, comm_.local_rank(), comm_.local_size());
  if (comm_.rank() == 0) make_dirs(cfg_.checkpoint.dir);
  const ActivationStorage storage = activation_storage(cfg_.train);
  const int64_t peak =
      peak_bytes(cfg_.model, cfg_.relora, *ops_, micro, storage, bf16_staging(cfg_.train, world));
  check_host_memory(*ops_, peak, comm_.local_size(), storage);
  reserve_arena(peak);
  model_ = std::make_unique<Llama>(cfg_.model, cfg_.relora, *ops_, micro, storage);
  model_->init_weights(cfg_.train.seed);
  optimizer_ = std::make_unique<AdamW>(cfg_.optimizer, *ops_);
}

Trainer::~Trainer() = default;

void Trainer::check_ranks_agree() {
  Config settings = cfg_;
  settings.source.clear();  // the same file may be reached by different paths on different ranks
  check_same_text(comm_, config_to_yaml(settings), "the resolved config");
  // The data each rank found: token counts of the shards in order (paths may differ).
  std::string data = std::to_string(train_data_->num_samples());
  for (int64_t tokens : train_data_->shard_tokens()) data += " " + std::to_string(tokens);
  check_same_text(comm_, data, "the training data (shards matching data.train, and their sizes)");
  check_same_weights(comm_, model_->params(), "on the initial weights");
}

void Trainer::resume(const std::string& spec) {
  std::string path;
  collectively(comm_, [&] {
    if (comm_.rank() != 0) return;
    if (spec.empty()) {  // a new run beside another's checkpoints would mix with them
      const std::vector<std::string> found = checkpoints_after(cfg_.checkpoint.dir, -1);
      if (!found.empty())
        RELORA_INPUT_ERROR("checkpoint.dir " << cfg_.checkpoint.dir << " holds checkpoints of an earlier run "
                                             << "(newest " << found.front() << "): continue it with --resume "
                                             << "auto, or start a new run in another checkpoint.dir");
      return;
    }
    path = spec == "auto" ? find_resume_checkpoint(cfg_.checkpoint.dir) : spec;
    if (spec != "auto" && !std::ifstream(path))
      RELORA_INPUT_ERROR("--resume " << path << ": no such checkpoint file (give a step_*.h5 path, or auto)");
  });
  if (spec.empty()) return;
  broadcast_string(comm_, path, 0);
  if (path.empty()) {
    if (comm_.rank() == 0)
      std::printf("relora: --resume auto: no checkpoint in %s, starting fresh\n", cfg_.checkpoint.dir.c_str());
    return;
  }
  int64_t relora_phase = 0;
  collectively(comm_, [&] {
    if (comm_.rank() == 0) relora_phase = read_run_state(path).relora_phase ? 1 : 0;
  });
  comm_.broadcast(&relora_phase, sizeof(relora_phase), 0);
  if (relora_phase) collectively(comm_, [&] { rebuild_for_relora_resume(); });
  const bool shared = cfg_.checkpoint.read == "shared";
  collectively(comm_, [&] {
    if (shared || comm_.rank() == 0) load_checkpoint(path);
  });
  if (!shared) broadcast_state();
}

std::vector<std::string> Trainer::budget_lines() const {
  std::vector<std::string> lines;
  for (bool relora_phase : {false, true}) {
    if (relora_phase && cfg_.relora.rank == 0) continue;
    const MemoryBudget budget =
        memory_budget(cfg_.model, cfg_.relora, *ops_, cfg_.train.micro_batch, activation_storage(cfg_.train),
                      bf16_staging(cfg_.train, comm_.world_size()), relora_phase);
    lines.push_back(std::string("memory per rank, ") + (relora_phase ? "ReLoRA" : "full-rank") +
                    " phase: " + describe(budget));
  }
  return lines;
}

void Trainer::reserve_arena(int64_t bytes) const {
  try {
    reserve_device_arena(*ops_, bytes, comm_.world_size(), activation_storage(cfg_.train));
  } catch (const InputError& e) {
    std::string budget;
    for (const std::string& line : budget_lines()) budget += "; " + line;
    RELORA_INPUT_ERROR(e.what() << budget);
  }
}

void Trainer::rebuild_for_relora_resume() {
  const int micro = cfg_.train.micro_batch;
  optimizer_.reset();
  model_.reset();
  const ActivationStorage storage = activation_storage(cfg_.train);
  if (ops_->device() != Device::cpu) {
    device_memory()->release_arena();
    reserve_arena(resume_peak_bytes(cfg_.model, cfg_.relora, *ops_, micro, storage,
                                    bf16_staging(cfg_.train, comm_.world_size())));
  }
  model_ = std::make_unique<Llama>(cfg_.model, cfg_.relora, *ops_, micro, storage);
  optimizer_ = std::make_unique<AdamW>(cfg_.optimizer, *ops_);
}

void Trainer::load_checkpoint(const std::string& path) {
  const RunState state = read_run_state(path);
  const Config saved = config_from_yaml_text(state.config_yaml, path + " (its stored config)");
  // the tensors' shapes, and what a step is and the order of the data
  std::vector<std::string> incompatible = incompatible_keys(saved, cfg_);
  for (const std::string& line : data_order_changes(saved, cfg_)) incompatible.push_back(line);
  if (!incompatible.empty())
    RELORA_INPUT_ERROR("checkpoint " << path << " does not fit this config: " << join_lines(incompatible, "; ")
                                     << " (these cannot change on resume; `relora inspect " << path
                                     << "` shows its config)");
  if (state.shard_tokens != train_data_->shard_tokens())
    RELORA_INPUT_ERROR("checkpoint " << path << ": the training data changed: it was trained on "
                                     << state.shard_tokens.size() << " shard(s) of a different size than the "
                                     << train_data_->shard_tokens().size() << " matching data.train now ('"
                                     << cfg_.data.train << "'); resume on the same data");
  // at step == warm_start_steps either: a run whose final update ended the warm start had
  // no reason to start the adapters (run() starts them before the extension's first update)
  const int64_t warm = cfg_.relora.warm_start_steps;
  const bool phase_fits = cfg_.relora.rank <= 0 ? !state.relora_phase
                          : state.step == warm  ? true
                                                : state.relora_phase == (state.step > warm);
  if (!phase_fits)
    RELORA_INPUT_ERROR("checkpoint " << path << " is in the " << (state.relora_phase ? "ReLoRA" : "full-rank")
                                     << " phase after step " << state.step
                                     << ", which relora.warm_start_steps = " << cfg_.relora.warm_start_steps
                                     << " contradicts; resume with the warm start it was trained with");
  if (state.relora_phase) start_adapters(*model_, *optimizer_, cfg_.train.seed, state.step);
  read_tensors(path, *model_, *optimizer_);
  train_data_->set_cursor(state.data_cursor);
  start_step_ = state.step;
  restarts_ = state.restarts;
  resumed_from_ = path;
  if (comm_.rank() == 0) {
    const std::vector<std::string> changed = changed_keys(saved, cfg_);
    std::printf("relora: resuming from %s: step %ld, %s phase, cycle %ld, %ld restarts, saved by %d rank(s)\n",
                path.c_str(), static_cast<long>(state.step), state.relora_phase ? "ReLoRA" : "full-rank",
                static_cast<long>(state.cycle), static_cast<long>(state.restarts), state.world_size);
    if (!changed.empty())
      std::printf("relora: settings changed since the checkpoint: %s\n", join_lines(changed, ", ").c_str());
    const std::vector<std::string> later = checkpoints_after(cfg_.checkpoint.dir, state.step);
    if (!later.empty())
      std::printf("relora: warning: %s holds %zu checkpoint(s) after step %ld (newest %s), a continuation "
                  "this run leaves: kept while the run is behind them; delete them if not needed\n",
                  cfg_.checkpoint.dir.c_str(), later.size(), static_cast<long>(state.step), later.front().c_str());
  }
}

void Trainer::broadcast_state() {
  int64_t position[4] = {start_step_, restarts_, train_data_->cursor(), model_->relora_phase() ? 1 : 0};
  comm_.broadcast(position, sizeof(position), 0);
  start_step_ = position[0];
  restarts_ = position[1];
  train_data_->set_cursor(position[2]);
  broadcast_string(comm_, resumed_from_, 0);
  if (position[3] && !model_->relora_phase()) start_adapters(*model_, *optimizer_, cfg_.train.seed, start_step_);
  for (Param* p : model_->params()) {
    broadcast_tensor(comm_, p->value, 0);
    if (!p->trainable()) continue;
    AdamState& st = optimizer_->state_for(*p);
    broadcast_tensor(comm_, st.exp_avg, 0);
    broadcast_tensor(comm_, st.exp_avg_sq, 0);
    comm_.broadcast(&st.step, sizeof(st.step), 0);
  }
  model_->refresh_bf16_weights();  // host masters (relora.master_on_host) arrived
}

std::string Trainer::save_checkpoint_at(int64_t step) {
  const std::string path = cfg_.checkpoint.dir + "/" + checkpoint_name(step);
  if (comm_.rank() == 0) {
    RunState state;
    state.step = step;
    state.tokens_seen = step * static_cast<int64_t>(cfg_.train.global_batch) * cfg_.model.seq_len;
    state.relora_phase = model_->relora_phase();
    state.cycle = state.relora_phase ? 1 + restarts_ : 0;
    state.restarts = restarts_;
    state.world_size = comm_.world_size();
    state.config_yaml = config_to_yaml(cfg_);
    state.data_cursor = train_data_->cursor();
    state.data_epoch = train_data_->num_samples() > 0 ? train_data_->cursor() / train_data_->num_samples() : 0;
    state.shuffle_seed = cfg_.train.seed;
    state.shard_paths = train_data_->files();
    state.shard_tokens = train_data_->shard_tokens();
    state.rng_seed = cfg_.train.seed;
    provenance(state.shard_paths, "tokenizer.model", &state.tokenizer_path, &state.tokenizer_checksum);
    provenance(state.shard_paths, "manifest.json", &state.data_manifest_path, &state.data_manifest_checksum);
    const SaveStats stats = save_checkpoint(path, state, *model_, *optimizer_);
    publish_latest(cfg_.checkpoint.dir, checkpoint_name(step));
    apply_retention(cfg_.checkpoint.dir, cfg_.checkpoint.keep, step);
    std::printf("relora: step %ld: checkpoint %s (%.1f MB in %.2f s)\n", static_cast<long>(step), path.c_str(),
                stats.bytes / 1e6, stats.seconds);
    std::fflush(stdout);
  }
  comm_.barrier();  // no rank goes on before the file is complete
  return path;
}

void Trainer::optimizer_step(int64_t update, double* loss, double* grad_norm, double* lr) {
  const int micro = cfg_.train.micro_batch, global = cfg_.train.global_batch;
  // This rank's share of the global batch: samples [rank*G/W, (rank+1)*G/W), in order.
  const int64_t share_start = static_cast<int64_t>(comm_.rank()) * (global / comm_.world_size());
  *loss = step_->accumulate([&](int m, int32_t* inputs, int32_t* targets) {
    train_data_->read(share_start + static_cast<int64_t>(m) * micro, micro, inputs, targets);
  });
  train_data_->advance(global);
  if (!std::isfinite(*loss))
    RELORA_INPUT_ERROR("step " << update << ": the training loss is " << *loss
                               << ": the run diverged; lower optimizer.lr or set optimizer.grad_clip");
  *lr = schedule_.lr(update);
  *grad_norm = step_->apply(static_cast<float>(*lr), cfg_.optimizer.grad_clip);
}

Event Trainer::after_update(int64_t update) {
  const Event event = schedule_.event_after(update);
  switch (event) {
    case Event::start_adapters:
      start_adapters(*model_, *optimizer_, cfg_.train.seed, update);
      break;
    case Event::restart:
      merge_and_restart(*model_, *optimizer_, cfg_.relora, cfg_.train.seed, update);
      check_same_weights(comm_, model_->params(), "after the merge at step " + std::to_string(update));
      ++restarts_;
      break;
    case Event::none:
      break;
  }
  if (event == Event::start_adapters) step_->rebuild();
  return event;
}

TrainSummary Trainer::run() {
  // Collective from here on: the gradient communicator (NCCL on GPUs) connects the ranks.
  grad_comm_ = make_gradient_communicator(comm_, ops_->device(), comm_timeout_seconds(cfg_));
  step_ = std::make_unique<TrainStep>(*model_, *optimizer_, *ops_, grad_comm_ ? *grad_comm_ : comm_,
                                      cfg_.train.bucket_mb, allreduce_dtype(cfg_.train),
                                      cfg_.train.micro_batch, accumulation_,
                                      static_cast<int64_t>(cfg_.train.global_batch) * cfg_.model.seq_len);
  const bool lead = comm_.rank() == 0;
  const std::string dir = cfg_.checkpoint.dir;
  std::unique_ptr<MetricsLog> metrics;
  std::unique_ptr<Progress> progress;
  if (lead) {
    write_file_atomic(dir + "/config.yaml", config_to_yaml(cfg_));
    if (start_step_ > 0) truncate_metrics(dir + "/metrics.jsonl", start_step_);
    metrics = std::make_unique<MetricsLog>(dir + "/metrics.jsonl", start_step_ > 0);
    progress = std::make_unique<Progress>(cfg_.train.steps, cfg_.log.every);
  }
  char line[320];
  auto say = [&](const char* text) {
    if (progress) progress->message(text);
  };
  std::snprintf(line, sizeof(line),
                "relora: %.2fM parameters, %d rank%s x %d thread%s, %ld training windows, %d steps of "
                "%d x %d tokens (micro-batch %d, accumulation %d)",
                model_->num_parameters() / 1e6, comm_.world_size(), comm_.world_size() > 1 ? "s" : "",
                threads_, threads_ > 1 ? "s" : "", static_cast<long>(train_data_->num_samples()),
                cfg_.train.steps, cfg_.train.global_batch, cfg_.model.seq_len, cfg_.train.micro_batch,
                accumulation_);
  say(line);
  std::snprintf(line, sizeof(line), "relora: backend %s (%s)", ops_->device_name().c_str(),
                backend_reason_.c_str());
  say(line);
  if (comm_.world_size() > 1) {
    std::snprintf(line, sizeof(line), "relora: gradients all-reduced over %s, host values over %s",
                  step_->communicator().name(), comm_.name());
    say(line);
  }
  if (cfg_.relora.master_on_host && ops_->device() == Device::cpu)
    say("relora: relora.master_on_host has no effect on the CPU (the weights are in host memory already)");
  for (const std::string& budget : budget_lines()) say(("relora: " + budget).c_str());

  TrainSummary summary;
  summary.first_step = start_step_ + 1;
  if (start_step_ >= cfg_.train.steps) {
    std::snprintf(line, sizeof(line), "relora: the checkpoint is at step %ld, train.steps is %d: nothing to do "
                  "(raise train.steps to train on)", static_cast<long>(start_step_), cfg_.train.steps);
    say(line);
    return summary;
  }
  // The event after the step training starts from, when it has not happened: with
  // warm_start_steps 0 the adapters before the first update; and a resumed run whose final
  // update ended the warm start or a cycle (no event follows a final update), extended now.
  // Says what the ReLoRA event after update u did, and records a restart in the metrics.
  auto report = [&](Event event, int64_t u, const char* when) {
    if (event == Event::restart) {
      if (metrics) metrics->restart(u, schedule_.cycle(u + 1));
      std::snprintf(line, sizeof(line), "relora: step %ld%s: merged adapters, cycle %ld begins",
                    static_cast<long>(u), when, static_cast<long>(schedule_.cycle(u + 1)));
    } else if (event == Event::start_adapters) {
      std::snprintf(line, sizeof(line), "relora: step %ld%s: warm start done, ReLoRA cycle 1 begins",
                    static_cast<long>(u), when);
    } else {
      return;
    }
    say(line);
  };
  const Event pending = schedule_.event_after(start_step_);
  if ((pending == Event::start_adapters && !model_->relora_phase()) ||
      (pending == Event::restart && restarts_ < schedule_.restarts_done(start_step_))) {
    after_update(start_step_);
    if (start_step_ > 0) report(pending, start_step_, " (the checkpoint's final step)");
  }
  step_->rebuild();

  StopSignals stop_signals;
  const int64_t time_limit_s = parse_duration(cfg_.train.time_limit, "config", "train.time_limit");
  const int64_t tokens_per_update = static_cast<int64_t>(cfg_.train.global_batch) * cfg_.model.seq_len;
  const auto run_start = Clock::now();
  auto interval_start = run_start, last_save = run_start;
  int64_t interval_steps = 0;
  double interval_comm_ms = 0.0;
  for (int64_t u = start_step_ + 1; u <= cfg_.train.steps; ++u) {
    double loss, grad_norm, lr;
    optimizer_step(u, &loss, &grad_norm, &lr);
    summary.losses.push_back(loss);
    const bool relora_phase = schedule_.relora_phase(u);
    const GradSync& sync = step_->grad_sync();
    (relora_phase ? summary.comm_bytes_relora : summary.comm_bytes_full) = sync.bytes_per_update();
    summary.buckets_started_early = sync.started_before_finish();
    ++interval_steps;
    interval_comm_ms += step_->times().comm_ms;
    const double interval_s = seconds_since(interval_start);
    StepRecord rec;
    rec.step = u;
    rec.relora_phase = relora_phase;
    rec.cycle = schedule_.cycle(u);
    rec.loss = loss;
    rec.lr = lr;
    rec.grad_norm = grad_norm;
    rec.tokens = u * tokens_per_update;
    rec.tokens_per_s = interval_steps * tokens_per_update / interval_s;
    rec.step_ms = 1e3 * interval_s / interval_steps;
    rec.comm_bytes = sync.bytes_per_update();
    rec.comm_ms = interval_comm_ms / interval_steps;
    if (progress) progress->update(rec, seconds_since(run_start), u - start_step_);
    if (u == start_step_ + 1 || u % cfg_.log.every == 0 || u == cfg_.train.steps) {
      if (metrics) metrics->step(rec);
      interval_start = Clock::now();
      interval_steps = 0;
      interval_comm_ms = 0.0;
    }
    const auto extra_start = Clock::now();  // merge, eval and checkpoint time stays out of tokens/s
    const Event event = after_update(u);
    report(event, u, "");
    const bool eval_now = val_data_ && ((cfg_.data.eval_every > 0 && u % cfg_.data.eval_every == 0) ||
                                        u == cfg_.train.steps);
    if (eval_now) {
      EvalResult r = evaluate(*model_, *val_data_, cfg_.train.micro_batch, cfg_.data.eval_batches, comm_);
      if (metrics) metrics->eval(u, r.loss, r.perplexity);
      summary.final_val_loss = r.loss;
      std::snprintf(line, sizeof(line), "relora: step %ld: val_loss %.4f val_ppl %.2f (%ld tokens)",
                    static_cast<long>(u), r.loss, r.perplexity, static_cast<long>(r.tokens));
      say(line);
    }
    // Stop requests and timed checkpoints are agreed by all ranks (signals arrive, and
    // clocks run, at slightly different moments on each).
    // requests: a stop signal, the time limit, a timed checkpoint
    const int signal_here = g_stop_signal;  // one read: the reason below matches the request
    double requests[3] = {
        signal_here != 0 ? 1.0 : 0.0,
        time_limit_s > 0 && seconds_since(created_) >= time_limit_s ? 1.0 : 0.0,
        cfg_.checkpoint.every_minutes > 0 && seconds_since(last_save) >= 60.0 * cfg_.checkpoint.every_minutes
            ? 1.0 : 0.0};
    comm_.all_reduce(requests, 3, ReduceOp::max);
    const bool stop = (requests[0] > 0 || requests[1] > 0) && u < cfg_.train.steps;
    if ((cfg_.checkpoint.every > 0 && u % cfg_.checkpoint.every == 0) || requests[2] > 0 || stop ||
        u == cfg_.train.steps) {
      if (progress) progress->finish();
      summary.last_checkpoint = save_checkpoint_at(u);
      last_save = Clock::now();
    }
    interval_start += Clock::now() - extra_start;
    if (stop) {
      const char* why = signal_here == SIGUSR1 ? "SIGUSR1" : signal_here == SIGTERM ? "SIGTERM"
                        : requests[0] > 0      ? "a signal on another rank" : "train.time_limit";
      std::snprintf(line, sizeof(line), "relora: stopped at step %ld by %s; resume with --resume auto (or %s)",
                    static_cast<long>(u), why, summary.last_checkpoint.c_str());
      say(line);
      summary.stopped_early = true;
      break;
    }
  }
  if (progress) progress->finish();
  summary.restarts = restarts_;
  std::snprintf(line, sizeof(line), "relora: done in %.1fs; metrics in %s/metrics.jsonl",
                seconds_since(run_start), dir.c_str());
  say(line);
  return summary;
}

}  // namespace relora
