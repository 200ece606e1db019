#include "pre_tokenizers.h"

#include <utility>

#include "regex.h"
#include "unicode.h"
#include "utf8.h"

namespace qkscope::text::detail {
namespace {

class BertPreTokenizer final : public PreTokenizer {
 public:
  // HF splits on whitespace (removed) and then on punctuation (isolated, one character each);
  // one pass over the code points does both.
  void pre_tokenize(std::vector<std::string>& pieces) const override {
    std::vector<std::string> out;
    for (const std::string& piece : pieces) {
      std::string word;
      std::size_t pos = 0;
      while (pos < piece.size()) {
        const std::size_t start = pos;
        const char32_t cp = next_code_point(piece, pos);
        const bool space = is_whitespace(cp);
        if (space || is_bert_punctuation(cp)) {
          if (!word.empty()) out.push_back(std::move(word));
          word.clear();
          if (!space) out.emplace_back(piece, start, pos - start);
        } else {
          word.append(piece, start, pos - start);
        }
      }
      if (!word.empty()) out.push_back(std::move(word));
    }
    pieces = std::move(out);
  }
};

// NormalizedString::split's handling of the delimiters, on HF's list of matches and gaps.
std::vector<Span> apply_behavior(std::vector<Span> spans, SplitBehavior behavior) {
  std::vector<Span> kept;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      return spans;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans)
        if (!s.is_match) kept.push_back(s);
      return kept;
    case SplitBehavior::kContiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      return kept;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      return kept;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().begin = it->begin;
        } else {
          kept.push_back(*it);
        }
        previous_match = it->is_match;
      }
      return std::vector<Span>(kept.rbegin(), kept.rend());
  }
  return spans;
}

class Split final : public PreTokenizer {
 public:
  Split(std::string_view pattern, bool literal, SplitBehavior behavior, bool invert)
      : regex_(pattern, literal), behavior_(behavior), invert_(invert) {}

  void pre_tokenize(std::vector<std::string>& pieces) const override {
    std::vector<std::string> out;
    for (const std::string& piece : pieces) {
      std::vector<Span> spans = regex_.find_matches(piece);
      if (invert_)
        for (Span& s : spans) s.is_match = !s.is_match;
      for (const Span& s : apply_behavior(std::move(spans), behavior_)) {
        if (s.end > s.begin) out.emplace_back(piece, s.begin, s.end - s.begin);
      }
    }
    pieces = std::move(out);
  }

 private:
  Regex regex_;
  SplitBehavior behavior_;
  bool invert_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<std::string>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_bert_pre_tokenizer() {
  return std::make_unique<BertPreTokenizer>();
}

std::unique_ptr<PreTokenizer> make_split(std::string_view pattern, bool literal,
                                         SplitBehavior behavior, bool invert) {
  return std::make_unique<Split>(pattern, literal, behavior, invert);
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer_sequence(
    std::vector<std::unique_ptr<PreTokenizer>> steps) {
  return std::make_unique<Sequence>(std::move(steps));
}

}  // namespace qkscope::text::detail
