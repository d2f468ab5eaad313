// UTF-8: validation (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF)
// and encoding one code point.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace relora {

// Offset of the first byte where `text` stops being valid UTF-8, or text.size() if all of
// it is valid.
size_t first_invalid_utf8(std::string_view text);

// Appends code point `code_point` (at most U+10FFFF, not a surrogate) to `out` as UTF-8.
void append_utf8(uint32_t code_point, std::string* out);

}  // namespace relora
