#include "utf8.h"

#include "qkscope/error.h"

namespace qkscope::text::detail {

void check_utf8(std::string_view text, std::string_view what) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char b = s[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    // Allowed range of the second byte and number of continuation bytes (Table 3-7): the
    // narrowed second-byte ranges are what exclude overlongs, surrogates and > U+10FFFF.
    unsigned char lo = 0x80, hi = 0xBF;
    std::size_t extra = 0;
    if (b >= 0xC2 && b <= 0xDF) {
      extra = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      extra = 2;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      extra = 3;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    }
    bool ok = extra > 0 && i + extra < n;  // a lead byte, and the text does not end early
    if (ok) ok = s[i + 1] >= lo && s[i + 1] <= hi;
    for (std::size_t k = 2; ok && k <= extra; ++k) ok = s[i + k] >= 0x80 && s[i + k] <= 0xBF;
    QKSCOPE_CHECK_AS(FormatError, ok, "{} is not valid UTF-8: bad byte sequence at byte offset {} "
                     "(byte 0x{:02X})", what, i, b);
    i += extra + 1;
  }
}

char32_t next_code_point(std::string_view text, std::size_t& pos) noexcept {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data()) + pos;
  const std::size_t len = sequence_length(s[0]);
  char32_t cp;
  switch (len) {
    case 1: cp = s[0]; break;
    case 2: cp = (char32_t(s[0] & 0x1F) << 6) | (s[1] & 0x3F); break;
    case 3:
      cp = (char32_t(s[0] & 0x0F) << 12) | (char32_t(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
      break;
    default:
      cp = (char32_t(s[0] & 0x07) << 18) | (char32_t(s[1] & 0x3F) << 12) |
           (char32_t(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
  }
  pos += len;
  return cp;
}

std::size_t last_sequence_length(std::string_view text, std::size_t end) noexcept {
  std::size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return end - start;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::size_t count_code_points(std::string_view text) noexcept {
  std::size_t n = 0;
  for (char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

}  // namespace qkscope::text::detail
