#include "sequence_lines.h"

#include "qkscope/error.h"
#include "qkscope/qk_store.h"

namespace qkscope::cli {

void SequenceLines::note(int64_t sequence, int64_t line, double cutoff) {
  if (QkStore::priority(seed_, sequence) >= cutoff) return;
  const auto [it, fresh] = lines_.emplace(sequence, line);
  QKSCOPE_CHECK(fresh || it->second == line,
                "sequence {} is line {} of the input, but line {} was recorded for it (a "
                "checkpoint of another corpus?)", sequence, line, it->second);
}

void SequenceLines::prune(double cutoff) {
  if (lines_.size() < 2 * after_prune_ + 1024) return;
  for (auto it = lines_.begin(); it != lines_.end();)
    it = QkStore::priority(seed_, it->first) >= cutoff ? lines_.erase(it) : std::next(it);
  after_prune_ = lines_.size();
}

std::optional<int64_t> SequenceLines::line_of(int64_t sequence) const {
  const auto it = lines_.find(sequence);
  if (it == lines_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::pair<int64_t, int64_t>> SequenceLines::lines() const {
  return {lines_.begin(), lines_.end()};
}

}  // namespace qkscope::cli
