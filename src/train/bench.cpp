// The benchmark: synthetic tokens through TrainStep, stage times, FLOPs, the backend's peak
// (Ops::measure_peak_flops), memory.
#include "train/bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include "backend/ops.h"
#include "backend/select.h"
#include "core/errors.h"
#include "core/rng.h"
#include "model/llama.h"
#include "model/memory_budget.h"
#include "optim/adamw.h"
#include "relora/restart.h"
#include "train/step.h"
#include "train/threads.h"

namespace relora {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

int64_t peak_rss_bytes() {
  struct rusage usage = {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

}  // namespace

void check_bench_options(const Config& cfg, const BenchOptions& options) {
  if (options.steps < 1 || options.warmup < 0)
    RELORA_INPUT_ERROR("relora bench: --steps " << options.steps << " --warmup " << options.warmup
                                                << ": need at least 1 step and no negative warm-up");
  if (options.relora_phase && cfg.relora.rank == 0)
    RELORA_INPUT_ERROR(cfg.source << ": relora.rank is 0, so there is no ReLoRA phase to time; "
                                     "set relora.rank or use --phase full");
}

BenchResult run_bench(const Config& cfg, Communicator& comm, const BenchOptions& options) {
  check_bench_options(cfg, options);
  const int world = comm.world_size(), micro = cfg.train.micro_batch, T = cfg.model.seq_len;
  const int V = cfg.model.vocab_size;
  BenchResult r;
  r.threads = configure_threads(cfg.train.threads);
  r.world_size = world;

  r.phase = options.relora_phase ? "relora" : "full";
  r.tokens_per_step = static_cast<int64_t>(world) * micro * T;
  r.model_flops_per_token = model_flops_per_token(cfg.model, cfg.relora, options.relora_phase);

  std::unique_ptr<Ops> backend = make_backend(cfg.train.device, cfg.train.devices, cfg.train.matmul,
                                              comm.local_rank(), comm.local_size()).ops;
  std::unique_ptr<TimedOps> timed;
  if (options.profile && comm.rank() == 0) timed = std::make_unique<TimedOps>(*backend);
  Ops* const ops = timed ? timed.get() : backend.get();
  r.device = ops->device_name();
  r.matmul = ops->device() == Device::cpu ? "fp32" : cfg.train.matmul;
  // The FLOP probes, all ranks at once (together they share the machine). On a GPU before
  // the arena is reserved: their operands (768 MiB, 1 GiB with bf16 copies) need not fit
  // beside a run sized to the device. On the CPU after the steps, so that the max RSS does
  // not count their 48 MB.
  double peaks[2] = {0.0, 0.0};
  const auto probe = [&] {
    comm.barrier();
    peaks[0] = ops->measure_peak_flops() / 1e9;
    peaks[1] = ops->measure_training_product_flops() / 1e9;
    comm.all_reduce(peaks, 2, ReduceOp::sum);
  };
  const bool probe_first = ops->device() == Device::cuda;
  if (probe_first) probe();
  // The ReLoRA phase reserves what a run resumed in it does (it starts the same way: the
  // full-rank model with gradients, then the adapters), not the warm start's peak.
  const bool staging = bf16_staging(cfg.train, world);
  const ActivationStorage storage = activation_storage(cfg.train);
  const int64_t peak_memory = options.relora_phase
                                  ? resume_peak_bytes(cfg.model, cfg.relora, *ops, micro, storage, staging)
                                  : peak_bytes(cfg.model, cfg.relora, *ops, micro, storage, staging);
  check_host_memory(*ops, peak_memory, comm.local_size(), storage);  // too big for the node: exit 2, as train
  reserve_device_arena(*ops, peak_memory, world, storage);
  Llama model(cfg.model, cfg.relora, *ops, micro, storage);
  model.init_weights(cfg.train.seed);
  AdamW optimizer(cfg.optimizer, *ops);
  if (options.relora_phase) start_adapters(model, optimizer, cfg.train.seed, 0);
  std::unique_ptr<Communicator> grad_comm =
      make_gradient_communicator(comm, ops->device(), comm_timeout_seconds(cfg));
  TrainStep step(model, optimizer, *ops, grad_comm ? *grad_comm : comm, cfg.train.bucket_mb,
                 allreduce_dtype(cfg.train), micro, 1, r.tokens_per_step);
  step.rebuild();

  // Step s, rank k: micro windows of T+1 uniform tokens; inputs are a window's first T,
  // targets its last T.
  int64_t step_index = 0;
  const MicroBatchSource synthetic = [&](int, int32_t* inputs, int32_t* targets) {
    const RngKey key{cfg.train.seed, RngPurpose::test, tensor_id("bench.tokens"),
                     static_cast<uint64_t>(step_index)};
    const int64_t first = static_cast<int64_t>(comm.rank()) * micro * (T + 1);
    for (int b = 0; b < micro; ++b)
      for (int t = 0; t <= T; ++t) {
        const int64_t i = first + static_cast<int64_t>(b) * (T + 1) + t;
        const int32_t token = std::min(V - 1, static_cast<int32_t>(uniform_at(key, i) * V));
        if (t < T) inputs[static_cast<int64_t>(b) * T + t] = token;
        if (t > 0) targets[static_cast<int64_t>(b) * T + t - 1] = token;
      }
  };
  const float lr = cfg.optimizer.lr;
  for (; step_index < options.warmup; ++step_index) {
    step.accumulate(synthetic);
    step.apply(lr, cfg.optimizer.grad_clip);
  }
  comm.barrier();
  if (timed) timed->reset();
  double stages[4] = {0.0, 0.0, 0.0, 0.0};  // forward, backward, optimizer, comm
  const auto start = Clock::now();
  for (int s = 0; s < options.steps; ++s, ++step_index) {
    step.accumulate(synthetic);
    step.apply(lr, cfg.optimizer.grad_clip);
    const StepTimes& t = step.times();
    stages[0] += t.forward_ms;
    stages[1] += t.backward_ms;
    stages[2] += t.optimizer_ms;
    stages[3] += t.comm_ms;
  }
  double wall_s = seconds_since(start);
  if (timed) r.profile = timed->times();
  // Memory: the host's peak RSS, or on a GPU the device memory the run holds (allocated
  // once before the first step; nothing is freed inside steps).
  const int64_t rss = ops->device() == Device::cuda ? device_memory()->bytes_in_use() : peak_rss_bytes();
  double largest_reserved =
      ops->device() == Device::cuda ? static_cast<double>(device_memory()->reserved_bytes()) : 0.0;

  comm.all_reduce(stages, 4, ReduceOp::avg);
  comm.all_reduce(&wall_s, 1, ReduceOp::max);
  double largest_rss = static_cast<double>(rss);
  comm.all_reduce(&largest_rss, 1, ReduceOp::max);
  comm.all_reduce(&largest_reserved, 1, ReduceOp::max);
  if (!probe_first) probe();
  const double peak = peaks[0];
  r.train_product_gflops = peaks[1];

  r.steps = options.steps;
  r.step_ms = 1e3 * wall_s / options.steps;
  r.forward_ms = stages[0] / options.steps;
  r.backward_ms = stages[1] / options.steps;
  r.optimizer_ms = stages[2] / options.steps;
  r.comm_ms = stages[3] / options.steps;
  r.tokens_per_s = static_cast<double>(r.tokens_per_step) * options.steps / wall_s;
  r.achieved_gflops = static_cast<double>(r.model_flops_per_token) * r.tokens_per_s / 1e9;
  r.peak_gflops = peak;
  r.mfu = r.achieved_gflops / r.peak_gflops;
  r.peak_mem_bytes = static_cast<int64_t>(largest_rss);
  r.device_reserved_bytes = static_cast<int64_t>(largest_reserved);
  return r;
}

std::string bench_json(const BenchResult& r) {
  char line[1100];
  std::snprintf(
      line, sizeof(line),
      "{\"phase\":\"%s\",\"tokens_per_step\":%ld,\"tokens_per_s\":%.1f,\"step_ms\":%.2f,"
      "\"forward_ms\":%.2f,\"backward_ms\":%.2f,\"optimizer_ms\":%.2f,\"comm_ms\":%.2f,"
      "\"model_flops_per_token\":%ld,\"achieved_gflops\":%.2f,\"peak_gflops\":%.2f,"
      "\"train_product_gflops\":%.2f,\"mfu\":%.4f,"
      "\"threads\":%d,\"world_size\":%d,\"device\":\"%s\",\"matmul\":\"%s\",\"peak_mem_bytes\":%ld,"
      "\"device_reserved_bytes\":%ld}",
      r.phase.c_str(), static_cast<long>(r.tokens_per_step), r.tokens_per_s, r.step_ms,
      r.forward_ms, r.backward_ms, r.optimizer_ms, r.comm_ms,
      static_cast<long>(r.model_flops_per_token), r.achieved_gflops, r.peak_gflops,
      r.train_product_gflops, r.mfu,
      r.threads, r.world_size, r.device.c_str(), r.matmul.c_str(),
      static_cast<long>(r.peak_mem_bytes),
      static_cast<long>(r.device_reserved_bytes));
  return line;
}

std::string profile_table(const BenchResult& r) {
  double total_s = 0.0;
  for (const OpTime& t : r.profile) total_s += t.seconds;
  std::string out;
  char line[320];
  std::snprintf(line, sizeof(line),
                "profile of rank 0, per timed step: every op synchronised, so the ops add up to "
                "%.2f ms (step_ms %.2f); attention's GFLOP/s count the whole T x T, as MFU does\n"
                "  ms/step   share  calls/step  GFLOP/s  op\n",
                1e3 * total_s / std::max(r.steps, 1), r.step_ms);
  out += line;
  for (const OpTime& t : r.profile) {
    const double gflops = t.flops > 0.0 && t.seconds > 0.0 ? t.flops / t.seconds / 1e9 : 0.0;
    std::snprintf(line, sizeof(line), "%9.3f  %5.1f%%  %10.1f  %7s  %s\n",
                  1e3 * t.seconds / std::max(r.steps, 1),
                  total_s > 0.0 ? 100.0 * t.seconds / total_s : 0.0,
                  static_cast<double>(t.calls) / std::max(r.steps, 1),
                  gflops > 0.0 ? std::to_string(static_cast<long>(gflops + 0.5)).c_str() : "-",
                  t.op.c_str());
    out += line;
  }
  return out;
}

}  // namespace relora
