// Normalizers: the text transforms HuggingFace applies before pre-tokenization, each on one
// stretch of text between added tokens.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "unicode.h"

namespace qkscope::text::detail {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8; so is the result.
  virtual std::string normalize(std::string_view text) const = 0;
};

struct BertNormalizerOptions {
  bool clean_text = true;            // drop control chars, NUL and U+FFFD; whitespace -> ' '
  bool handle_chinese_chars = true;  // spaces around CJK ideographs
  bool strip_accents = true;         // NFD, then drop Mn (callers resolve HF's null)
  bool lowercase = true;
};

std::unique_ptr<Normalizer> make_bert_normalizer(BertNormalizerOptions options);
std::unique_ptr<Normalizer> make_lowercase();
// HF's StripAccents drops Mn code points without decomposing first (pair it with NFD).
std::unique_ptr<Normalizer> make_strip_accents();
std::unique_ptr<Normalizer> make_unicode_normalizer(NormalForm form);
std::unique_ptr<Normalizer> make_normalizer_sequence(
    std::vector<std::unique_ptr<Normalizer>> steps);

}  // namespace qkscope::text::detail
