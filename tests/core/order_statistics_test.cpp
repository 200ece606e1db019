// interpolated_order_statistic, median and small_order_statistics (core/src/order_statistics.cpp)
// against a full sort, on both of their paths (a selection under 256 values, bin counts then a
// selection within the chosen bins otherwise), with ties, a value that holds most of the list,
// values spread over decades, all values equal, two values, and a range too narrow for bins.
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
      case 3: v[t] = std::pow(10.0, 6 * unit(rng)); break;           // six decades: buckets skewed
      case 4: v[t] = 2.5; break;                                     // all equal
      case 5: v[t] = t % 3 == 0 ? 1.0 : 4.0; break;                  // two values
      case 6: v[t] = 1e-310 * (1 + t % 7); break;                    // subnormal: no bin width
      default: v[t] = t % 100 == 0 ? 1e300 : unit(rng); break;       // one huge value: one bin
    }
  }
  return v;
}

TEST(OrderStatistics, InterpolatedOrderStatisticMatchesSorting) {
  std::mt19937_64 rng(17);
  for (int kind = 0; kind < 8; ++kind)
    for (size_t n : {5u, 1500u, 3000u, 20000u, 120000u})
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

double median_by_sorting(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

TEST(OrderStatistics, MedianMatchesSorting) {
  std::mt19937_64 rng(23);
  EXPECT_EQ(median({}), 0.0);
  for (int kind = 0; kind < 8; ++kind)
    for (size_t n : {1u, 2u, 7u, 1500u, 3001u, 20000u, 120001u}) {
      SCOPED_TRACE(testing::Message() << "kind " << kind << " n " << n);
      const std::vector<double> values = draw(kind, n, rng);
      EXPECT_EQ(median(values), median_by_sorting(values));
    }
}

TEST(OrderStatistics, SmallOrderStatisticsMatchSorting) {
  std::mt19937_64 rng(29);
  for (int kind = 0; kind < 8; ++kind)
    for (size_t n : {100u, 3000u, 7168u, 60000u}) {
      const std::vector<double> values = draw(kind, n, rng);
      std::vector<double> sorted = values;
      std::sort(sorted.begin(), sorted.end());
      for (const std::vector<size_t>& ranks :
           {std::vector<size_t>{0}, std::vector<size_t>{3, 40, 41, 90},
            std::vector<size_t>{n / 100, n / 30, n / 5}, std::vector<size_t>{n / 2, n - 1}}) {
        SCOPED_TRACE(testing::Message() << "kind " << kind << " n " << n << " top "
                                        << ranks.back());
        const std::vector<double> got = small_order_statistics(values, ranks);
        ASSERT_EQ(got.size(), ranks.size());
        for (size_t r = 0; r < ranks.size(); ++r) EXPECT_EQ(got[r], sorted[ranks[r]]);
      }
    }
}

}  // namespace
}  // namespace qkscope::detail
