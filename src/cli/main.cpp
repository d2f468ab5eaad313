// The relora executable: subcommands train and eval. Bad input of any kind ends with one
// line on stderr and exit code 2; an internal failure with exit code 1.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "config/config.h"
#include "core/errors.h"
#include "data/loader.h"
#include "dist/collective.h"
#include "dist/communicator.h"
#include "model/llama.h"
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
    "  train   pretrain a model from scratch with ReLoRA      (relora train --help)\n"
    "  eval    loss and perplexity on token shards             (relora eval --help)\n"
    "\n"
    "options:\n"
    "  --help, -h    this text\n"
    "  --version     the version\n";

const char* kTrainUsage =
    "usage: relora train --config FILE [--set section.key=value]...\n"
    "\n"
    "Trains the model of FILE on data.train, evaluating on data.val every data.eval_every\n"
    "steps and at the end. Writes <checkpoint.dir>/config.yaml (the resolved config) and\n"
    "<checkpoint.dir>/metrics.jsonl.\n"
    "\n"
    "options:\n"
    "  --config FILE           YAML config (see configs/)\n"
    "  --set section.key=VAL   override one key; VAL is YAML (e.g. relora.targets=[q_proj,v_proj]);\n"
    "                          repeatable, applied in order after FILE\n"
    "  --help, -h              this text\n"
    "\n"
    "config keys (section.key  default  meaning):\n";

const char* kEvalUsage =
    "usage: relora eval --config FILE --data PATTERN [--batches N] [--set section.key=value]...\n"
    "\n"
    "Prints one JSON line {\"loss\", \"perplexity\", \"tokens\"}: the mean next-token loss over\n"
    "every window of every shard matching PATTERN (windows of model.seq_len+1 tokens at\n"
    "stride model.seq_len), or over the first N batches of train.micro_batch windows.\n"
    "The model is freshly initialised from train.seed.\n"
    "\n"
    "options:\n"
    "  --config FILE           YAML config (model shape, seed, micro batch)\n"
    "  --data PATTERN          glob of token shards (quote it)\n"
    "  --batches N             evaluate only the first N batches (default: all windows)\n"
    "  --set section.key=VAL   override one config key, as for train\n"
    "  --help, -h              this text\n";

struct Args {
  std::string command;
  std::string config;
  std::string data;
  int64_t batches = 0;
  std::vector<std::string> sets;
  bool help = false;
};

int64_t parse_positive(const std::string& flag, const std::string& value) {
  char* end = nullptr;
  long long v = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || v <= 0)
    RELORA_INPUT_ERROR(flag << " " << value << ": expected a positive integer");
  return v;
}

Args parse_args(int argc, char** argv) {
  Args a;
  if (argc < 2) return a;
  a.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) RELORA_INPUT_ERROR(arg << " needs a value (see relora " << a.command << " --help)");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") a.help = true;
    else if (arg == "--config") a.config = value();
    else if (arg == "--set") a.sets.push_back(value());
    else if (arg == "--data" && a.command == "eval") a.data = value();
    else if (arg == "--batches" && a.command == "eval") a.batches = parse_positive(arg, value());
    else RELORA_INPUT_ERROR("unknown option '" << arg << "' for 'relora " << a.command
                                               << "' (see relora " << a.command << " --help)");
  }
  return a;
}

Config load_required_config(const Args& a) {
  if (a.config.empty())
    RELORA_INPUT_ERROR("relora " << a.command << ": --config FILE is required (e.g. --config configs/tiny.yaml)");
  return load_config(a.config, a.sets);
}

// Prints the error with the rank; in a multi-rank job ends every rank (MPI_Abort), else
// rethrows for main to return the exit code.
void abort_job(Communicator& comm, const std::exception& e) {
  if (comm.world_size() <= 1) throw;
  const int code = dynamic_cast<const InputError*>(&e) ? 2 : 1;
  print_error(comm, e.what(), code, true);
  comm.abort(code);
}

int cmd_train(Communicator& comm, const Args& a) {
  std::unique_ptr<Trainer> trainer;
  collectively(comm, [&] { trainer = std::make_unique<Trainer>(load_required_config(a), comm); });
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
    cfg = load_required_config(a);
    configure_threads(cfg.train.threads);
    ops = make_cpu_ops();
    data = std::make_unique<Loader>(a.data, cfg.model.vocab_size, cfg.model.seq_len, cfg.train.seed, false);
    model = std::make_unique<Llama>(cfg.model, cfg.relora, *ops, cfg.train.micro_batch);
    model->init_weights(cfg.train.seed);
  });
  EvalResult r = evaluate(*model, *data, cfg.train.micro_batch, a.batches, comm);
  if (comm.rank() == 0)
    std::printf("{\"loss\":%.6f,\"perplexity\":%.4f,\"tokens\":%ld}\n", r.loss, r.perplexity,
                static_cast<long>(r.tokens));
  return 0;
}

// Commands and --help that need no communicator (no MPI start-up for a help text).
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
  if (a.command == "train" && a.help) {
    std::printf("%s%s", kTrainUsage, config_keys_help().c_str());
    return 0;
  }
  if (a.command == "eval" && a.help) {
    std::printf("%s", kEvalUsage);
    return 0;
  }
  if (a.command != "train" && a.command != "eval")
    RELORA_INPUT_ERROR("unknown command '" << a.command << "' (commands: train, eval; see relora --help)");
  return -1;
}

}  // namespace
}  // namespace relora

// Errors before the communicator exists (command line) and errors every rank meets alike at
// start-up exit cleanly with one message; an error on some ranks during training ends the
// whole job through MPI_Abort, so no rank is left waiting.
int main(int argc, char** argv) {
  using namespace relora;
  Args args;
  try {
    args = parse_args(argc, argv);
    const int code = run_local(args);
    if (code >= 0) return code;
  } catch (const InputError& e) {
    std::fprintf(stderr, "relora: error: %s\n", e.what());
    return 2;
  }
  std::unique_ptr<Communicator> comm;
  try {
    comm = make_communicator();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "relora: internal error: cannot start the communicator: %s\n", e.what());
    return 1;
  }
  try {
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
