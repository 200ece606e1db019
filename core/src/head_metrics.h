// One head's share of the scaling metrics (SPEC section 3): threshold, weighted correlation
// per scale, norm medians. Metric 2 and the choice of c need every head and are done by
// compute_ctable() in metrics.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "qkscope/metrics.h"

namespace qkscope::detail {

// One head's vectors, gathered from a site: token t's query is q[t * stride .. + head_dim].
struct HeadInput {
  const float* q = nullptr;
  const float* k = nullptr;
  int64_t stride = 0;          // floats between consecutive tokens (H * D in a site)
  int head_dim = 0;
  int64_t n_tokens = 0;
  const int64_t* sequence = nullptr;  // [n_tokens]
  const int64_t* position = nullptr;  // [n_tokens]
};

struct HeadScale {
  std::optional<double> wcorr;  // R(c)
  int64_t queries = 0;          // |Q(c)|
  int64_t near_pairs = 0;
};

struct HeadOutcome {
  int64_t pairs = 0;                  // |P|
  std::optional<double> threshold;    // d
  double median_q_norm = 0, median_k_norm = 0;
  std::vector<HeadScale> scales;      // per options.scales
  int64_t nonfinite_tokens = 0;       // tokens left out: their q or k holds NaN or Inf
};

// Tokens whose q or k holds NaN or Inf are left out of the head (and counted).
HeadOutcome compute_head(const HeadInput& input, const MetricOptions& options);

// A head's input without the tokens whose q or k holds NaN or Inf. `input` points into `q`,
// `k`, `sequence`, `position` when tokens were dropped, and is the original input otherwise
// (the common case costs one scan and no copy).
struct FiniteHead {
  HeadInput input;
  std::vector<float> q, k;
  std::vector<int64_t> sequence, position;
};
FiniteHead drop_nonfinite_tokens(const HeadInput& input);

}  // namespace qkscope::detail
