#include "added_vocabulary.h"

#include <algorithm>
#include <utility>

#include "normalizers.h"
#include "unicode.h"
#include "utf8.h"

namespace qkscope::text::detail {
namespace {

char32_t first_code_point(std::string_view s) {
  std::size_t pos = 0;
  return next_code_point(s, pos);
}

char32_t last_code_point(std::string_view s) {
  std::size_t pos = s.size() - last_sequence_length(s, s.size());
  return next_code_point(s, pos);
}

// Start of the whitespace run that ends `s` (HF's `\s*$`).
std::size_t trailing_space_start(std::string_view s) {
  std::size_t end = s.size();
  while (end > 0) {
    const std::size_t len = last_sequence_length(s, end);
    std::size_t pos = end - len;
    if (!is_whitespace(next_code_point(s, pos))) break;
    end -= len;
  }
  return end;
}

// Length of the whitespace run that starts `s` (HF's `^\s*`).
std::size_t leading_space_length(std::string_view s) {
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t next = pos;
    if (!is_whitespace(next_code_point(s, next))) break;
    pos = next;
  }
  return pos;
}

}  // namespace

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer)
    : tokens_(std::move(tokens)) {
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    if (t.content.empty()) continue;  // HF ignores empty added tokens
    if (!t.normalized) {
      add(raw_, t.content, i);
    } else {
      add(normalized_, normalizer ? normalizer->normalize(t.content) : t.content, i);
    }
  }
  for (PatternSet* set : {&raw_, &normalized_}) {
    for (auto& bucket : set->by_first_byte) {
      std::stable_sort(bucket.begin(), bucket.end(), [](const Pattern& a, const Pattern& b) {
        return a.text.size() > b.text.size();
      });
    }
  }
}

void AddedVocabulary::add(PatternSet& set, std::string text, std::size_t token) {
  if (text.empty()) return;  // a token its normalizer erased can never match
  const auto first = static_cast<unsigned char>(text[0]);
  set.by_first_byte[first].push_back({std::move(text), token});
  set.empty = false;
}

// HF's AddedVocabulary::find_matches.
std::vector<Segment> AddedVocabulary::split(std::string_view text, const PatternSet& set) const {
  if (set.empty) return {Segment{0, text.size(), std::nullopt}};
  std::vector<Segment> out;
  std::size_t done = 0;  // end of the last token taken (HF's start_offset)
  std::size_t pos = 0;
  while (pos < text.size()) {
    const Pattern* hit = nullptr;
    for (const Pattern& p : set.by_first_byte[static_cast<unsigned char>(text[pos])]) {
      if (text.compare(pos, p.text.size(), p.text) == 0) {
        hit = &p;
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[hit->token];
    std::size_t start = pos;
    std::size_t stop = pos + hit->text.size();
    if (token.single_word) {
      const bool free_left = start == 0 || !is_word_char(last_code_point(text.substr(0, start)));
      const bool free_right =
          stop == text.size() || !is_word_char(first_code_point(text.substr(stop)));
      if (!free_left || !free_right) {
        pos = stop;  // the match is consumed even when discarded, as in HF's iteration
        continue;
      }
    }
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), done);
    if (token.rstrip) stop += leading_space_length(text.substr(stop));
    if (done < start) out.push_back({done, start, std::nullopt});
    out.push_back({start, stop, token.id});
    done = stop;
    pos = stop;
  }
  if (done < text.size()) out.push_back({done, text.size(), std::nullopt});
  return out;
}

}  // namespace qkscope::text::detail
