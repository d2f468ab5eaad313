// JSON parsing into JsonValue and string quoting (see json.h).
#include "data_pipeline/json.h"

#include <cstdio>
#include <cstdlib>

#include "data_pipeline/utf8.h"

namespace relora {
namespace {

constexpr int kMaxDepth = 512;  // nesting limit, so hostile input cannot exhaust the stack

// Recursive-descent parser over one text; the first error stops it.
class JsonParser {
 public:
  explicit JsonParser(std::string_view text) : text_(text) {}

  bool parse(JsonValue* out, std::string* error) {
    skip_whitespace();
    if (parse_value(out, 0)) {
      skip_whitespace();
      if (pos_ != text_.size()) fail("unexpected text after the JSON value");
    }
    if (!error_.empty()) {
      *error = error_ + " at column " + std::to_string(error_pos_ + 1);
      return false;
    }
    return true;
  }

 private:
  bool fail(const std::string& what) {
    if (error_.empty()) {
      error_ = what;
      error_pos_ = pos_;
    }
    return false;
  }
  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }
  void skip_whitespace() {
    while (!at_end() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' ||
                         text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool consume_word(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  bool parse_value(JsonValue* out, int depth) {
    if (depth > kMaxDepth)
      return fail("nested deeper than " + std::to_string(kMaxDepth) + " levels");
    switch (peek()) {
      case '{': return parse_object(out, depth);
      case '[': return parse_array(out, depth);
      case '"': out->type = JsonValue::Type::string; return parse_string(&out->string);
      case 't':
      case 'f':
        out->type = JsonValue::Type::boolean;
        out->boolean = peek() == 't';
        if (consume_word(out->boolean ? "true" : "false")) return true;
        return fail("invalid literal (expected true or false)");
      case 'n':
        out->type = JsonValue::Type::null;
        if (consume_word("null")) return true;
        return fail("invalid literal (expected null)");
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return parse_number(out);
        if (at_end()) return fail("unexpected end of the line, a value was expected");
        return fail(std::string("unexpected character '") + peek() + "', a value was expected");
    }
  }

  bool parse_object(JsonValue* out, int depth) {
    out->type = JsonValue::Type::object;
    ++pos_;  // '{'
    skip_whitespace();
    if (peek() == '}') {
      ++pos_;
      return true;
    }
    while (true) {
      if (peek() != '"') return fail("expected a string as object key");
      std::string key;
      if (!parse_string(&key)) return false;
      skip_whitespace();
      if (peek() != ':') return fail("expected ':' after an object key");
      ++pos_;
      skip_whitespace();
      JsonValue value;
      if (!parse_value(&value, depth + 1)) return false;
      out->object.emplace_back(std::move(key), std::move(value));
      skip_whitespace();
      if (peek() == ',') {
        ++pos_;
        skip_whitespace();
      } else if (peek() == '}') {
        ++pos_;
        return true;
      } else {
        return fail("expected ',' or '}' in an object");
      }
    }
  }

  bool parse_array(JsonValue* out, int depth) {
    out->type = JsonValue::Type::array;
    ++pos_;  // '['
    skip_whitespace();
    if (peek() == ']') {
      ++pos_;
      return true;
    }
    while (true) {
      out->array.emplace_back();
      if (!parse_value(&out->array.back(), depth + 1)) return false;
      skip_whitespace();
      if (peek() == ',') {
        ++pos_;
        skip_whitespace();
      } else if (peek() == ']') {
        ++pos_;
        return true;
      } else {
        return fail("expected ',' or ']' in an array");
      }
    }
  }

  // Four hex digits after "\u"; false (with the error set) if they are not there.
  bool parse_hex4(uint32_t* value) {
    if (pos_ + 4 > text_.size()) return fail("truncated \\u escape");
    *value = 0;
    for (int k = 0; k < 4; ++k) {
      char c = text_[pos_ + k];
      uint32_t digit;
      if (c >= '0' && c <= '9') {
        digit = static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        digit = static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        digit = static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return fail("invalid \\u escape (four hex digits expected)");
      }
      *value = *value * 16 + digit;
    }
    pos_ += 4;
    return true;
  }

  bool parse_string(std::string* out) {
    const size_t opening_quote = pos_;
    ++pos_;
    while (true) {
      // Copy the run of plain bytes up to the next quote, backslash or control character.
      size_t run_start = pos_;
      while (!at_end()) {
        unsigned char c = static_cast<unsigned char>(text_[pos_]);
        if (c == '"' || c == '\\' || c < 0x20) break;
        ++pos_;
      }
      out->append(text_.data() + run_start, pos_ - run_start);
      if (at_end()) {
        pos_ = opening_quote;
        return fail("unterminated string");
      }
      char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c != '\\') return fail("control character in a string (it must be escaped)");
      size_t escape_start = pos_;
      ++pos_;
      if (at_end()) {
        pos_ = opening_quote;
        return fail("unterminated string");
      }
      char e = text_[pos_++];
      switch (e) {
        case '"': out->push_back('"'); break;
        case '\\': out->push_back('\\'); break;
        case '/': out->push_back('/'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          uint32_t code = 0;
          if (!parse_hex4(&code)) return false;
          if (code >= 0xDC00 && code <= 0xDFFF) {
            pos_ = escape_start;
            return fail("unpaired low surrogate \\u escape");
          }
          if (code >= 0xD800 && code <= 0xDBFF) {
            uint32_t low = 0;
            if (!consume_word("\\u") || !parse_hex4(&low) || low < 0xDC00 || low > 0xDFFF) {
              error_.clear();
              pos_ = escape_start;
              return fail("high surrogate \\u escape without its low surrogate");
            }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(code, out);
          break;
        }
        default: pos_ = escape_start; return fail(std::string("invalid escape '\\") + e + "'");
      }
    }
  }

  bool parse_number(JsonValue* out) {
    // Grammar: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
    size_t start = pos_;
    auto digits = [&]() {
      size_t first = pos_;
      while (!at_end() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      return pos_ > first;
    };
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (!digits()) {
      return fail("invalid number");
    }
    if (peek() == '.') {
      ++pos_;
      if (!digits()) return fail("invalid number (digits expected after '.')");
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!digits()) return fail("invalid number (digits expected in the exponent)");
    }
    out->type = JsonValue::Type::number;
    out->number = std::strtod(std::string(text_.substr(start, pos_ - start)).c_str(), nullptr);
    return true;
  }

  std::string_view text_;
  size_t pos_ = 0;
  std::string error_;
  size_t error_pos_ = 0;
};

}  // namespace

const JsonValue* JsonValue::find(std::string_view key) const {
  if (type != Type::object) return nullptr;
  for (auto it = object.rbegin(); it != object.rend(); ++it) {
    if (it->first == key) return &it->second;
  }
  return nullptr;
}

const char* JsonValue::type_name() const {
  switch (type) {
    case Type::null: return "null";
    case Type::boolean: return "a boolean";
    case Type::number: return "a number";
    case Type::string: return "a string";
    case Type::array: return "an array";
    case Type::object: return "an object";
  }
  return "?";
}

bool parse_json(std::string_view text, JsonValue* out, std::string* error) {
  *out = JsonValue();
  return JsonParser(text).parse(out, error);
}

std::string json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned char>(c));
          out += escaped;
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

}  // namespace relora
