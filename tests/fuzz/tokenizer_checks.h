// Properties every loaded tokenizer must have on any text (shared by the tokenizer targets).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "fuzz_util.h"
#include "qkscope/error.h"
#include "qkscope/text/tokenizer.h"

namespace qkscope::fuzz {

// Encodes `text` every way the Tokenizer offers and checks that the results agree:
//   - encode() is prefix_ids() + encode_plain() + suffix_ids();
//   - every id is in [0, vocab_size()), and so is pad_id();
//   - encode_chunks() respects its length and its content ids concatenate to encode_plain().
// Invalid UTF-8 must be refused by every entry point with a qkscope::Error.
inline void check_tokenizer(const text::Tokenizer& tokenizer, std::string_view text,
                            std::size_t chunk_room) {
  const int64_t vocab_size = tokenizer.vocab_size();
  FUZZ_EXPECT(vocab_size >= 0);
  FUZZ_EXPECT(tokenizer.pad_id() >= 0 && tokenizer.pad_id() < vocab_size);
  (void)tokenizer.name();

  std::vector<int64_t> plain;
  try {
    plain = tokenizer.encode_plain(text);
  } catch (const Error&) {
    // Only invalid UTF-8 (or a tokenizer.json whose model cannot encode this text) is refused;
    // the other entry points must then refuse it too.
    bool refused = false;
    try {
      tokenizer.encode(text);
    } catch (const Error&) {
      refused = true;
    }
    FUZZ_EXPECT(refused);
    return;
  }
  const std::vector<int64_t> full = tokenizer.encode(text);
  const auto& prefix = tokenizer.prefix_ids();
  const auto& suffix = tokenizer.suffix_ids();
  FUZZ_EXPECT(full.size() == prefix.size() + plain.size() + suffix.size());
  FUZZ_EXPECT(std::equal(prefix.begin(), prefix.end(), full.begin()));
  FUZZ_EXPECT(std::equal(plain.begin(), plain.end(), full.begin() + prefix.size()));
  FUZZ_EXPECT(std::equal(suffix.begin(), suffix.end(), full.end() - suffix.size()));
  for (int64_t id : full) {
    FUZZ_EXPECT(id >= 0 && id < vocab_size);
  }
  for (int64_t id : plain) (void)tokenizer.id_to_token(id);

  const std::size_t max_length = prefix.size() + suffix.size() + 1 + chunk_room;
  const auto chunks = tokenizer.encode_chunks(text, max_length);
  FUZZ_EXPECT(!chunks.empty());
  std::vector<int64_t> joined;
  for (const auto& chunk : chunks) {
    FUZZ_EXPECT(chunk.size() <= max_length);
    FUZZ_EXPECT(chunk.size() >= prefix.size() + suffix.size());
    FUZZ_EXPECT(std::equal(prefix.begin(), prefix.end(), chunk.begin()));
    FUZZ_EXPECT(std::equal(suffix.begin(), suffix.end(), chunk.end() - suffix.size()));
    joined.insert(joined.end(), chunk.begin() + prefix.size(), chunk.end() - suffix.size());
  }
  FUZZ_EXPECT(joined == plain);
}

}  // namespace qkscope::fuzz
