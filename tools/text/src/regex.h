// PCRE2 (UTF + UCP) regex, used the way HuggingFace uses its Oniguruma regexes: to cut text
// into matches and the gaps between them.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace qkscope::text::detail {

// One stretch of a split text: [begin, end) in bytes; is_match tells a match from a gap.
struct Span {
  std::size_t begin = 0;
  std::size_t end = 0;
  bool is_match = false;
};

class Regex {
 public:
  // `literal`: match `pattern` as plain text (HF's Split with a String pattern).
  // Throws qkscope::FormatError with PCRE2's message and offset on a bad pattern.
  explicit Regex(std::string_view pattern, bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // HF's Pattern::find_matches: matches and gaps covering all of valid UTF-8 `text`, in order.
  // Empty matches are kept (they separate gaps); after one, the search moves on by a code
  // point. An empty text gives one empty gap.
  std::vector<Span> find_matches(std::string_view text) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*, kept out of the header
};

}  // namespace qkscope::text::detail
