// BPE: split a word into characters, then apply merges by rank (lowest first, leftmost on
// ties), as HF's BPE model does. Byte-level BPE is this model fed by the ByteLevel
// pre-tokenizer.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model.h"

namespace qkscope::text::detail {

struct BpeOptions {
  std::optional<std::string> unk_token;                  // none: unknown characters vanish
  std::optional<std::string> continuing_subword_prefix;  // on every non-first character
  std::optional<std::string> end_of_word_suffix;         // on the last character
  bool fuse_unk = false;       // consecutive unknown characters give one unk
  bool byte_fallback = false;  // unknown characters as <0xAB> byte tokens when all exist
  bool ignore_merges = false;  // a word that is itself in the vocabulary is one token
};

// merges[rank] = (left, right). Throws qkscope::FormatError naming `source` when a merge
// uses a token missing from the vocabulary or its result is missing. A unk_token missing from
// the vocabulary is an error only when a word needs it (as in HF).
std::unique_ptr<Model> make_bpe(Vocab vocab,
                                const std::vector<std::pair<std::string, std::string>>& merges,
                                BpeOptions options, const std::string& source);

}  // namespace qkscope::text::detail
