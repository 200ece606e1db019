// QkData: captured queries and keys of a run, materialised per site, in the layout of the
// q/k file (SPEC section 2). Produced by QkStore::take() and by read_qk_file(); consumed by the
// metric engine and write_qk_file().
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qkscope {

// One attention site (one self-attention computation of one layer).
struct SiteData {
  int layer = 0;               // site number, in execution order
  std::string module;          // module path, e.g. "encoder.layer.3.attention.self"; may be empty
  double prescale = 1.0;       // constant factor stepped over on q (SPEC 1); 1 if none
  int n_heads = 0;             // heads stored here (H)
  int head_dim = 0;            // D
  std::vector<int> head_index; // model head number of each stored head, size H (0..H-1 when all)
  std::vector<float> q;        // [N, H, D] row-major, N = QkData::n_tokens()
  std::vector<float> k;        // [N, H, D] row-major, keys after key-head expansion
};

// All captured tokens, in the same order in every site (sorted by sequence, then position).
struct QkData {
  std::vector<SiteData> sites;      // in layer order
  std::vector<int64_t> sequence;    // [N] sequence index of each token
  std::vector<int64_t> position;    // [N] position of each token in its sequence
  std::vector<int64_t> token_id;    // [N], or empty when the input had no token ids (images)
  int64_t tokens_seen = 0;          // tokens offered to the store (>= N when a budget applied)
  int64_t sequences_seen = 0;       // sequences offered to the store

  // How a QkStore sampled these sequences; what merging them with another sample needs (see
  // QkStore::merge). Absent for data not sampled by a store (a file from another tool).
  struct Sample {
    uint64_t seed = 0;        // priorities are QkStore::priority(seed, sequence)
    int64_t max_tokens = 0;   // the budget; 0 for none
    double cutoff = 2.0;      // lowest priority evicted (2: none); sequences at or above it
                              // may be missing, so a merge drops them from every part
  };
  std::optional<Sample> sample;

  int64_t n_tokens() const { return static_cast<int64_t>(sequence.size()); }
  bool has_token_ids() const { return !token_id.empty(); }
};

// Checks the invariants above (sizes agree, head_index in range and distinct, ...); throws
// qkscope::Error naming the first one broken. `where` prefixes the message (a file name).
void validate(const QkData& data, const std::string& where);

}  // namespace qkscope
