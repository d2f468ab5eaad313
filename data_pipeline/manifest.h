// DIR/manifest.json, written by `relora data prepare` last (so a directory without it is
// incomplete) and checked by `relora data inspect`: what went in (command, input files),
// the tokenizer, the split, the counts of documents and tokens, and every shard with its
// token count and CRC-32.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data_pipeline/shard_series.h"

namespace relora {

struct SplitCounts {
  int64_t documents = 0;
  int64_t tokens = 0;
  int64_t text_bytes = 0;  // bytes of document text
};

struct Manifest {
  std::string command;                    // the prepare command line
  std::vector<std::string> inputs;        // every file read, in order
  std::vector<std::string> binary_files;  // input files skipped as binary
  int64_t input_bytes = 0;                // size on disk of all input files
  int64_t skipped_lines = 0;              // bad lines skipped (--skip-bad)
  std::string tokenizer_file;             // within the directory: "tokenizer.model"
  std::string tokenizer_source;           // "trained" or the --tokenizer path it was copied from
  int vocab_size = 0;
  int bos_id = -1, eos_id = -1;
  int bytes_per_token = 2;  // 2: uint16 shards, 4: uint32
  uint64_t seed = 0;
  double val_fraction = 0;
  SplitCounts train, val;
  std::vector<ShardRecord> shards;  // train shards, then val shards
};

// The manifest as JSON text (prepare writes it with write_file_atomically).
std::string manifest_json(const Manifest& manifest);
// Reads a manifest; InputError naming the file if it is not valid JSON or lacks a field.
Manifest read_manifest(const std::string& path);

}  // namespace relora
