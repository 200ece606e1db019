// UTF-8 helpers. Inputs are validated once at the door (check_utf8); everything after that
// walks text known to be valid, so the walkers do not re-check.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace qkscope::text::detail {

// Throws qkscope::FormatError naming the offset of the first byte of the first ill-formed
// sequence (Unicode Table 3-7: no overlongs, no surrogates, nothing above U+10FFFF).
// `what` names the text in the message ("text", "vocabulary entry", ...).
void check_utf8(std::string_view text, std::string_view what = "text");

// Decodes the code point starting at `pos` of valid UTF-8 and advances `pos` past it.
char32_t next_code_point(std::string_view text, std::size_t& pos) noexcept;

// Byte length of the sequence whose lead byte is `lead` (valid UTF-8 only).
inline std::size_t sequence_length(unsigned char lead) noexcept {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// Byte length of the code point that ends at `end` (valid UTF-8, end > 0).
std::size_t last_sequence_length(std::string_view text, std::size_t end) noexcept;

void append_utf8(std::string& out, char32_t cp);

// Number of code points of valid UTF-8.
std::size_t count_code_points(std::string_view text) noexcept;

}  // namespace qkscope::text::detail
