// Models turn one pre-tokenized word into ids.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qkscope::text::detail {

using Vocab = std::unordered_map<std::string, int64_t>;

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one non-empty word (valid UTF-8) to `out`.
  virtual void tokenize(std::string_view word, std::vector<int64_t>& out) const = 0;
  virtual const Vocab& vocab() const = 0;
};

// Id -> token for a vocabulary (ids may have holes).
std::unordered_map<int64_t, std::string> invert(const Vocab& vocab);

}  // namespace qkscope::text::detail
