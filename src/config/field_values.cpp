// Reading YAML nodes into typed config fields and writing fields back as YAML text.
// Numbers are parsed with std::from_chars (locale-independent, whole text or nothing) and
// floats written with std::to_chars' shortest form, so a resolved config reloads exactly.
#include "config/field_values.h"

#include <charconv>
#include <climits>
#include <cmath>

#include "core/errors.h"

namespace relora::config_detail {
namespace {

// What the user wrote, for "got ..." in messages.
std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return "'" + node.Scalar() + "'";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "an empty value";
  }
}

[[noreturn]] void type_error(const std::string& context, const char* expected,
                             const YAML::Node& node) {
  RELORA_INPUT_ERROR(context << ": expected " << expected << ", got " << describe(node));
}

// Parses all of `text` (one optional leading '+' allowed) into `out`.
template <typename T>
std::errc parse_number(const std::string& text, T& out) {
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (first != last && *first == '+') ++first;
  const auto [end, error] = std::from_chars(first, last, out);
  if (error != std::errc()) return error;
  return end == last ? std::errc() : std::errc::invalid_argument;
}

// true or false only (not YAML 1.1's yes/no/on/off: one spelling, no surprises).
void read_value(bool& out, const YAML::Node& node, const std::string& context) {
  if (node.IsScalar() && (node.Scalar() == "true" || node.Scalar() == "false")) {
    out = node.Scalar() == "true";
    return;
  }
  type_error(context, "true or false", node);
}

void read_value(int& out, const YAML::Node& node, const std::string& context) {
  long long value = 0;
  if (!node.IsScalar()) type_error(context, "an integer", node);
  const std::errc error = parse_number(node.Scalar(), value);
  if (error == std::errc::invalid_argument) type_error(context, "an integer", node);
  if (error != std::errc() || value < INT_MIN || value > INT_MAX) {
    RELORA_INPUT_ERROR(context << ": " << node.Scalar() << " is out of range; the limit is "
                               << INT_MAX);
  }
  out = static_cast<int>(value);
}

void read_value(uint64_t& out, const YAML::Node& node, const std::string& context) {
  if (!node.IsScalar()) type_error(context, "a non-negative integer", node);
  const std::errc error = parse_number(node.Scalar(), out);
  if (error == std::errc::result_out_of_range) {
    RELORA_INPUT_ERROR(context << ": " << node.Scalar() << " is out of range; the limit is "
                               << UINT64_MAX);
  }
  if (error != std::errc()) type_error(context, "a non-negative integer", node);
}

void read_value(float& out, const YAML::Node& node, const std::string& context) {
  if (!node.IsScalar()) type_error(context, "a number", node);
  float value = 0.0f;
  const std::errc error = parse_number(node.Scalar(), value);
  if (error == std::errc::result_out_of_range) {
    RELORA_INPUT_ERROR(context << ": " << node.Scalar() << " is out of range for a 32-bit float");
  }
  if (error != std::errc() || !std::isfinite(value)) type_error(context, "a finite number", node);
  out = value;
}

// An empty value (`val:` or `val: ~`) is the empty string.
void read_value(std::string& out, const YAML::Node& node, const std::string& context) {
  if (node.IsNull()) {
    out.clear();
    return;
  }
  if (!node.IsScalar()) type_error(context, "a string", node);
  out = node.Scalar();
}

void read_value(std::vector<std::string>& out, const YAML::Node& node, const std::string& context) {
  const char* expected = "a list of names like [q_proj, v_proj]";
  if (!node.IsSequence()) type_error(context, expected, node);
  std::vector<std::string> items;
  for (const YAML::Node& item : node) {
    if (!item.IsScalar()) {
      RELORA_INPUT_ERROR(context << ": expected " << expected << ", got a list holding "
                                 << describe(item));
    }
    items.push_back(item.Scalar());
  }
  out = std::move(items);
}

// Plain YAML is unambiguous for names, paths and globs that start with a letter, digit, '_',
// '.' or '/' and are not a null literal; anything else is double-quoted.
bool plain_is_safe(const std::string& text) {
  const auto plain_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '/' || c == '-' || c == '*';
  };
  if (text.empty() || text == "null" || text == "Null" || text == "NULL") return false;
  if (text[0] == '-' || text[0] == '*') return false;
  for (char c : text) {
    if (!plain_char(c)) return false;
  }
  return true;
}

std::string string_yaml(const std::string& text) {
  if (plain_is_safe(text)) return text;
  static const char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char c : text) {
    const unsigned char byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20 || byte == 0x7f) {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string to_yaml(bool value) { return value ? "true" : "false"; }
std::string to_yaml(int value) { return std::to_string(value); }
std::string to_yaml(uint64_t value) { return std::to_string(value); }
std::string to_yaml(float value) { return float_text(value); }
std::string to_yaml(const std::string& value) { return string_yaml(value); }
std::string to_yaml(const std::vector<std::string>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + string_yaml(values[i]);
  return out + "]";
}

}  // namespace

void set_field(const ConfigKey& key, Config& cfg, const YAML::Node& value,
               const std::string& context) {
  std::visit([&](auto* field) { read_value(*field, value, context); }, key.field(cfg));
}

std::string field_yaml(const ConfigKey& key, const Config& cfg) {
  return std::visit([](const auto* field) { return to_yaml(*field); }, key.const_field(cfg));
}

std::string float_text(float value) {
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

}  // namespace relora::config_detail
