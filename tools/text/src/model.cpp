#include "model.h"

namespace qkscope::text::detail {

std::unordered_map<int64_t, std::string> invert(const Vocab& vocab) {
  std::unordered_map<int64_t, std::string> out;
  out.reserve(vocab.size());
  for (const auto& [token, id] : vocab) out.emplace(id, token);
  return out;
}

}  // namespace qkscope::text::detail
