// The parts of Tokenizer every backend shares: the UTF-8 check at the door, special tokens
// and chunking.
#include "qkscope/text/tokenizer.h"

#include <algorithm>
#include <utility>

#include "qkscope/error.h"
#include "utf8.h"

namespace qkscope::text {

Tokenizer::Tokenizer(std::vector<int64_t> prefix, std::vector<int64_t> suffix)
    : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}

Tokenizer::~Tokenizer() = default;

std::vector<int64_t> Tokenizer::encode_plain(std::string_view text) const {
  detail::check_utf8(text);
  return encode_valid(text);
}

std::vector<int64_t> Tokenizer::encode(std::string_view text) const {
  const std::vector<int64_t> content = encode_plain(text);
  std::vector<int64_t> ids;
  ids.reserve(prefix_.size() + content.size() + suffix_.size());
  ids.insert(ids.end(), prefix_.begin(), prefix_.end());
  ids.insert(ids.end(), content.begin(), content.end());
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

std::vector<std::vector<int64_t>> Tokenizer::encode_chunks(std::string_view text,
                                                           std::size_t max_length) const {
  const std::size_t specials = prefix_.size() + suffix_.size();
  QKSCOPE_CHECK_AS(UsageError, max_length > specials,
                   "chunk length {} leaves no room for text: {} adds {} special token(s) to "
                   "every chunk",
                   max_length, name(), specials);
  const std::vector<int64_t> content = encode_plain(text);
  const std::size_t room = max_length - specials;
  std::vector<std::vector<int64_t>> chunks;
  std::size_t begin = 0;
  do {
    const std::size_t end = std::min(content.size(), begin + room);
    std::vector<int64_t> chunk;
    chunk.reserve(specials + end - begin);
    chunk.insert(chunk.end(), prefix_.begin(), prefix_.end());
    chunk.insert(chunk.end(), content.begin() + static_cast<std::ptrdiff_t>(begin),
                 content.begin() + static_cast<std::ptrdiff_t>(end));
    chunk.insert(chunk.end(), suffix_.begin(), suffix_.end());
    chunks.push_back(std::move(chunk));
    begin = end;
  } while (begin < content.size());
  return chunks;
}

}  // namespace qkscope::text
