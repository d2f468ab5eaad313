// The relora executable: train, eval, bench, inspect and data. Bad input of any kind ends with one
// line on stderr and exit code 2; an internal failure with exit code 1. Under mpirun, errors
// every rank meets at start-up are agreed and printed once; an error on some ranks during
// training ends the whole job through MPI_Abort.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "backend/select.h"
#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "core/errors.h"
#include "data/loader.h"
#include "data_pipeline/data_command.h"
#include "dist/collective.h"
#include "dist/communicator.h"
#include "model/llama.h"
#include "train/bench.h"
#include "train/evaluate.h"
#include "train/threads.h"
#include "train/trainer.h"

namespace relora {
namespace {

const char* kUsage =
    "relora " RELORA_VERSION " - ReLoRA pretraining of LLaMA-style language models\n"
    "\n"
    "usage: relora <command> [options]\n"
    "\n"
    "commands:\n"
    "  train     pretrain a model from scratch with ReLoRA, or resume   (relora train --help)\n"
    "  eval      loss and perplexity on token shards                    (relora eval --help)\n"
    "  bench     time training steps on synthetic tokens: tokens/s, MFU  (relora bench --help)\n"
    "  inspect   describe a checkpoint                                  (relora inspect --help)\n"
    "  data      prepare token shards from text, inspect them           (relora data --help)\n"
    "\n"
    "Multi-rank: mpirun -np N relora train ... (see README).\n"
    "\n"
    "options:\n"
    "  --help, -h    this text\n"
    "  --version     the version\n";

const char* kTrainUsage =
    "usage: relora train --config FILE [--resume auto|PATH] [--set section.key=value]...\n"
    "\n"
    "Trains the model of FILE on data.train, evaluating on data.val every data.eval_every\n"
    "steps and at the end. Writes <checkpoint.dir>/config.yaml (the resolved config),\n"
    "metrics.jsonl and HDF5 checkpoints step_XXXXXXXX.h5 (every checkpoint.every steps,\n"
    "every checkpoint.every_minutes minutes, and at the end) with <checkpoint.dir>/latest\n"
    "naming the newest. SIGUSR1 or SIGTERM (or train.time_limit) finishes the current step,\n"
    "writes a checkpoint and exits 0. Without --resume, checkpoint.dir must hold no checkpoints.\n"
    "\n"
    "options:\n"
    "  --config FILE           YAML config (see configs/)\n"
    "  --resume auto|PATH      continue from a checkpoint: auto takes <checkpoint.dir>/latest\n"
    "                          (or the newest complete one before it) and starts fresh if\n"
    "                          there is none\n"
    "  --set section.key=VAL   override one key; VAL is YAML (e.g. relora.targets=[q_proj,v_proj]);\n"
    "                          repeatable, applied in order after FILE\n"
    "  --help, -h              this text\n"
    "\n"
    "config keys (section.key  default  meaning):\n";

const char* kEvalUsage =
    "usage: relora eval (--config FILE | --checkpoint PATH) --data PATTERN [--batches N]\n"
    "                   [--set section.key=value]...\n"
    "\n"
    "Prints one JSON line {\"loss\", \"perplexity\", \"tokens\"}: the mean next-token loss over\n"
    "every window of every shard matching PATTERN (windows of model.seq_len+1 tokens at\n"
    "stride model.seq_len), or over the first N batches of train.micro_batch windows.\n"
    "With --checkpoint the model (and its config) come from the checkpoint, adapters\n"
    "applied, except train.device, train.devices and train.threads: this machine's\n"
    "defaults unless --set gives them; with --config alone the model is freshly\n"
    "initialised from train.seed.\n"
    "\n"
    "options:\n"
    "  --checkpoint PATH       a step_*.h5 checkpoint\n"
    "  --config FILE           YAML config (without --checkpoint)\n"
    "  --data PATTERN          glob of token shards (quote it)\n"
    "  --batches N             evaluate only the first N batches (default: all windows)\n"
    "  --set section.key=VAL   override a config key (e.g. train.micro_batch, train.threads)\n"
    "  --help, -h              this text\n";

const char* kBenchUsage =
    "usage: relora bench --config FILE [--steps N] [--warmup N] [--phase full|relora]\n"
    "                    [--profile] [--set section.key=value]...\n"
    "\n"
    "Times training steps of FILE's model on synthetic tokens (no data files are read) and\n"
    "prints one JSON line: tokens_per_s, step_ms and its split (forward_ms, backward_ms,\n"
    "optimizer_ms, comm_ms), model_flops_per_token, achieved_gflops, peak_gflops (CPU: a\n"
    "2048^3 sgemm through the same BLAS and threads; GPU: a bf16 8192^3 cuBLAS product; timed\n"
    "in the same run), train_product_gflops (the same product through the training products:\n"
    "the CPU's sgemm again; on a GPU fp32 tensors in train.matmul precision), mfu (achieved /\n"
    "peak), threads, world_size, device, peak_mem_bytes (max RSS; GPU: the device memory\n"
    "the run's tensors hold) and device_reserved_bytes (GPU: the block reserved for them; in\n"
    "the ReLoRA phase as much as a run resumed in it reserves; 0 on the CPU). A step is one\n"
    "micro-batch of train.micro_batch sequences of model.seq_len tokens per rank: forward,\n"
    "backward, the gradient all-reduce, clipping and AdamW at optimizer.lr. Under mpirun\n"
    "every rank runs steps, tokens are counted over all ranks and rank 0 prints.\n"
    "\n"
    "options:\n"
    "  --config FILE           YAML config (see configs/); data.* keys are not used\n"
    "  --steps N               timed steps (default 10)\n"
    "  --warmup N              untimed steps before them (default 2)\n"
    "  --phase full|relora     full-rank training (default), or the ReLoRA phase: targets\n"
    "                          frozen with adapters, as after relora.warm_start_steps\n"
    "  --profile               also time every op of rank 0's timed steps (each one\n"
    "                          synchronised, which slows the steps) and print a table to\n"
    "                          stderr: ms per step, share, calls, GFLOP/s of the products\n"
    "  --set section.key=VAL   override a config key (e.g. train.micro_batch, train.threads)\n"
    "  --help, -h              this text\n";

const char* kInspectUsage =
    "usage: relora inspect PATH\n"
    "\n"
    "Describes the checkpoint PATH: step, phase, cycle, restarts, world size, data position,\n"
    "every tensor with its shape, parameter counts and the stored config.\n";

struct Args {
  std::string command;
  std::string config, data, resume, checkpoint, path;
  int64_t batches = 0;
  BenchOptions bench;
  std::vector<std::string> sets;
  bool help = false;
};

// An integer in [min, max] (min is 0 or 1), or an InputError naming the flag.
int64_t parse_integer(const std::string& flag, const std::string& value, int64_t min,
                      int64_t max = INT64_MAX) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || v < min || v > max || errno == ERANGE)
    RELORA_INPUT_ERROR(flag << " " << value << ": expected " << (min > 0 ? "a positive" : "a non-negative")
                            << " integer" << (max < INT64_MAX ? " up to " + std::to_string(max) : ""));
  return v;
}

// --phase full|relora: true for relora.
bool parse_phase(const std::string& phase) {
  if (phase != "full" && phase != "relora") RELORA_INPUT_ERROR("--phase " << phase << ": expected full or relora");
  return phase == "relora";
}

Args parse_args(int argc, char** argv) {
  Args a;
  if (argc < 2) return a;
  a.command = argv[1];
  // before the options, so that a mistyped command is named as such, --help included
  const char* const kCommands[] = {"train", "eval", "bench", "inspect", "--help", "-h", "help", "--version"};
  if (std::none_of(std::begin(kCommands), std::end(kCommands), [&](const char* c) { return a.command == c; }))
    RELORA_INPUT_ERROR("unknown command '" << a.command
                       << "' (commands: train, eval, bench, inspect, data; see relora --help)");
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) RELORA_INPUT_ERROR(arg << " needs a value (see relora " << a.command << " --help)");
      return argv[++i];
    };
    const bool train = a.command == "train", eval = a.command == "eval", bench = a.command == "bench";
    if (arg == "--help" || arg == "-h") a.help = true;
    else if (arg == "--config" && (train || eval || bench)) a.config = value();
    else if (arg == "--set" && (train || eval || bench)) a.sets.push_back(value());
    else if (arg == "--steps" && bench) a.bench.steps = static_cast<int>(parse_integer(arg, value(), 1, INT32_MAX));
    else if (arg == "--warmup" && bench) a.bench.warmup = static_cast<int>(parse_integer(arg, value(), 0, INT32_MAX));
    else if (arg == "--phase" && bench) a.bench.relora_phase = parse_phase(value());
    else if (arg == "--profile" && bench) a.bench.profile = true;
    else if (arg == "--resume" && train) a.resume = value();
    else if (arg == "--data" && eval) a.data = value();
    else if (arg == "--checkpoint" && eval) a.checkpoint = value();
    else if (arg == "--batches" && eval) a.batches = parse_integer(arg, value(), 1);
    else if (a.command == "inspect" && arg[0] != '-' && a.path.empty()) a.path = arg;
    else if (a.command == "inspect" && arg[0] != '-')
      RELORA_INPUT_ERROR("relora inspect takes one checkpoint path; '" << a.path << "' and '" << arg
                         << "' given (run it once per checkpoint)");
    else RELORA_INPUT_ERROR("unknown option '" << arg << "' for 'relora " << a.command
                                               << "' (see relora " << a.command << " --help)");
  }
  return a;
}

std::string stored_config_origin(const Args& a) { return a.checkpoint + " (its stored config)"; }

Config load_required_config(const Args& a) {
  if (a.config.empty())
    RELORA_INPUT_ERROR("relora " << a.command << ": --config FILE is required (e.g. --config configs/tiny.yaml)");
  return load_config(a.config, a.sets, a.command == "train" ? ConfigUse::training : ConfigUse::measuring);
}

// The command's config with --set applied: --config's, or eval --checkpoint's stored one
// (its run state in *state) with this machine's settings — train.device, train.devices and
// train.threads at their defaults unless --set gives them — not the training machine's.
Config command_config(const Args& a, RunState* state) {
  if (a.command != "eval" || a.checkpoint.empty()) return load_required_config(a);
  *state = read_run_state(a.checkpoint);
  const Config defaults;
  std::vector<std::string> sets = {"train.device=" + defaults.train.device,
                                   "train.devices=" + std::to_string(defaults.train.devices),
                                   "train.threads=" + std::to_string(defaults.train.threads)};
  sets.insert(sets.end(), a.sets.begin(), a.sets.end());  // later ones win
  return config_from_yaml_text(state->config_yaml, stored_config_origin(a), sets, ConfigUse::measuring);
}

// Prints the error with the rank; in a multi-rank job ends every rank (MPI_Abort), else
// rethrows for main to return the exit code. Call it from a catch block.
void abort_job(Communicator& comm, const std::exception& e) {
  if (comm.world_size() <= 1) throw;
  const int code = dynamic_cast<const InputError*>(&e) ? 2 : 1;
  print_error(comm, e.what(), code, true);
  comm.abort(code);
}

int cmd_train(Communicator& comm, const Args& a) {
  std::unique_ptr<Trainer> trainer;
  collectively(comm, [&] { trainer = std::make_unique<Trainer>(load_required_config(a), comm); });
  trainer->resume(a.resume);
  collectively(comm, [&] { trainer->check_ranks_agree(); });
  try {
    trainer->run();
  } catch (const std::exception& e) {
    // End the job before the trainer unwinds: its gradient buckets may still be the
    // targets of all-reduces in flight on this rank.
    abort_job(comm, e);
  }
  return 0;
}

int cmd_eval(Communicator& comm, const Args& a) {
  std::unique_ptr<Loader> data;
  std::unique_ptr<Ops> ops;
  std::unique_ptr<Llama> model;
  Config cfg;
  collectively(comm, [&] {
    if (a.data.empty()) RELORA_INPUT_ERROR("relora eval: --data PATTERN is required (a glob of token shards)");
    if (!a.checkpoint.empty() && !a.config.empty())
      RELORA_INPUT_ERROR("relora eval: give --checkpoint or --config, not both (a checkpoint carries its config)");
    if (a.checkpoint.empty() && a.config.empty())
      RELORA_INPUT_ERROR("relora eval: give --checkpoint PATH (a training checkpoint) or --config FILE "
                         "(a fresh model)");
    RunState state;
    cfg = command_config(a, &state);
    if (!a.checkpoint.empty()) {
      std::string changed;
      for (const std::string& key :
           incompatible_keys(config_from_yaml_text(state.config_yaml, stored_config_origin(a)), cfg))
        changed += (changed.empty() ? "" : "; ") + key;
      if (!changed.empty())
        RELORA_INPUT_ERROR("relora eval: --set cannot change the checkpoint's " << changed
                           << " (they fix its tensors)");
    }
    configure_threads(cfg.train.threads);
    ops = make_backend(cfg.train.device, cfg.train.devices, cfg.train.matmul, comm.local_rank(),
                       comm.local_size()).ops;
    data = std::make_unique<Loader>(a.data, cfg.model.vocab_size, cfg.model.seq_len, cfg.train.seed, false,
                                    comm.local_rank(), comm.local_size());
    model = model_for_eval(cfg, *ops, a.checkpoint, state);
  });
  EvalResult r = evaluate(*model, *data, cfg.train.micro_batch, a.batches, comm);
  if (comm.rank() == 0)
    std::printf("{\"loss\":%.6f,\"perplexity\":%.4f,\"tokens\":%ld}\n", r.loss, r.perplexity,
                static_cast<long>(r.tokens));
  return 0;
}

int cmd_bench(Communicator& comm, const Args& a) {
  Config cfg;
  collectively(comm, [&] {
    cfg = load_required_config(a);
    check_bench_options(cfg, a.bench);
  });
  BenchResult r;
  try {
    r = run_bench(cfg, comm, a.bench);
  } catch (const std::exception& e) {
    abort_job(comm, e);  // gradient all-reduces may be in flight on this rank
  }
  if (comm.rank() == 0) {
    std::printf("%s\n", bench_json(r).c_str());
    std::fflush(stdout);
    if (a.bench.profile) std::fprintf(stderr, "%s", profile_table(r).c_str());
  }
  return 0;
}

int cmd_inspect(const Args& a) {
  if (a.path.empty()) RELORA_INPUT_ERROR("relora inspect: give a checkpoint path (see relora inspect --help)");
  std::printf("%s", describe_checkpoint(a.path).c_str());
  return 0;
}

// Commands and --help that need no communicator (no MPI start-up for them); -1 otherwise.
int run_local(const Args& a) {
  if (a.command.empty()) {  // a mistake: the usage goes to stderr
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  if (a.command == "--help" || a.command == "-h" || a.command == "help") {
    std::printf("%s", kUsage);
    return 0;
  }
  if (a.command == "--version") {
    std::printf("relora %s\n", RELORA_VERSION);
    return 0;
  }
  if (a.help) {
    if (a.command == "train") std::printf("%s%s", kTrainUsage, config_keys_help().c_str());
    if (a.command == "eval") std::printf("%s", kEvalUsage);
    if (a.command == "bench") std::printf("%s", kBenchUsage);
    if (a.command == "inspect") std::printf("%s", kInspectUsage);
    return 0;
  }
  if (a.command == "inspect") return cmd_inspect(a);
  return -1;  // train, eval, bench
}

}  // namespace
}  // namespace relora

int main(int argc, char** argv) {
  using namespace relora;
  Args args;
  try {
    if (argc >= 2 && std::strcmp(argv[1], "data") == 0) return data_command(argc - 2, argv + 2);
    args = parse_args(argc, argv);
    const int code = run_local(args);
    if (code >= 0) return code;
  } catch (const InputError& e) {
    std::fprintf(stderr, "relora: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "relora: internal error: %s\n", e.what());
    return 1;
  }
  // A GPU chosen before MPI_Init (bind_gpu_before_mpi); any problem with the config is
  // reported by the command itself, collectively, once MPI runs.
  if (launched_by_mpi() && launcher_local_rank() >= 0) {
    try {
      RunState state;
      const Config cfg = command_config(args, &state);
      bind_gpu_before_mpi(cfg.train.device, cfg.train.devices);
    } catch (const std::exception&) {
    }
  }
  std::unique_ptr<Communicator> comm;
  try {
    comm = make_communicator();
  } catch (const InputError& e) {  // the MPI plugin cannot be loaded
    std::fprintf(stderr, "relora: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "relora: internal error: cannot start the communicator: %s\n", e.what());
    return 1;
  }
  try {
    if (args.command == "bench") return cmd_bench(*comm, args);
    return args.command == "train" ? cmd_train(*comm, args) : cmd_eval(*comm, args);
  } catch (const AgreedExit& e) {
    return e.exit_code;
  } catch (const std::exception& e) {
    const int code = dynamic_cast<const InputError*>(&e) ? 2 : 1;
    print_error(*comm, e.what(), code, true);
    if (comm->world_size() > 1) comm->abort(code);
    return code;
  }
}
