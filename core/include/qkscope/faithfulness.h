// How faithful a joint query/key picture is (SPEC section 4, report.json): for each query with
// at least k keys in its pair scope (SPEC 3), A_i = its k keys of largest q_i.k_j and N_i = its
// k nearest keys (in the original space at a constant c after the report's translation, or in a
// 2-D picture); the faithfulness is the mean over those queries of |A_i ∩ N_i| / k.
//
// Exact: dot products and distances in double from the float inputs, every key of the scope
// ranked (no screening). Ties in either ranking go to the smaller token index. Cost per head
// O(|P| (D + log k)) per constant, meant for a report's sample (hundreds to a few thousand
// tokens), not for whole captures in `all` scope.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "qkscope/metrics.h"

namespace qkscope {

// One head's tokens, sorted by (sequence, position) as QkData keeps them. Non-owning.
struct HeadVectors {
  int64_t n = 0;                      // tokens
  int dim = 0;                        // D
  const float* q = nullptr;           // token t's query: q + t * stride, D floats
  const float* k = nullptr;           // token t's key:   k + t * stride
  int64_t stride = 0;                 // floats between consecutive tokens (D when contiguous)
  const int64_t* sequence = nullptr;  // [n]
  const int64_t* position = nullptr;  // [n]
};

// The keys of query i in scope (SPEC 3, pairs), as token indices in increasing order.
void keys_in_scope(const HeadVectors& head, PairScope scope, int64_t i, std::vector<int64_t>& out);

// A_i for every query with at least k keys in scope.
struct AttendedSets {
  int k = 0;
  std::vector<int64_t> queries;  // qualifying queries, increasing
  std::vector<int64_t> keys;     // [queries.size() * k]: A_i in decreasing q.k (ties: index)
};
AttendedSets most_attended(const HeadVectors& head, PairScope scope, int k);

// t = mean_t(c q_t) - mean_t(k_t / c) over the head's tokens (double, size D): keys k/c + t
// share the queries' centroid.
std::vector<double> key_translation(const HeadVectors& head, double c);

// faithfulness_d at constant c: N_i by ||c q_i - (k_j / c + t)||, t = key_translation(head, c).
// nullopt when no query qualifies. `attended` comes from most_attended(head, scope, k).
std::optional<double> faithfulness_d(const HeadVectors& head, const AttendedSets& attended,
                                     PairScope scope, double c);

// faithfulness_2d: N_i by Euclidean distance in a picture. q_xy, k_xy: [n, 2] row-major, the
// 2-D positions of token t's query and key.
std::optional<double> faithfulness_2d(const HeadVectors& head, const AttendedSets& attended,
                                      PairScope scope, const float* q_xy, const float* k_xy);

}  // namespace qkscope
