// GPT-2's byte-level alphabet and pre-tokenization regex, as HuggingFace's ByteLevel
// pre-tokenizer applies them. Useful on their own to show byte-level tokens to people.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qkscope::text {

// The printable code point GPT-2's bytes_to_unicode() assigns to `byte`: bytes that are
// printable Latin-1 map to themselves, the 68 others to U+0100.. in byte order
// (32 ' ' -> U+0120 'Ġ', 10 '\n' -> U+010A 'Ċ').
char32_t byte_to_unicode(unsigned char byte) noexcept;

// The inverse map; nullopt for code points outside the 256-symbol alphabet.
std::optional<unsigned char> unicode_to_byte(char32_t cp) noexcept;

// `bytes` (any bytes) written in the byte-level alphabet, as UTF-8.
std::string to_byte_level(std::string_view bytes);

// Splits valid UTF-8 `text` with GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (every byte of the text lands in exactly one piece). \s means Unicode White_Space, as in
// Python's `regex` module and HuggingFace's Oniguruma. Throws qkscope::FormatError on
// invalid UTF-8.
std::vector<std::string> gpt2_split(std::string_view text);

}  // namespace qkscope::text
