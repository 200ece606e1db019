#include "order_statistics.h"

#include <algorithm>
#include <functional>
#include <queue>

namespace qkscope::detail {

// The values of rank `ranks` (0-based, increasing) among `values`. The ranks are small next to
// the sample: a cut estimated on every 8th value keeps a little more than the largest rank, and
// the selection runs on those alone (on everything, if the cut kept too few).
std::vector<double> small_order_statistics(std::vector<double> values,
                                           const std::vector<size_t>& ranks) {
  const size_t top = ranks.back();
  std::vector<double> low;
  if (values.size() >= 64 * (top + 64)) {
    std::vector<double> sub;
    for (size_t t = 0; t < values.size(); t += 8) sub.push_back(values[t]);
    const size_t at = (top + 1) * 3 / 16 + 32;  // 1.5 times the expected rank of the largest
    std::nth_element(sub.begin(), sub.begin() + static_cast<int64_t>(at), sub.end());
    const double cut = sub[at];
    for (double v : values)
      if (v <= cut) low.push_back(v);
  }
  if (low.size() > top) values.swap(low);
  std::vector<double> out(ranks.size());
  auto end = values.end();
  for (size_t r = ranks.size(); r-- > 0;) {  // largest first: the next selection stays left
    std::nth_element(values.begin(), values.begin() + static_cast<int64_t>(ranks[r]), end);
    out[r] = values[ranks[r]];
    end = values.begin() + static_cast<int64_t>(ranks[r]);
  }
  return out;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  double upper = v[mid];
  if (v.size() % 2 == 1) return upper;
  double lower = *std::max_element(v.begin(), v.begin() + mid);
  return (lower + upper) / 2;
}

// v[lo] + frac (v[lo + 1] - v[lo]) of the sorted values (v[lo] alone when lo is the last).
// The values barely outnumber lo, so the order statistics sit among the few largest: a small
// heap over one pass finds them without reordering everything.
double interpolated_order_statistic(std::vector<double>& values, int64_t lo, double frac) {
  const auto n = static_cast<int64_t>(values.size());
  const int64_t from_top = n - lo;  // v[lo] is the from_top-th largest
  double v_lo, v_hi;
  if (from_top <= 4096) {
    std::priority_queue<double, std::vector<double>, std::greater<double>> largest;
    for (double v : values) {
      if (static_cast<int64_t>(largest.size()) < from_top) {
        largest.push(v);
      } else if (v > largest.top()) {
        largest.pop();
        largest.push(v);
      }
    }
    v_lo = largest.top();
    largest.pop();
    v_hi = largest.empty() ? v_lo : largest.top();
  } else {
    std::nth_element(values.begin(), values.begin() + lo, values.end());
    v_lo = values[lo];
    v_hi = lo + 1 < n ? *std::min_element(values.begin() + lo + 1, values.end()) : v_lo;
  }
  return v_lo + frac * (v_hi - v_lo);
}

}  // namespace qkscope::detail
