#include "order_statistics.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace qkscope::detail {
namespace {

// The order statistics of rank lo and lo + 1 (lo alone when it is the last) by selection.
std::pair<double, double> two_by_selection(std::vector<double>& values, int64_t lo) {
  const auto n = static_cast<int64_t>(values.size());
  std::nth_element(values.begin(), values.begin() + lo, values.end());
  const double v_lo = values[static_cast<size_t>(lo)];
  const double v_hi =
      lo + 1 < n ? *std::min_element(values.begin() + lo + 1, values.end()) : v_lo;
  return {v_lo, v_hi};
}

// The order statistics of rank lo and lo + 1 (lo alone when it is the last): counts in bins of
// equal width between the smallest and the largest value, then a selection among the values of
// the one or two bins that hold the ranks. A value's bin never decreases with the value (each
// step of (v - min) * per_bin rounds monotonically), so the bins keep the order and the ranks in
// the chosen bins are exact. Two passes at a few cycles per value instead of introselect's
// unpredictable branches (~20 ns per value here); values that pile into one bin only make the
// final selection larger, never wrong.
std::pair<double, double> two_order_statistics(std::vector<double>& values, int64_t lo) {
  const auto n = static_cast<int64_t>(values.size());
  if (n < 256) return two_by_selection(values, lo);
  double low = values[0], high = values[0];
  for (double v : values) {  // min and max (vectorised); NaN never arrives here
    low = std::min(low, v);
    high = std::max(high, v);
  }
  if (!(high > low)) return {low, low};  // all equal
  const int64_t n_bins = std::clamp<int64_t>(n / 8, 256, int64_t{1} << 16);
  const double per_bin = static_cast<double>(n_bins) / (high - low);
  if (!std::isfinite(per_bin)) return two_by_selection(values, lo);  // a range under ~1e-300
  auto bin_of = [&](double v) {
    return std::min<int64_t>(n_bins - 1, static_cast<int64_t>((v - low) * per_bin));
  };
  std::vector<uint32_t> counts(static_cast<size_t>(n_bins), 0);
  for (double v : values) ++counts[static_cast<size_t>(bin_of(v))];
  const int64_t hi = std::min(lo + 1, n - 1);
  int64_t first = -1, last = -1, seen = 0, below = 0;
  for (int64_t b = 0; b < n_bins && last < 0; ++b) {
    if (first < 0 && seen + counts[static_cast<size_t>(b)] > lo) {
      first = b;
      below = seen;
    }
    seen += counts[static_cast<size_t>(b)];
    if (seen > hi) last = b;
  }
  // The values of bins [first, last], gathered branch-free (in place: each write lands at or
  // before the value being read).
  int64_t kept = 0;
  for (int64_t t = 0; t < n; ++t) {
    const double v = values[static_cast<size_t>(t)];
    const int64_t b = bin_of(v);
    values[static_cast<size_t>(kept)] = v;
    kept += (b >= first) & (b <= last);
  }
  values.resize(static_cast<size_t>(kept));
  const int64_t rank = lo - below;
  std::nth_element(values.begin(), values.begin() + rank, values.end());
  const double v_lo = values[static_cast<size_t>(rank)];
  const double v_hi =
      lo + 1 < n ? *std::min_element(values.begin() + rank + 1, values.end()) : v_lo;
  return {v_lo, v_hi};
}

}  // namespace

// The values of rank `ranks` (0-based, increasing) among `values`. The ranks are small next to
// the sample (the pilot's): bin counts as in two_order_statistics find the bin of the largest
// rank, only the values of that bin and those below it are kept (every value under the largest
// rank, so the ranks stay), and the selections run on those.
std::vector<double> small_order_statistics(std::vector<double> values,
                                           const std::vector<size_t>& ranks) {
  const auto n = static_cast<int64_t>(values.size());
  const auto top = static_cast<int64_t>(ranks.back());
  if (n >= 2048 && top < n / 4) {
    double low = values[0], high = values[0];
    for (double v : values) {
      low = std::min(low, v);
      high = std::max(high, v);
    }
    const int64_t n_bins = std::clamp<int64_t>(n / 8, 256, int64_t{1} << 16);
    const double per_bin = static_cast<double>(n_bins) / (high - low);
    if (high > low && std::isfinite(per_bin)) {
      auto bin_of = [&](double v) {
        return std::min<int64_t>(n_bins - 1, static_cast<int64_t>((v - low) * per_bin));
      };
      std::vector<uint32_t> counts(static_cast<size_t>(n_bins), 0);
      for (double v : values) ++counts[static_cast<size_t>(bin_of(v))];
      int64_t last = 0;
      for (int64_t seen = 0; last < n_bins; ++last) {
        seen += counts[static_cast<size_t>(last)];
        if (seen > top) break;
      }
      int64_t kept = 0;
      for (int64_t t = 0; t < n; ++t) {
        const double v = values[static_cast<size_t>(t)];
        values[static_cast<size_t>(kept)] = v;
        kept += bin_of(v) <= last;
      }
      values.resize(static_cast<size_t>(kept));
    }
  }
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
  const auto mid = static_cast<int64_t>(v.size() / 2);
  if (v.size() % 2 == 1) return two_order_statistics(v, mid).first;
  const auto [lower, upper] = two_order_statistics(v, mid - 1);
  return (lower + upper) / 2;
}

double interpolated_order_statistic(std::vector<double>& values, int64_t lo, double frac) {
  const auto [v_lo, v_hi] = two_order_statistics(values, lo);
  return v_lo + frac * (v_hi - v_lo);
}

}  // namespace qkscope::detail
