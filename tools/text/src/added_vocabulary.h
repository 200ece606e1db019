// Added tokens ([CLS], [MASK], <|endoftext|>, user tokens): found in the text before the model
// sees it, as HF's AddedVocabulary finds them. Tokens with normalized=false are matched in the
// raw text; tokens with normalized=true are matched, in their normalized form, in each stretch
// of normalized text between the first ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qkscope::text::detail {

class Normalizer;

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool single_word = false;  // only where no word character touches either side
  bool lstrip = false;       // also swallows the whitespace on its left
  bool rstrip = false;       // also swallows the whitespace on its right
  bool normalized = true;    // matched after normalization (HF's default for non-special)
  bool special = false;
};

// A stretch of text: an added token (id set) or text for the model, [begin, end) in bytes.
struct Segment {
  std::size_t begin = 0;
  std::size_t end = 0;
  std::optional<int64_t> id;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // `normalizer` (may be null) gives normalized tokens their pattern; it is not kept.
  AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer);

  // Stretches of `text` (valid UTF-8, non-empty) around the tokens of one set, in order,
  // covering the whole text. Leftmost-longest matching, like HF's Aho-Corasick tries.
  std::vector<Segment> split_raw(std::string_view text) const { return split(text, raw_); }
  std::vector<Segment> split_normalized(std::string_view text) const {
    return split(text, normalized_);
  }

  const std::vector<AddedToken>& tokens() const noexcept { return tokens_; }
  bool empty() const noexcept { return tokens_.empty(); }

 private:
  struct Pattern {
    std::string text;
    std::size_t token;  // index into tokens_
  };
  struct PatternSet {
    // Patterns by first byte, longest first, so the first hit at a position is the longest.
    std::vector<std::vector<Pattern>> by_first_byte = std::vector<std::vector<Pattern>>(256);
    bool empty = true;
  };

  static void add(PatternSet& set, std::string text, std::size_t token);
  std::vector<Segment> split(std::string_view text, const PatternSet& set) const;

  std::vector<AddedToken> tokens_;
  PatternSet raw_;
  PatternSet normalized_;
};

}  // namespace qkscope::text::detail
