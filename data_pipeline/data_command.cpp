// The `relora data` subcommands: argument parsing and help texts (see data_command.h).
#include "data_pipeline/data_command.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/errors.h"
#include "data_pipeline/inspect.h"
#include "data_pipeline/prepare.h"

namespace relora {
namespace {

const char* kDataUsage =
    "usage: relora data <command> [options]\n"
    "\n"
    "commands:\n"
    "  prepare   text (plain or JSONL, optionally gzipped) -> tokenizer + llm.c token shards\n"
    "            (relora data prepare --help)\n"
    "  inspect   check prepared shards against their manifest, print counts, decode tokens\n"
    "            (relora data inspect --help)\n";

const char* kPrepareUsage =
    "usage: relora data prepare --input PATH... --out DIR [options]\n"
    "\n"
    "Turns text into a SentencePiece tokenizer and llm.c token shards for relora train.\n"
    "Writes to DIR:\n"
    "  tokenizer.model                 the tokenizer (trained here, or a copy of --tokenizer)\n"
    "  train_000000.bin ...            training shards, --shard-tokens tokens each (the last\n"
    "  val_000000.bin ...              fewer); uint16 tokens when the vocabulary has at most\n"
    "                                  65536 pieces, else uint32\n"
    "  manifest.json                   inputs, tokenizer, split, counts of documents and tokens,\n"
    "                                  and a CRC-32 per shard; written last\n"
    "Every document starts with BOS (a tokenizer without BOS, like T5's, ends it with EOS\n"
    "instead). Documents, not tokens, are split between train and val. Shards are written\n"
    "under a temporary name and renamed when complete; shards of an earlier run in DIR that\n"
    "this run does not write are removed.\n"
    "\n"
    "input:\n"
    "  --input PATH...        files, directories (read recursively, in name order, skipping\n"
    "                         hidden entries) or quoted glob patterns; repeatable. Names ending\n"
    "                         in .jsonl or .jsonl.gz are JSONL, anything else is plain text;\n"
    "                         gzip is recognised by content. A file with a NUL byte in its\n"
    "                         first 8000 bytes is binary and skipped; a file reached twice (a\n"
    "                         symlink to one already read) is read once.\n"
    "  --exclude GLOB         skip files and directories whose name matches GLOB (e.g. '*.dat');\n"
    "                         repeatable\n"
    "  --doc-separator S      text: a line holding only S ends a document (e.g. '%' for fortune\n"
    "                         files); default: a blank line (empty or only whitespace)\n"
    "  --doc-per-file         text: each file is one document, byte for byte\n"
    "  --text-field NAME      JSONL: the string field holding the document (default: text)\n"
    "  --skip-bad             skip bad lines (invalid UTF-8 or JSON, no text field) and count\n"
    "                         them; in plain text the document holding the line is dropped.\n"
    "                         Without it the first bad line stops the run with its file:line.\n"
    "\n"
    "tokenizer:\n"
    "  --tokenizer MODEL      use this SentencePiece .model as it is (e.g. LLaMA's or T5's)\n"
    "  --vocab-size N         without --tokenizer: train a BPE model of N pieces (default\n"
    "                         32000) with byte fallback, identity normalisation, whitespace kept\n"
    "                         and digits split, so decode(encode(text)) == text byte for byte\n"
    "  --sample-mb N          train it on a uniform sample of the training documents' lines\n"
    "                         that fits N MB of memory (default 100)\n"
    "\n"
    "output:\n"
    "  --out DIR              output directory (created if needed)\n"
    "  --val-fraction F       share of documents for validation, 0 < F < 1 (default 0.005);\n"
    "                         at least one document always goes there\n"
    "  --seed N               seed of the split and of the tokenizer's sample (default 1234)\n"
    "  --shard-tokens N       tokens per shard (default 100000000)\n"
    "  --jobs N               encoding threads (default: every core this process may use)\n"
    "  --help, -h             this text\n"
    "\n"
    "Memory stays bounded: documents stream through (one document is held whole, at most\n"
    "64 MiB). A progress line shows bytes read, documents, tokens and throughput; the summary\n"
    "gives the encoding throughput in MB/s of text.\n";

const char* kInspectUsage =
    "usage: relora data inspect DIR_OR_SHARD [--tokens N] [--tokenizer MODEL]\n"
    "\n"
    "Validates token shards (header, file size, every token inside the vocabulary) and prints\n"
    "their token and document counts and CRC-32s. For a directory with a manifest.json it\n"
    "also checks that every listed shard is there with its token count and checksum, that no\n"
    "unlisted train_/val_ shard is, and that the totals match; any difference is an error\n"
    "(exit code 2). Then it decodes the first tokens back to text (BOS shown as <s>, EOS as\n"
    "</s>).\n"
    "\n"
    "options:\n"
    "  --tokens N             tokens to decode from the first shard (default 64; 0: none)\n"
    "  --tokenizer MODEL      SentencePiece model (default: the directory's tokenizer.model)\n"
    "  --help, -h             this text\n";

int64_t parse_integer(const std::string& flag, const std::string& value, int64_t min, int64_t max) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v < min || v > max) {
    RELORA_INPUT_ERROR(flag << " " << value << ": expected an integer in [" << min << ", " << max
                            << "]");
  }
  return v;
}

double parse_fraction(const std::string& flag, const std::string& value) {
  char* end = nullptr;
  double v = std::strtod(value.c_str(), &end);
  if (value.empty() || *end != '\0' || !(v > 0 && v < 1)) {
    RELORA_INPUT_ERROR(flag << " " << value << ": expected a number between 0 and 1 (exclusive)");
  }
  return v;
}

// `arg` quoted for a POSIX shell when it needs to be.
std::string shell_word(const std::string& arg) {
  bool plain = !arg.empty();
  for (char c : arg) {
    bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                std::string("_-./=:,+%@").find(c) != std::string::npos;
    plain = plain && safe;
  }
  if (plain) return arg;
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// Walks argv; `value()` takes the argument after an option.
class ArgCursor {
 public:
  ArgCursor(int argc, char** argv, const char* command)
      : argc_(argc), argv_(argv), command_(command) {}
  bool more() const { return index_ < argc_; }
  std::string next() { return argv_[index_++]; }
  bool next_is_value() const { return more() && std::string(argv_[index_]).rfind("--", 0) != 0; }
  std::string value(const std::string& flag) {
    if (!more())
      RELORA_INPUT_ERROR(flag << " needs a value (see relora data " << command_ << " --help)");
    return next();
  }

 private:
  int argc_;
  char** argv_;
  int index_ = 1;
  const char* command_;
};

int prepare_command(int argc, char** argv) {
  PrepareOptions options;
  options.command = "relora data prepare";
  for (int i = 1; i < argc; ++i) options.command += " " + shell_word(argv[i]);
  bool vocab_given = false;
  ArgCursor args(argc, argv, "prepare");
  while (args.more()) {
    const std::string flag = args.next();
    if (flag == "--help" || flag == "-h") {
      std::printf("%s", kPrepareUsage);
      return 0;
    } else if (flag == "--input") {
      if (!args.next_is_value()) RELORA_INPUT_ERROR("--input needs at least one path");
      while (args.next_is_value()) options.inputs.push_back(args.next());
    } else if (flag == "--exclude") {
      options.excludes.push_back(args.value(flag));
    } else if (flag == "--out") {
      options.out_dir = args.value(flag);
    } else if (flag == "--tokenizer") {
      options.tokenizer = args.value(flag);
    } else if (flag == "--vocab-size") {
      options.vocab_size = static_cast<int>(parse_integer(flag, args.value(flag), 1, INT32_MAX));
      vocab_given = true;
    } else if (flag == "--sample-mb") {
      options.sample_bytes =
          parse_integer(flag, args.value(flag), 1, int64_t{1} << 20) * 1000 * 1000;
    } else if (flag == "--val-fraction") {
      options.val_fraction = parse_fraction(flag, args.value(flag));
    } else if (flag == "--seed") {
      options.seed =
          static_cast<uint64_t>(parse_integer(flag, args.value(flag), 0, (int64_t{1} << 53) - 1));
    } else if (flag == "--shard-tokens") {
      options.shard_tokens = parse_integer(flag, args.value(flag), 1, INT32_MAX);
    } else if (flag == "--jobs") {
      options.jobs = static_cast<int>(parse_integer(flag, args.value(flag), 1, 1024));
    } else if (flag == "--doc-separator") {
      options.documents.separator = args.value(flag);
      if (options.documents.separator.empty()) {
        RELORA_INPUT_ERROR(
            "--doc-separator needs a non-empty string (blank lines separate "
            "documents by default)");
      }
    } else if (flag == "--doc-per-file") {
      options.documents.doc_per_file = true;
    } else if (flag == "--text-field") {
      options.documents.text_field = args.value(flag);
    } else if (flag == "--skip-bad") {
      options.documents.skip_bad = true;
    } else {
      RELORA_INPUT_ERROR("unknown option '" << flag
                                            << "' for 'relora data prepare' (see relora data "
                                               "prepare --help)");
    }
  }
  if (options.inputs.empty())
    RELORA_INPUT_ERROR("relora data prepare: --input PATH... is required");
  if (options.out_dir.empty()) RELORA_INPUT_ERROR("relora data prepare: --out DIR is required");
  if (vocab_given && !options.tokenizer.empty()) {
    RELORA_INPUT_ERROR(
        "--vocab-size applies to a tokenizer trained here; with --tokenizer the "
        "model's own vocabulary is used (drop one of them)");
  }
  if (options.documents.doc_per_file && !options.documents.separator.empty()) {
    RELORA_INPUT_ERROR("--doc-per-file and --doc-separator exclude each other (choose one)");
  }
  prepare_data(options);
  return 0;
}

int inspect_command(int argc, char** argv) {
  InspectOptions options;
  ArgCursor args(argc, argv, "inspect");
  while (args.more()) {
    const std::string arg = args.next();
    if (arg == "--help" || arg == "-h") {
      std::printf("%s", kInspectUsage);
      return 0;
    } else if (arg == "--tokens") {
      options.tokens = parse_integer(arg, args.value(arg), 0, int64_t{1} << 30);
    } else if (arg == "--tokenizer") {
      options.tokenizer = args.value(arg);
    } else if (arg.rfind("--", 0) == 0 || !options.target.empty()) {
      RELORA_INPUT_ERROR("unexpected argument '" << arg
                                                 << "' for 'relora data inspect' (see relora "
                                                    "data inspect --help)");
    } else {
      options.target = arg;
    }
  }
  if (options.target.empty()) RELORA_INPUT_ERROR("relora data inspect: DIR_OR_SHARD is required");
  inspect_data(options);
  return 0;
}

}  // namespace

int data_command(int argc, char** argv) {
  const std::string command = argc > 0 ? argv[0] : "";
  if (command == "prepare") return prepare_command(argc, argv);
  if (command == "inspect") return inspect_command(argc, argv);
  if (command == "--help" || command == "-h" || command == "help") {
    std::printf("%s", kDataUsage);
    return 0;
  }
  if (command.empty()) {
    std::fprintf(stderr, "%s", kDataUsage);
    return 2;
  }
  RELORA_INPUT_ERROR("unknown command 'relora data "
                     << command << "' (commands: prepare, inspect; see relora data --help)");
}

}  // namespace relora
