#include "wordpiece.h"

#include <utility>

#include "qkscope/error.h"
#include "utf8.h"

namespace qkscope::text::detail {

namespace {

class WordPiece final : public Model {
 public:
  WordPiece(Vocab vocab, WordPieceOptions options, int64_t unk_id)
      : vocab_(std::move(vocab)), options_(std::move(options)), unk_id_(unk_id) {}

  // HF's WordPiece::tokenize: a word longer than max_input_chars_per_word, or with any
  // stretch no vocabulary entry covers, becomes a single unk token.
  void tokenize(std::string_view word, std::vector<int64_t>& out) const override {
    if (count_code_points(word) > options_.max_input_chars_per_word) {
      out.push_back(unk_id_);
      return;
    }
    const std::size_t mark = out.size();
    std::string candidate;
    std::size_t start = 0;
    while (start < word.size()) {
      std::size_t end = word.size();
      bool found = false;
      while (start < end) {
        candidate.clear();
        if (start > 0) candidate = options_.continuing_subword_prefix;
        candidate.append(word.substr(start, end - start));
        if (auto it = vocab_.find(candidate); it != vocab_.end()) {
          out.push_back(it->second);
          found = true;
          break;
        }
        end -= last_sequence_length(word, end);  // shorten by one code point
      }
      if (!found) {
        out.resize(mark);
        out.push_back(unk_id_);
        return;
      }
      start = end;
    }
  }

  const Vocab& vocab() const override { return vocab_; }

 private:
  Vocab vocab_;
  WordPieceOptions options_;
  int64_t unk_id_;
};

}  // namespace

std::unique_ptr<Model> make_wordpiece(Vocab vocab, WordPieceOptions options,
                                      const std::string& source) {
  const auto unk = vocab.find(options.unk_token);
  QKSCOPE_CHECK_AS(FormatError, unk != vocab.end(),
                   "{}: WordPiece unk_token '{}' is not in the vocabulary", source,
                   options.unk_token);
  const int64_t unk_id = unk->second;
  return std::make_unique<WordPiece>(std::move(vocab), std::move(options), unk_id);
}

}  // namespace qkscope::text::detail
