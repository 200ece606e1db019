// interpolated_order_statistic (core/src/order_statistics.cpp) against a full sort, on both of
// its paths (a heap of the largest values near the top, a selection otherwise), with ties, a
// value that holds most of the list, and values spread over decades.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "order_statistics.h"

namespace qkscope::detail {
namespace {

double by_sorting(std::vector<double> values, int64_t lo, double frac) {
  std::sort(values.begin(), values.end());
  const double v_lo = values[static_cast<size_t>(lo)];
  const double v_hi = lo + 1 < static_cast<int64_t>(values.size()) ? values[static_cast<size_t>(lo) + 1] : v_lo;
  return v_lo + frac * (v_hi - v_lo);
}

std::vector<double> draw(int kind, size_t n, std::mt19937_64& rng) {
  std::vector<double> v(n);
  std::exponential_distribution<double> expo(1.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (size_t t = 0; t < n; ++t) {
    switch (kind) {
      case 0: v[t] = unit(rng); break;                               // spread evenly
      case 1: v[t] = std::round(expo(rng) * 50) / 50; break;         // many ties
      case 2: v[t] = t % 10 == 0 ? expo(rng) : 0.75; break;          // one value holds 90 %
      default: v[t] = std::pow(10.0, 6 * unit(rng)); break;          // six decades: buckets skewed
    }
  }
  return v;
}

TEST(OrderStatistics, InterpolatedOrderStatisticMatchesSorting) {
  std::mt19937_64 rng(17);
  for (int kind = 0; kind < 4; ++kind)
    for (size_t n : {3000u, 20000u, 120000u})
      for (double at : {0.0, 0.01, 0.3, 0.5, 0.9, 0.97, 1.0}) {
        const std::vector<double> values = draw(kind, n, rng);
        const auto lo = std::min<int64_t>(static_cast<int64_t>(at * static_cast<double>(n)),
                                          static_cast<int64_t>(n) - 1);
        for (double frac : {0.0, 0.37}) {
          SCOPED_TRACE(testing::Message() << "kind " << kind << " n " << n << " lo " << lo
                                          << " frac " << frac);
          std::vector<double> copy = values;
          EXPECT_EQ(interpolated_order_statistic(copy, lo, frac), by_sorting(values, lo, frac));
        }
      }
}

}  // namespace
}  // namespace qkscope::detail
