// Character classes and transforms exactly as HuggingFace's Rust code uses them (not as
// Python's unicodedata or PCRE2 would): see each function. Data comes from utf8proc.
#pragma once

#include <string>
#include <string_view>

namespace qkscope::text::detail {

// Rust's char::is_whitespace: the Unicode White_Space property (not just category Zs).
bool is_whitespace(char32_t cp) noexcept;

// BertNormalizer's is_control: categories Cc, Cf and Co (unicode_categories' is_other, which
// leaves out unassigned code points), except '\t', '\n' and '\r', which count as whitespace.
bool is_bert_control(char32_t cp) noexcept;

// BertPreTokenizer's is_bert_punc: ASCII punctuation (33-47, 58-64, 91-96, 123-126, so also
// "$+<=>^`|~", which Unicode files as symbols) or any P* category.
bool is_bert_punctuation(char32_t cp) noexcept;

// BertNormalizer's is_chinese_char: the CJK Unified Ideographs blocks (not Hangul, Hiragana
// or Katakana, which are written with spaces between words).
bool is_chinese_char(char32_t cp) noexcept;

// Category Mn (what strip_accents removes after NFD).
bool is_nonspacing_mark(char32_t cp) noexcept;

// Rust regex \w (Unicode): letters, marks, decimal digits, connector punctuation and the
// joiners. Used for added tokens' single_word rule.
bool is_word_char(char32_t cp) noexcept;

// Appends Rust's char::to_lowercase(cp): utf8proc's simple mapping, plus the one unconditional
// multi-character mapping of SpecialCasing.txt (U+0130 -> "i\u0307").
void append_lowercase(std::string& out, char32_t cp);

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };

// Unicode normalization of valid UTF-8 (canonical reordering included).
std::string normalize(std::string_view text, NormalForm form);

}  // namespace qkscope::text::detail
