// WordPiece (BERT): greedy longest-match-first over a word, continuation pieces prefixed "##".
#pragma once

#include <memory>
#include <string>

#include "model.h"

namespace qkscope::text::detail {

struct WordPieceOptions {
  std::string unk_token = "[UNK]";
  std::string continuing_subword_prefix = "##";
  std::size_t max_input_chars_per_word = 100;
};

// Throws qkscope::FormatError naming `source` when unk_token is not in `vocab`.
std::unique_ptr<Model> make_wordpiece(Vocab vocab, WordPieceOptions options,
                                      const std::string& source);

}  // namespace qkscope::text::detail
