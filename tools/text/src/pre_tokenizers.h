// Pre-tokenizers: cut one stretch of normalized text into the words the model sees.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qkscope::text::detail {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits each piece further (ByteLevel also rewrites them), in order, in place. Pieces are
  // valid UTF-8; empty pieces never come out (HF drops them too).
  virtual void pre_tokenize(std::vector<std::string>& pieces) const = 0;
};

// HF's SplitDelimiterBehavior.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// BertPreTokenizer: drop whitespace, isolate each punctuation character.
std::unique_ptr<PreTokenizer> make_bert_pre_tokenizer();

// Split: `pattern` is a PCRE2 regex, or plain text when `literal`.
std::unique_ptr<PreTokenizer> make_split(std::string_view pattern, bool literal,
                                         SplitBehavior behavior, bool invert);

// ByteLevel: optional leading space per piece, GPT-2 regex split, bytes to the byte alphabet.
std::unique_ptr<PreTokenizer> make_byte_level(bool add_prefix_space, bool use_regex);

std::unique_ptr<PreTokenizer> make_pre_tokenizer_sequence(
    std::vector<std::unique_ptr<PreTokenizer>> steps);

}  // namespace qkscope::text::detail
