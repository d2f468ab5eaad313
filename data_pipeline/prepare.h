// `relora data prepare`: text in, llm.c token shards out. Reads the inputs as a stream of
// documents; without a given tokenizer, first samples the training text (bounded) and
// trains a BPE model on it; then encodes the documents on every core, in order, splitting
// them between train and validation by document, and writes rotating shards, the tokenizer
// and manifest.json (last) to the output directory.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data_pipeline/documents.h"
#include "data_pipeline/manifest.h"

namespace relora {

struct PrepareOptions {
  std::vector<std::string> inputs;    // files, directories or glob patterns
  std::vector<std::string> excludes;  // base-name patterns to skip
  std::string out_dir;
  std::string tokenizer;               // an existing SentencePiece model; "" = train one
  int vocab_size = 32000;              // of the trained tokenizer
  int64_t sample_bytes = 100'000'000;  // memory for the tokenizer's training-text sample
  double val_fraction = 0.005;         // in (0, 1); at least one document goes to validation
  uint64_t seed = 1234;                // of the split and the tokenizer sample
  int64_t shard_tokens = 100'000'000;
  int jobs = 0;  // encoding threads; 0 = every core this process may use
  DocumentOptions documents;
  std::string command;  // the command line, recorded in the manifest
  bool report = true;   // steps and summary on stdout, the progress line on stderr
};

struct PrepareResult {
  Manifest manifest;
  double encode_seconds = 0;  // the encoding pass: read, encode, write
  int jobs = 0;               // encoding threads used
};

PrepareResult prepare_data(const PrepareOptions& options);

// The cores in this process's CPU affinity mask.
int available_cores();

}  // namespace relora
