// Writing and reading manifest.json (see manifest.h).
#include "data_pipeline/manifest.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "core/errors.h"
#include "data_pipeline/files.h"
#include "data_pipeline/json.h"

namespace relora {
namespace {

constexpr int kManifestVersion = 1;

std::string counts_json(const SplitCounts& counts) {
  return "{\"documents\": " + std::to_string(counts.documents) +
         ", \"tokens\": " + std::to_string(counts.tokens) +
         ", \"text_bytes\": " + std::to_string(counts.text_bytes) + "}";
}

// The shortest decimal text that reads back as exactly `value` ("0.005", not
// "0.0050000000000000001").
std::string shortest_decimal(double value) {
  char text[32];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(text, sizeof(text), "%.*g", digits, value);
    if (std::strtod(text, nullptr) == value) break;
  }
  return text;
}

// ["a", "b"], one string per line.
std::string string_list_json(const std::vector<std::string>& strings) {
  if (strings.empty()) return "[]";
  std::string out = "[";
  for (size_t i = 0; i < strings.size(); ++i) {
    out += (i == 0 ? "\n    " : ",\n    ") + json_quote(strings[i]);
  }
  return out + "\n  ]";
}

// Reads fields out of a parsed manifest, naming the file and the field on any problem.
class ManifestFields {
 public:
  ManifestFields(const std::string& path, const JsonValue& root) : path_(path), root_(root) {}

  const JsonValue& get(const JsonValue& parent, const std::string& parent_name,
                       const std::string& key, JsonValue::Type type) const {
    const JsonValue* value = parent.find(key);
    std::string name = parent_name.empty() ? key : parent_name + "." + key;
    if (value == nullptr)
      RELORA_INPUT_ERROR(path_ << ": field \"" << name << "\" is missing" << kAdvice);
    if (value->type != type) {
      RELORA_INPUT_ERROR(path_ << ": field \"" << name << "\" is " << value->type_name()
                               << kAdvice);
    }
    return *value;
  }
  const JsonValue& get(const std::string& key, JsonValue::Type type) const {
    return get(root_, "", key, type);
  }
  int64_t integer(const JsonValue& parent, const std::string& parent_name,
                  const std::string& key) const {
    return static_cast<int64_t>(get(parent, parent_name, key, JsonValue::Type::number).number);
  }
  std::string string(const JsonValue& parent, const std::string& parent_name,
                     const std::string& key) const {
    return get(parent, parent_name, key, JsonValue::Type::string).string;
  }
  std::vector<std::string> strings(const std::string& key) const {
    std::vector<std::string> out;
    for (const JsonValue& item : get(key, JsonValue::Type::array).array) {
      if (item.type != JsonValue::Type::string) {
        RELORA_INPUT_ERROR(path_ << ": field \"" << key << "\" holds " << item.type_name()
                                 << ", file names expected" << kAdvice);
      }
      out.push_back(item.string);
    }
    return out;
  }
  SplitCounts counts(const std::string& split) const {
    const JsonValue& object = get(split, JsonValue::Type::object);
    return {integer(object, split, "documents"), integer(object, split, "tokens"),
            integer(object, split, "text_bytes")};
  }

 private:
  static constexpr const char* kAdvice = " (re-create the directory with relora data prepare)";
  const std::string& path_;
  const JsonValue& root_;
};

}  // namespace

std::string manifest_json(const Manifest& m) {
  std::ostringstream out;
  out << "{\n";
  out << "  \"manifest_version\": " << kManifestVersion << ",\n";
  out << "  \"command\": " << json_quote(m.command) << ",\n";
  out << "  \"inputs\": " << string_list_json(m.inputs) << ",\n";
  out << "  \"binary_files_skipped\": " << string_list_json(m.binary_files) << ",\n";
  out << "  \"input_bytes\": " << m.input_bytes << ",\n";
  out << "  \"skipped_lines\": " << m.skipped_lines << ",\n";
  out << "  \"tokenizer\": {\"file\": " << json_quote(m.tokenizer_file)
      << ", \"source\": " << json_quote(m.tokenizer_source) << ", \"vocab_size\": " << m.vocab_size
      << ", \"bos_id\": " << m.bos_id << ", \"eos_id\": " << m.eos_id << "},\n";
  out << "  \"bytes_per_token\": " << m.bytes_per_token << ",\n";
  out << "  \"split\": {\"unit\": \"document\", \"seed\": " << m.seed
      << ", \"val_fraction\": " << shortest_decimal(m.val_fraction) << "},\n";
  out << "  \"train\": " << counts_json(m.train) << ",\n";
  out << "  \"val\": " << counts_json(m.val) << ",\n";
  out << "  \"shards\": [";
  for (size_t i = 0; i < m.shards.size(); ++i) {
    const ShardRecord& s = m.shards[i];
    out << (i == 0 ? "\n    " : ",\n    ") << "{\"file\": " << json_quote(s.file)
        << ", \"split\": " << json_quote(s.split) << ", \"tokens\": " << s.tokens
        << ", \"checksum\": " << json_quote(s.checksum) << "}";
  }
  out << "\n  ]\n}\n";

  return out.str();
}

Manifest read_manifest(const std::string& path) {
  const std::string text = read_whole_file(path);
  JsonValue root;
  std::string error;
  if (!parse_json(text, &root, &error)) {
    RELORA_INPUT_ERROR(path << ": not a valid manifest: " << error
                            << " (re-create the directory with relora data prepare)");
  }
  if (root.type != JsonValue::Type::object) {
    RELORA_INPUT_ERROR(
        path << ": not a valid manifest: " << root.type_name()
             << ", not an object (re-create the directory with relora data prepare)");
  }
  ManifestFields fields(path, root);
  int64_t version = fields.integer(root, "", "manifest_version");
  if (version != kManifestVersion) {
    RELORA_INPUT_ERROR(path << ": manifest version " << version << ", this relora reads version "
                            << kManifestVersion);
  }
  Manifest m;
  m.command = fields.string(root, "", "command");
  m.inputs = fields.strings("inputs");
  m.binary_files = fields.strings("binary_files_skipped");
  m.input_bytes = fields.integer(root, "", "input_bytes");
  m.skipped_lines = fields.integer(root, "", "skipped_lines");
  const JsonValue& tokenizer = fields.get("tokenizer", JsonValue::Type::object);
  m.tokenizer_file = fields.string(tokenizer, "tokenizer", "file");
  m.tokenizer_source = fields.string(tokenizer, "tokenizer", "source");
  m.vocab_size = static_cast<int>(fields.integer(tokenizer, "tokenizer", "vocab_size"));
  m.bos_id = static_cast<int>(fields.integer(tokenizer, "tokenizer", "bos_id"));
  m.eos_id = static_cast<int>(fields.integer(tokenizer, "tokenizer", "eos_id"));
  m.bytes_per_token = static_cast<int>(fields.integer(root, "", "bytes_per_token"));
  const JsonValue& split = fields.get("split", JsonValue::Type::object);
  m.seed = static_cast<uint64_t>(fields.integer(split, "split", "seed"));
  m.val_fraction = fields.get(split, "split", "val_fraction", JsonValue::Type::number).number;
  m.train = fields.counts("train");
  m.val = fields.counts("val");
  for (const JsonValue& shard : fields.get("shards", JsonValue::Type::array).array) {
    ShardRecord record;
    record.file = fields.string(shard, "shards[]", "file");
    record.split = fields.string(shard, "shards[]", "split");
    record.tokens = fields.integer(shard, "shards[]", "tokens");
    record.checksum = fields.string(shard, "shards[]", "checksum");
    m.shards.push_back(record);
  }
  return m;
}

}  // namespace relora
