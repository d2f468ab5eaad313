// The prepare pipeline (see prepare.h).
#include "data_pipeline/prepare.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <regex>
#include <set>
#include <system_error>

#include "core/errors.h"
#include "core/rng.h"
#include "data_pipeline/encode_pool.h"
#include "data_pipeline/files.h"
#include "data_pipeline/inputs.h"
#include "data_pipeline/progress.h"
#include "data_pipeline/shard_series.h"
#include "data_pipeline/tokenizer.h"
#include "data_pipeline/training_sample.h"

namespace relora {
namespace {

namespace fs = std::filesystem;

constexpr size_t kBatchTextBytes = size_t{64} << 10;  // text per encoding batch
constexpr size_t kBatchDocuments = 1024;              // documents per encoding batch
constexpr int kBatchesInFlightPerThread = 4;
constexpr const char* kTokenizerFile = "tokenizer.model";
constexpr const char* kManifestFile = "manifest.json";

// The split of document number `document`, before the at-least-one-validation-document
// rule (see SplitWriter::finish).
bool hashed_to_validation(const PrepareOptions& options, int64_t document) {
  const RngKey key{options.seed, RngPurpose::data_split, 0, 0};
  return uniform_at(key, static_cast<uint64_t>(document)) < options.val_fraction;
}

int64_t total_bytes(const std::vector<InputFile>& files) {
  int64_t bytes = 0;
  for (const InputFile& file : files) bytes += file.bytes;
  return bytes;
}

// The inputs, for messages: the arguments as given.
std::string inputs_text(const PrepareOptions& options) {
  std::string text;
  for (const std::string& input : options.inputs) text += (text.empty() ? "" : " ") + input;
  return text;
}

// Stops with one clear line when the documents cannot make both splits. `val_documents`
// counts those hashed to validation.
void check_document_counts(const PrepareOptions& options, size_t files, int64_t documents,
                           int64_t val_documents, int64_t skipped_lines) {
  if (documents == 0) {
    RELORA_INPUT_ERROR(
        "--input " << inputs_text(options) << ": no documents in the " << files
                   << " input file(s): they are empty or blank"
                   << (skipped_lines > 0 ? ", or every line was bad and skipped" : "")
                   << " (for JSONL, check --text-field)");
  }
  if (documents == 1) {
    RELORA_INPUT_ERROR("--input " << inputs_text(options)
                                  << ": only 1 document; at least 2 are needed, one for training "
                                     "and one for validation ("
                                  << (options.documents.doc_per_file ? "give at least 2 input files"
                                                           : "separate documents by blank lines or "
                                                             "--doc-separator, or use --doc-per-file")
                                  << ")");
  }
  if (val_documents == documents) {
    RELORA_INPUT_ERROR("--val-fraction " << options.val_fraction << ": all " << documents
                                         << " documents went to validation; lower it");
  }
}

// Pass 1 without a given tokenizer: samples the training documents and trains a BPE model
// on the sample; writes it to DIR/tokenizer.model.
Tokenizer train_tokenizer(const PrepareOptions& options, const std::vector<InputFile>& files,
                          const std::string& model_path) {
  DocumentOptions quiet = options.documents;
  quiet.warn_skipped = false;  // the encoding pass reports skipped lines
  DocumentReader reader(files, quiet);
  TrainingSample sample(options.seed, options.sample_bytes);
  ProgressLine progress("sampling text for the tokenizer", total_bytes(files));
  ProgressCounts counts;
  int64_t val_documents = 0;
  std::string text;
  while (reader.next(&text)) {
    if (hashed_to_validation(options, counts.documents)) {
      ++val_documents;
    } else {
      sample.add_document(counts.documents, text);
    }
    ++counts.documents;
    counts.text_bytes += static_cast<int64_t>(text.size());
    counts.input_bytes = reader.input_bytes();
    if (options.report) progress.update(counts);
  }
  progress.finish();
  check_document_counts(options, files.size(), counts.documents, val_documents, reader.bad_lines());
  // The last document goes to validation when no other did; keep it out of the sample.
  if (val_documents == 0) sample.remove_document(counts.documents - 1);
  std::vector<std::string> lines = sample.take_lines();
  int64_t sample_text_bytes = 0;
  for (const std::string& line : lines) sample_text_bytes += static_cast<int64_t>(line.size());
  if (options.report) {
    std::printf("prepare: training a %d-piece BPE tokenizer on %s lines (%s) of training text\n",
                options.vocab_size, format_count(static_cast<int64_t>(lines.size())).c_str(),
                format_bytes(static_cast<double>(sample_text_bytes)).c_str());
    std::fflush(stdout);
  }
  const auto start = std::chrono::steady_clock::now();
  std::string model = train_bpe_tokenizer(lines, options.vocab_size);
  write_file_atomically(model_path, model);
  if (options.report) {
    std::printf("prepare: tokenizer %s trained in %.1f s\n", model_path.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return Tokenizer(model, model_path);
}

// Routes encoded documents to the train and validation shard series and counts them. The
// latest training document is held back until the next one arrives, so that, if no
// document was hashed to validation, the last document can still go there.
class SplitWriter {
 public:
  SplitWriter(const PrepareOptions& options, int bytes_per_token)
      : options_(options),
        train_(options.out_dir, "train", bytes_per_token, options.shard_tokens),
        val_(options.out_dir, "val", bytes_per_token, options.shard_tokens) {}

  void add(const EncodeBatch& batch) {
    size_t begin = 0;
    for (size_t i = 0; i < batch.ends.size(); ++i) {
      const int32_t* tokens = batch.tokens.data() + begin;
      const size_t n = batch.ends[i] - begin;
      begin = batch.ends[i];
      if (hashed_to_validation(options_, documents_)) {
        ++val_documents_hashed_;
        add_to(&val_, &val_counts_, tokens, n, batch.text_bytes[i]);
      } else {
        if (has_held_)
          add_to(&train_, &train_counts_, held_.data(), held_.size(), held_text_bytes_);
        held_.assign(tokens, tokens + n);
        held_text_bytes_ = batch.text_bytes[i];
        has_held_ = true;
      }
      ++documents_;
    }
  }

  int64_t tokens() const {
    return train_.tokens() + val_.tokens() + static_cast<int64_t>(held_.size());
  }

  // Places the held document, checks the counts and completes the shards.
  void finish(size_t files, int64_t skipped_lines, Manifest* manifest) {
    check_document_counts(options_, files, documents_, val_documents_hashed_, skipped_lines);
    if (val_counts_.documents == 0) {
      add_to(&val_, &val_counts_, held_.data(), held_.size(), held_text_bytes_);
    } else {
      add_to(&train_, &train_counts_, held_.data(), held_.size(), held_text_bytes_);
    }
    manifest->train = train_counts_;
    manifest->val = val_counts_;
    manifest->shards = train_.finish();
    for (const ShardRecord& record : val_.finish()) manifest->shards.push_back(record);
  }

 private:
  static void add_to(ShardSeries* series, SplitCounts* counts, const int32_t* tokens, size_t n,
                     int64_t text_bytes) {
    series->append(tokens, n);
    ++counts->documents;
    counts->tokens += static_cast<int64_t>(n);
    counts->text_bytes += text_bytes;
  }

  const PrepareOptions& options_;
  ShardSeries train_, val_;
  SplitCounts train_counts_, val_counts_;
  int64_t documents_ = 0;
  int64_t val_documents_hashed_ = 0;
  std::vector<int32_t> held_;
  int64_t held_text_bytes_ = 0;
  bool has_held_ = false;
};

// Removes shards (and temporary files) of an earlier run that this run did not write.
int remove_stale_shards(const std::string& dir, const std::vector<ShardRecord>& written) {
  static const std::regex shard_name(R"((train|val)_[0-9]{6}\.bin(\.tmp)?)");
  std::set<std::string> keep;
  for (const ShardRecord& record : written) keep.insert(record.file);
  int removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (std::regex_match(name, shard_name) && keep.count(name) == 0) {
      fs::remove(it->path(), ec);
      RELORA_CHECK(!ec, "removing " << it->path().string() << ": " << ec.message());
      ++removed;
    }
  }
  RELORA_CHECK(!ec, "listing " << dir << ": " << ec.message());
  return removed;
}

}  // namespace

int available_cores() {
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) return std::max(1, CPU_COUNT(&mask));
  return 1;
}

PrepareResult prepare_data(const PrepareOptions& options) {
  RELORA_CHECK(options.val_fraction > 0 && options.val_fraction < 1,
               "val_fraction " << options.val_fraction);
  RELORA_CHECK(options.shard_tokens > 0 && options.shard_tokens <= INT32_MAX,
               "shard_tokens " << options.shard_tokens);
  const std::vector<InputFile> files = resolve_inputs(options.inputs, options.excludes);
  const int64_t input_bytes = total_bytes(files);
  const int jobs = options.jobs > 0 ? options.jobs : available_cores();
  if (options.report) {
    std::printf("prepare: %zu input file(s), %s\n", files.size(),
                format_bytes(static_cast<double>(input_bytes)).c_str());
    std::fflush(stdout);
  }

  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec || !fs::is_directory(options.out_dir)) {
    RELORA_INPUT_ERROR(
        "--out " << options.out_dir << ": cannot create the directory"
                 << (ec ? ": " + ec.message() : std::string(" (a file is in the way)")));
  }
  // From here until the new manifest is written, the directory is visibly incomplete.
  const std::string manifest_path = options.out_dir + "/" + kManifestFile;
  fs::remove(manifest_path, ec);
  RELORA_CHECK(!ec, "removing " << manifest_path << ": " << ec.message());

  Manifest manifest;
  manifest.command = options.command;
  manifest.input_bytes = input_bytes;
  manifest.tokenizer_file = kTokenizerFile;
  manifest.seed = options.seed;
  manifest.val_fraction = options.val_fraction;

  const std::string model_path = options.out_dir + "/" + kTokenizerFile;
  std::unique_ptr<Tokenizer> tokenizer;
  if (options.tokenizer.empty()) {
    tokenizer = std::make_unique<Tokenizer>(train_tokenizer(options, files, model_path));
    manifest.tokenizer_source = "trained";
  } else {
    tokenizer = std::make_unique<Tokenizer>(options.tokenizer);
    if (!fs::exists(model_path) || !fs::equivalent(options.tokenizer, model_path)) {
      write_file_atomically(model_path, read_whole_file(options.tokenizer));
    }
    manifest.tokenizer_source = options.tokenizer;
  }
  manifest.vocab_size = tokenizer->vocab_size();
  manifest.bos_id = tokenizer->bos_id();
  manifest.eos_id = tokenizer->eos_id();
  manifest.bytes_per_token = tokenizer->vocab_size() <= 65536 ? 2 : 4;

  // Pass 2: read, encode on `jobs` threads, write in document order.
  SplitWriter splits(options, manifest.bytes_per_token);
  DocumentReader reader(files, options.documents);
  ProgressLine progress("encoding", input_bytes);
  ProgressCounts counts;
  {
    EncodePool pool(*tokenizer, jobs, kBatchesInFlightPerThread * jobs);
    auto write_oldest = [&] {
      EncodeBatch done = pool.take();
      splits.add(done);
      counts.tokens = splits.tokens();
    };
    EncodeBatch batch;
    size_t batch_bytes = 0;
    auto submit = [&] {
      while (pool.full()) write_oldest();
      pool.submit(std::move(batch));
      batch = EncodeBatch();
      batch_bytes = 0;
      while (pool.ready()) write_oldest();
      counts.input_bytes = reader.input_bytes();
      if (options.report) progress.update(counts);
    };
    std::string text;
    while (reader.next(&text)) {
      batch_bytes += text.size();
      counts.text_bytes += static_cast<int64_t>(text.size());
      ++counts.documents;
      batch.text_bytes.push_back(static_cast<int64_t>(text.size()));
      batch.documents.push_back(std::move(text));
      text = std::string();
      if (batch_bytes >= kBatchTextBytes || batch.documents.size() >= kBatchDocuments) submit();
    }
    if (!batch.documents.empty()) submit();
    while (!pool.empty()) write_oldest();
  }
  progress.finish();
  const double encode_seconds = progress.seconds();
  manifest.skipped_lines = reader.bad_lines();
  manifest.inputs = reader.read_files();
  manifest.binary_files = reader.binary_files();
  splits.finish(files.size(), reader.bad_lines(), &manifest);
  const int stale = remove_stale_shards(options.out_dir, manifest.shards);
  write_file_atomically(manifest_path, manifest_json(manifest));

  if (options.report) {
    for (const char* split : {"train", "val"}) {
      const SplitCounts& c = std::string(split) == "train" ? manifest.train : manifest.val;
      int shards = 0;
      for (const ShardRecord& record : manifest.shards) shards += record.split == split;
      std::printf("prepare: %-5s %s documents, %s tokens in %d shard(s): %s/%s_*.bin\n", split,
                  format_count(c.documents).c_str(), format_count(c.tokens).c_str(), shards,
                  options.out_dir.c_str(), split);
    }
    if (!manifest.binary_files.empty()) {
      std::printf(
          "prepare: skipped %zu binary file(s) (a NUL byte in the first %zu bytes), e.g. %s\n",
          manifest.binary_files.size(), LineReader::kBinaryProbeBytes,
          manifest.binary_files.front().c_str());
    }
    if (manifest.skipped_lines > 0) {
      std::printf("prepare: skipped %s bad line(s) (--skip-bad)\n",
                  format_count(manifest.skipped_lines).c_str());
    }
    if (stale > 0) std::printf("prepare: removed %d shard file(s) of an earlier run\n", stale);
    const double text_bytes =
        static_cast<double>(manifest.train.text_bytes + manifest.val.text_bytes);
    std::printf("prepare: encoded %s of text in %.2f s: %s/s with %d thread(s)\n",
                format_bytes(text_bytes).c_str(), encode_seconds,
                format_bytes(text_bytes / encode_seconds).c_str(), jobs);
    std::printf("prepare: wrote %s (tokenizer %s, vocab %d, %s tokens)\n", manifest_path.c_str(),
                model_path.c_str(), manifest.vocab_size,
                manifest.bytes_per_token == 2 ? "uint16" : "uint32");
  }
  return {manifest, encode_seconds, jobs};
}

}  // namespace relora
