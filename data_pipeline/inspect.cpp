// Checking and describing prepared token shards (see inspect.h).
#include "data_pipeline/inspect.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <vector>

#include "core/errors.h"
#include "data/shard.h"
#include "data_pipeline/manifest.h"
#include "data_pipeline/progress.h"
#include "data_pipeline/shard_series.h"
#include "data_pipeline/tokenizer.h"

namespace relora {
namespace {

namespace fs = std::filesystem;

constexpr size_t kHeaderBytes = 256 * sizeof(int32_t);

// What one pass over a shard file finds.
struct ShardScan {
  int bytes_per_token = 2;
  int64_t tokens = 0;
  int64_t documents = 0;  // tokens equal to the document marker (BOS, or EOS without BOS)
  std::string checksum;   // of the whole file
  std::vector<int32_t> first_tokens;
};

// Validates `path` as a shard (TokenShard: header, size, every token < vocab_size), then
// reads it once for the CRC-32, the marker count and the first `keep` tokens.
ShardScan scan_shard(const std::string& path, int vocab_size, int marker, size_t keep) {
  TokenShard shard(path, vocab_size);
  const int width = shard.bytes_per_token();
  ShardScan scan;
  scan.bytes_per_token = width;
  scan.tokens = shard.num_tokens();
  std::ifstream file(path, std::ios::binary);
  if (!file) RELORA_INPUT_ERROR(path << ": cannot open: " << std::strerror(errno));
  uLong crc = crc32(0L, Z_NULL, 0);
  std::vector<char> buffer(size_t{1} << 20);
  int64_t offset = 0;
  while (file) {
    file.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const size_t got = static_cast<size_t>(file.gcount());
    if (got == 0) break;
    crc = crc32(crc, reinterpret_cast<const Bytef*>(buffer.data()), static_cast<uInt>(got));
    // Tokens in this block (the header and every block are whole tokens long).
    size_t begin = offset >= static_cast<int64_t>(kHeaderBytes)
                       ? 0
                       : std::min(got, kHeaderBytes - static_cast<size_t>(offset));
    for (size_t at = begin; at + static_cast<size_t>(width) <= got;
         at += static_cast<size_t>(width)) {
      uint32_t token = 0;
      std::memcpy(&token, buffer.data() + at, static_cast<size_t>(width));
      if (static_cast<int64_t>(token) == marker) ++scan.documents;
      if (scan.first_tokens.size() < keep) scan.first_tokens.push_back(static_cast<int32_t>(token));
    }
    offset += static_cast<int64_t>(got);
  }
  RELORA_CHECK(!file.bad(), "reading " << path << ": " << std::strerror(errno));
  scan.checksum = crc32_checksum(static_cast<uint32_t>(crc));
  return scan;
}

// Decoded text of `tokens`, with document markers shown as <s> (BOS) and </s> (EOS).
std::string show_text(const Tokenizer& tokenizer, const std::vector<int32_t>& tokens) {
  std::string text;
  std::vector<int32_t> run;
  auto flush = [&] {
    text += tokenizer.decode(run);
    run.clear();
  };
  for (int32_t token : tokens) {
    if (token == tokenizer.bos_id() || token == tokenizer.eos_id()) {
      flush();
      text += token == tokenizer.bos_id() ? "<s>" : "</s>";
    } else {
      run.push_back(token);
    }
  }
  flush();
  return text;
}

void mismatch(const std::string& what) {
  RELORA_INPUT_ERROR(what << "; the directory changed after relora data prepare wrote it "
                             "(re-run prepare)");
}

}  // namespace

void inspect_data(const InspectOptions& options) {
  std::error_code ec;
  if (!fs::exists(options.target, ec)) {
    RELORA_INPUT_ERROR(options.target << ": no such file or directory");
  }
  const bool is_dir = fs::is_directory(options.target, ec);
  const std::string dir = is_dir ? options.target : fs::path(options.target).parent_path().string();
  const std::string base = dir.empty() ? "." : dir;
  const std::string manifest_path = base + "/manifest.json";
  const bool has_manifest = fs::exists(manifest_path, ec);
  std::unique_ptr<Manifest> manifest;
  if (has_manifest) manifest = std::make_unique<Manifest>(read_manifest(manifest_path));

  std::string tokenizer_path = options.tokenizer;
  if (tokenizer_path.empty()) {
    std::string candidate = base + "/" + (manifest ? manifest->tokenizer_file : "tokenizer.model");
    if (fs::exists(candidate, ec)) tokenizer_path = candidate;
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (!tokenizer_path.empty()) tokenizer = std::make_unique<Tokenizer>(tokenizer_path);
  if (manifest && tokenizer && tokenizer->vocab_size() != manifest->vocab_size) {
    const std::string what = tokenizer_path + ": " + std::to_string(tokenizer->vocab_size()) +
                             " pieces, but the manifest says vocab_size " +
                             std::to_string(manifest->vocab_size);
    if (!options.tokenizer.empty()) {
      RELORA_INPUT_ERROR("--tokenizer " << what << "; these shards were made with another one");
    }
    mismatch(what);
  }
  const int vocab_size = tokenizer  ? tokenizer->vocab_size()
                         : manifest ? manifest->vocab_size
                                    : INT_MAX;
  const int marker = tokenizer
                         ? (tokenizer->bos_id() >= 0 ? tokenizer->bos_id() : tokenizer->eos_id())
                     : manifest ? (manifest->bos_id >= 0 ? manifest->bos_id : manifest->eos_id)
                                : -1;

  // The shards to check: the manifest's (when inspecting its directory), else every *.bin.
  std::vector<std::string> files;
  if (!is_dir) {
    files.push_back(options.target);
  } else if (manifest) {
    for (const ShardRecord& record : manifest->shards) files.push_back(base + "/" + record.file);
    static const std::regex shard_name(R"((train|val)_[0-9]{6}\.bin)");
    for (fs::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      bool listed = std::any_of(manifest->shards.begin(), manifest->shards.end(),
                                [&](const ShardRecord& r) { return r.file == name; });
      if (std::regex_match(name, shard_name) && !listed) {
        mismatch(base + "/" + name + " is not in " + manifest_path);
      }
    }
  } else {
    files = glob_files(base + "/*.bin", options.target + " (no manifest.json)");
  }

  std::printf("%s: %s\n", options.target.c_str(),
              manifest ? ("checked against " + manifest_path).c_str() : "no manifest.json");
  if (manifest) {
    std::printf("command:   %s\n", manifest->command.c_str());
    std::printf(
        "inputs:    %zu file(s) read, %zu binary file(s) skipped, %s on disk; %s bad line(s) "
        "skipped\n",
        manifest->inputs.size(), manifest->binary_files.size(),
        format_bytes(static_cast<double>(manifest->input_bytes)).c_str(),
        format_count(manifest->skipped_lines).c_str());
  }
  if (tokenizer) {
    std::printf("tokenizer: %s (%d pieces, BOS %d, EOS %d%s)\n", tokenizer_path.c_str(),
                tokenizer->vocab_size(), tokenizer->bos_id(), tokenizer->eos_id(),
                manifest ? (", source: " + manifest->tokenizer_source).c_str() : "");
  }

  std::map<std::string, SplitCounts> found;  // per split, from the shards
  std::vector<int32_t> first_tokens;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string& path = files[i];
    ShardScan scan =
        scan_shard(path, vocab_size, marker, i == 0 ? static_cast<size_t>(options.tokens) : 0);
    if (i == 0) first_tokens = scan.first_tokens;
    std::string split = "shards";
    if (manifest) {
      const std::string name = fs::path(path).filename().string();
      auto record = std::find_if(manifest->shards.begin(), manifest->shards.end(),
                                 [&](const ShardRecord& r) { return r.file == name; });
      if (record != manifest->shards.end()) {
        split = record->split;
        if (record->tokens != scan.tokens) {
          mismatch(path + ": " + std::to_string(scan.tokens) + " tokens, the manifest says " +
                   std::to_string(record->tokens));
        }
        if (record->checksum != scan.checksum) {
          mismatch(path + ": checksum " + scan.checksum + ", the manifest says " +
                   record->checksum);
        }
      }
    }
    found[split].tokens += scan.tokens;
    found[split].documents += scan.documents;
    std::printf("  %-28s %14s tokens %12s documents  %d-byte tokens  %s\n", path.c_str(),
                format_count(scan.tokens).c_str(),
                marker >= 0 ? format_count(scan.documents).c_str() : "?", scan.bytes_per_token,
                scan.checksum.c_str());
  }
  if (manifest && is_dir) {
    for (const auto& [split, expected] :
         {std::pair<std::string, SplitCounts>{"train", manifest->train}, {"val", manifest->val}}) {
      const SplitCounts& got = found[split];
      if (got.tokens != expected.tokens || got.documents != expected.documents) {
        mismatch(split + " shards hold " + std::to_string(got.documents) + " documents and " +
                 std::to_string(got.tokens) + " tokens, the manifest says " +
                 std::to_string(expected.documents) + " and " + std::to_string(expected.tokens));
      }
      std::printf("%-5s %s documents, %s tokens, %s of text\n", split.c_str(),
                  format_count(expected.documents).c_str(), format_count(expected.tokens).c_str(),
                  format_bytes(static_cast<double>(expected.text_bytes)).c_str());
    }
  }
  if (!manifest || !is_dir) {
    for (const auto& [split, got] : found) {
      std::printf("%s: %s tokens in %zu file(s)\n", split.c_str(), format_count(got.tokens).c_str(),
                  files.size());
    }
  }
  if (options.tokens > 0 && !first_tokens.empty()) {
    std::printf("first %zu tokens of %s:\n", first_tokens.size(), files.front().c_str());
    std::string ids;
    for (int32_t token : first_tokens) ids += (ids.empty() ? "" : " ") + std::to_string(token);
    std::printf("  ids:  %s\n", ids.c_str());
    if (tokenizer) std::printf("  text: %s\n", show_text(*tokenizer, first_tokens).c_str());
  }
  std::printf("ok\n");
}

}  // namespace relora
