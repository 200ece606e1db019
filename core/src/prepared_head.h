// A head made ready for the engine's pass: where its vectors are read from, their squared
// norms, and which keys each query pairs with (SPEC 3, pairs).
#pragma once

#include <cstdint>
#include <vector>

#include "head_metrics.h"

namespace qkscope::detail {

// A run of tokens whose queries pair with keys of the same run (a sequence, or all tokens).
struct Region {
  int64_t begin = 0, end = 0;
};

// The head as the pass reads it. In sequence and causal scope the vectors are read where they
// are, in the site's [token, head, dim] layout: no copy, and the pass reads each token from
// memory once, when its sequence comes. All scope (every key read again for each block of
// queries) and --center (centroids first) work on contiguous copies; with --center the Gram
// matrices read centred float copies. Squared norms of the distance vectors are in double and,
// for the float screen, in float. Tokens arrive sorted by (sequence, position), which QkData
// guarantees.
struct PreparedHead {
  int64_t n = 0;
  int dim = 0;
  const float* q_vec = nullptr;               // token t's captured query: q_vec + t * stride
  const float* k_vec = nullptr;
  int64_t stride = 0;
  const float* q_gram = nullptr;              // what the Gram matrices read: q_vec, or the
  const float* k_gram = nullptr;              // centred copies (stride dim)
  int64_t gram_stride = 0;
  std::vector<float> q_copy, k_copy;          // [n, dim] contiguous copies (all scope, --center)
  std::vector<float> q_centered, k_centered;  // [n, dim] float(v - mean), with --center only
  std::vector<double> q_mean, k_mean;         // [dim]; zero without --center
  bool norms_ready = false;                   // prepare computed the norms (with the copies)
  std::vector<double> q_norm2, k_norm2;       // [n] squared norms of the distance vectors
  std::vector<double> q_len, k_len;           // [n] their square roots
  std::vector<float> k_norm2_f, k_len_f;      // [n] the same in float, for the screen
  double max_c2 = 0, max_inv_c2 = 0;          // over the grid, for the float screen's range
  std::vector<Region> regions;
  std::vector<int64_t> key_end;               // per query: its keys are [region.begin, key_end)
  std::vector<int64_t> region_begin;          // per query: its region's begin
  bool centred() const { return q_gram != q_vec; }
};

// Fills `h` (reusing its memory: a worker prepares many heads of the same size). With --center
// it also computes the norms (of the centred vectors) and returns false if a token's q or k
// holds NaN or Inf; otherwise the pass computes the norms (compute_norms in head_engine.h).
bool prepare(const HeadInput& in, const MetricOptions& options, PreparedHead& h);

// Fills in the roots and float copies of tokens [begin, end)'s squared norms.
void finish_norms(PreparedHead& h, int64_t begin, int64_t end);

}  // namespace qkscope::detail
