#include "qkscope/faithfulness.h"

#include <algorithm>
#include <cmath>

#include "qkscope/error.h"

namespace qkscope {
namespace {

// The k best of `keys` by `value` (smaller first), ties to the smaller token index, into `out`.
template <class Value>
void k_smallest(std::vector<int64_t>& keys, int k, const Value& value,
                std::vector<std::pair<double, int64_t>>& scratch, std::vector<int64_t>& out) {
  scratch.clear();
  for (int64_t j : keys) scratch.emplace_back(value(j), j);
  std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.end());
  out.clear();
  for (int m = 0; m < k; ++m) out.push_back(scratch[static_cast<size_t>(m)].second);
}

// |A ∩ N| for two k-sets (A is small: k entries).
int overlap(const int64_t* a, const std::vector<int64_t>& n) {
  int hits = 0;
  for (int64_t j : n) hits += std::find(a, a + n.size(), j) != a + n.size();
  return hits;
}

template <class Distance>
std::optional<double> mean_overlap(const HeadVectors& head, const AttendedSets& attended,
                                   PairScope scope, const Distance& distance) {
  if (attended.queries.empty()) return std::nullopt;
  std::vector<int64_t> keys, nearest;
  std::vector<std::pair<double, int64_t>> scratch;
  double sum = 0;
  for (size_t a = 0; a < attended.queries.size(); ++a) {
    const int64_t i = attended.queries[a];
    keys_in_scope(head, scope, i, keys);
    QKSCOPE_ASSERT(static_cast<int64_t>(keys.size()) >= attended.k);
    k_smallest(keys, attended.k, [&](int64_t j) { return distance(i, j); }, scratch, nearest);
    sum += static_cast<double>(overlap(attended.keys.data() + a * attended.k, nearest)) / attended.k;
  }
  return sum / static_cast<double>(attended.queries.size());
}

}  // namespace

void keys_in_scope(const HeadVectors& head, PairScope scope, int64_t i, std::vector<int64_t>& out) {
  out.clear();
  if (scope == PairScope::all) {
    for (int64_t j = 0; j < head.n; ++j) out.push_back(j);
    return;
  }
  // Tokens are sorted by sequence: the sequence is one run around i.
  const auto range = std::equal_range(head.sequence, head.sequence + head.n, head.sequence[i]);
  for (const int64_t* s = range.first; s != range.second; ++s) {
    const int64_t j = s - head.sequence;
    if (scope == PairScope::causal && head.position[j] > head.position[i]) continue;
    out.push_back(j);
  }
}

AttendedSets most_attended(const HeadVectors& head, PairScope scope, int k) {
  QKSCOPE_CHECK_AS(UsageError, k >= 1, "faithfulness: expected k >= 1, got {}", k);
  AttendedSets sets;
  sets.k = k;
  std::vector<int64_t> keys, top;
  std::vector<std::pair<double, int64_t>> scratch;
  for (int64_t i = 0; i < head.n; ++i) {
    keys_in_scope(head, scope, i, keys);
    if (static_cast<int64_t>(keys.size()) < k) continue;
    const float* q = head.q + i * head.stride;
    k_smallest(keys, k, [&](int64_t j) {
      const float* kv = head.k + j * head.stride;
      double dot = 0;
      for (int d = 0; d < head.dim; ++d) dot += static_cast<double>(q[d]) * kv[d];
      return -dot;  // largest dot first
    }, scratch, top);
    sets.queries.push_back(i);
    sets.keys.insert(sets.keys.end(), top.begin(), top.end());
  }
  return sets;
}

std::vector<double> key_translation(const HeadVectors& head, double c) {
  std::vector<double> mq(static_cast<size_t>(head.dim), 0.0), mk(mq);
  for (int64_t t = 0; t < head.n; ++t)
    for (int d = 0; d < head.dim; ++d) {
      mq[d] += head.q[t * head.stride + d];
      mk[d] += head.k[t * head.stride + d];
    }
  std::vector<double> shift(mq.size(), 0.0);
  if (head.n == 0) return shift;
  for (size_t d = 0; d < shift.size(); ++d)
    shift[d] = c * (mq[d] / head.n) - (mk[d] / head.n) / c;
  return shift;
}

std::optional<double> faithfulness_d(const HeadVectors& head, const AttendedSets& attended,
                                     PairScope scope, double c) {
  QKSCOPE_CHECK_AS(UsageError, c > 0 && std::isfinite(c), "faithfulness: expected c > 0, got {}", c);
  const std::vector<double> shift = key_translation(head, c);
  const double inv_c = 1.0 / c;
  return mean_overlap(head, attended, scope, [&](int64_t i, int64_t j) {
    const float* q = head.q + i * head.stride;
    const float* kv = head.k + j * head.stride;
    double s = 0;
    for (int d = 0; d < head.dim; ++d) {
      const double diff = c * q[d] - (kv[d] * inv_c + shift[d]);
      s += diff * diff;
    }
    return s;  // squared: the same order
  });
}

std::optional<double> faithfulness_2d(const HeadVectors& head, const AttendedSets& attended,
                                      PairScope scope, const float* q_xy, const float* k_xy) {
  return mean_overlap(head, attended, scope, [&](int64_t i, int64_t j) {
    const double dx = static_cast<double>(q_xy[2 * i]) - k_xy[2 * j];
    const double dy = static_cast<double>(q_xy[2 * i + 1]) - k_xy[2 * j + 1];
    return dx * dx + dy * dy;
  });
}

}  // namespace qkscope
