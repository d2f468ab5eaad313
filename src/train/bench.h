// `relora bench`: training steps of a config's model on synthetic tokens (no data files),
// timed by stage, with the model FLOPs utilisation against the backend's peak
// (Ops::measure_peak_flops). A bench step is one micro-batch per rank (global batch = world x micro_batch): the
// trainer's step code (TrainStep) with its real gradient all-reduce, at the config's lr.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/timed_ops.h"
#include "config/config.h"
#include "dist/communicator.h"

namespace relora {

struct BenchOptions {
  int steps = 10;            // timed steps
  int warmup = 2;            // untimed steps before them
  bool relora_phase = false;  // time the ReLoRA phase (adapters on) instead of the full-rank one
  bool profile = false;       // time every op of the timed steps (TimedOps), on rank 0
};

struct BenchResult {
  std::string phase;            // "full" or "relora"
  int64_t tokens_per_step = 0;  // target tokens of one step over all ranks
  double tokens_per_s = 0.0;    // over all ranks
  double step_ms = 0.0;         // mean wall time of a step (slowest rank)
  double forward_ms = 0.0, backward_ms = 0.0, optimizer_ms = 0.0, comm_ms = 0.0;  // mean over ranks
  int64_t model_flops_per_token = 0;  // model_flops_per_token() for the phase
  double achieved_gflops = 0.0;       // model_flops_per_token * tokens_per_s / 1e9
  double peak_gflops = 0.0;           // Ops::measure_peak_flops, summed over ranks
  double train_product_gflops = 0.0;  // Ops::measure_training_product_flops, summed over ranks
  double mfu = 0.0;                   // achieved / peak
  int threads = 0;                    // per rank
  int world_size = 0;
  std::string device;                 // Ops::device_name(): "cpu (<model>)", "cuda:0 (<GPU>)"
  std::string matmul;                 // the products' precision: train.matmul, "fp32" on the CPU
  int64_t peak_mem_bytes = 0;         // max RSS (CPU) or device memory held (CUDA), largest rank
  int64_t device_reserved_bytes = 0;  // the device arena the run reserved (0 on the CPU), largest rank
  int steps = 0;                      // timed steps
  std::vector<OpTime> profile;        // rank 0's op times over the timed steps (--profile)
};

// Throws InputError when the config cannot be benchmarked as asked (a ReLoRA phase with
// relora.rank 0). Local; run_bench calls it too.
void check_bench_options(const Config& cfg, const BenchOptions& options);

// Collective: every rank runs the steps; every rank returns the same result.
BenchResult run_bench(const Config& cfg, Communicator& comm, const BenchOptions& options);

// The result as one JSON object on one line (no newline).
std::string bench_json(const BenchResult& r);
// The --profile table: per op, ms per step, share, calls per step, GFLOP/s of products.
std::string profile_table(const BenchResult& r);

}  // namespace relora
