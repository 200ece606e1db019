// The input line of each sequence a run's sample may still keep, for the sequences.* keys of a
// saved q/k file and of a checkpoint (qk_merge.h). A run does not hold one line per corpus
// sequence (that would grow with the corpus): it holds those whose priority is under the
// store's cutoff. In one process that is exactly the kept set: a sequence under the cutoff
// was admitted when it came (the cutoff only falls), and had it been evicted since, the cutoff
// would be at or below its priority. Under mpirun rank 0 also notes the other ranks' sequences
// under its own cutoff, a superset of the merged sample's (the merged cutoff is at most rank
// 0's): about K times the kept sequences, bounded by --max-tokens, not by the corpus.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

namespace qkscope::cli {

class SequenceLines {
 public:
  explicit SequenceLines(uint64_t seed) : seed_(seed) {}

  // Notes `sequence`'s line unless its priority is at or above `cutoff` (the store would refuse
  // it). Throws Error when the sequence already has another line.
  void note(int64_t sequence, int64_t line, double cutoff);
  // Drops the sequences at or above `cutoff` when the notes have doubled since the last time
  // (amortised: a store's cutoff falls as it evicts).
  void prune(double cutoff);

  // The line noted for `sequence`, if any.
  std::optional<int64_t> line_of(int64_t sequence) const;
  // (sequence, line) in increasing sequence order: SequenceRange::lines.
  std::vector<std::pair<int64_t, int64_t>> lines() const;
  size_t size() const { return lines_.size(); }

 private:
  uint64_t seed_;
  std::map<int64_t, int64_t> lines_;
  size_t after_prune_ = 0;
};

}  // namespace qkscope::cli
