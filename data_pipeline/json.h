// A small JSON (RFC 8259) parser into a tree, for JSONL documents and the manifest, and the
// string quoting that writing JSON needs.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace relora {

struct JsonValue {
  enum class Type { null, boolean, number, string, array, object };
  Type type = Type::null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<JsonValue> array;
  std::vector<std::pair<std::string, JsonValue>> object;  // members in file order

  // The member named `key` (the last one when the key repeats, as in most parsers), or
  // nullptr when there is none or this is not an object.
  const JsonValue* find(std::string_view key) const;
  // "null", "a boolean", "a number", "a string", "an array", "an object".
  const char* type_name() const;
};

// Parses `text` (valid UTF-8) as one JSON value with optional surrounding whitespace.
// \uXXXX escapes, surrogate pairs included, become UTF-8; an unpaired surrogate is an
// error. On error returns false and sets *error, e.g. "expected ':' after an object key
// at column 12".
bool parse_json(std::string_view text, JsonValue* out, std::string* error);

// `text` as a JSON string literal, quotes included (control characters, '"' and '\'
// escaped; other bytes as they are).
std::string json_quote(std::string_view text);

}  // namespace relora
