// `relora data inspect DIR_OR_SHARD`: validates token shards (header, size, tokens inside the
// vocabulary), checks a prepared directory against its manifest.json (every listed shard
// present with its token count and CRC-32, no unlisted shard, document and token totals),
// prints the counts, and decodes the first tokens back to text.
#pragma once
#include <cstdint>
#include <string>

namespace relora {

struct InspectOptions {
  std::string target;     // a directory made by relora data prepare, or one shard file
  int64_t tokens = 64;    // how many tokens to decode from the first shard
  std::string tokenizer;  // a SentencePiece model; default: the directory's tokenizer.model
};

// Prints the report on stdout; InputError on the first problem found.
void inspect_data(const InspectOptions& options);

}  // namespace relora
