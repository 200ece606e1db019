// The float screen's active scales (pair_screen.h, choose_active_scales): for every key whose
// squared norm lies in the range the scales were chosen for, the minimum over the active scales,
// as pair_slack computes it in float, must equal the minimum over the whole grid. A scale left
// out that was the minimum would make the screen reject pairs it must admit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

// Compiled for the build's baseline, in a namespace of its own (see head_engine.h).
#define QKSCOPE_ISA_NS isa_screen_test
#include "pair_screen.h"
#undef QKSCOPE_ISA_NS

namespace {

using qkscope::detail::isa_screen_test::choose_active_scales;
using qkscope::detail::isa_screen_test::RowScreen;
using qkscope::detail::isa_screen_test::ScaleOrder;

// The grid padded to 8 by repeating scale 0, the row's c^2 a in float, as collect_items sets it.
RowScreen row_for(const std::vector<double>& scales, double a) {
  RowScreen row;
  for (size_t s = 0; s < 8; ++s) {
    const double c = scales[s < scales.size() ? s : 0];
    row.c2_a.push_back(static_cast<float>(c * c * a));
    row.inv_c2.push_back(static_cast<float>(1.0 / (c * c)));
  }
  return row;
}

ScaleOrder order_of(const std::vector<double>& scales) {
  ScaleOrder order;
  for (size_t s = 0; s < scales.size(); ++s) order.sorted.push_back(s);
  std::sort(order.sorted.begin(), order.sorted.end(),
            [&](size_t u, size_t v) { return scales[u] < scales[v]; });
  for (size_t k = 0; k + 1 < scales.size(); ++k) {
    const double lo = scales[order.sorted[k]], hi = scales[order.sorted[k + 1]];
    order.crossing.push_back(lo * lo * hi * hi);
  }
  return order;
}

float min_of(const float* c2_a, const float* inv_c2, int n, float b) {
  float m = c2_a[0] + b * inv_c2[0];
  for (int s = 1; s < n; ++s) m = std::min(m, c2_a[s] + b * inv_c2[s]);
  return m;
}

TEST(EngineIsaScreen, ActiveScalesGiveTheWholeGridsMinimum) {
  const std::vector<std::vector<double>> grids = {
      {0.2, 0.4, 0.8, 1, 1.25, 2.5, 5},  // the default
      {5, 0.2, 1, 2.5, 0.4},             // unsorted
      {1, 1.01, 1.02},                   // crossings close together
      {0.5, 2},
      {1}};
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> log_norm(-8, 8), spread(0, 3);
  int narrowed = 0, checked = 0;
  for (const auto& grid : grids) {
    const ScaleOrder order = order_of(grid);
    for (int trial = 0; trial < 4000; ++trial) {
      const double a = std::exp(log_norm(rng));
      // Key norms around a ratio near a crossing half of the time, where rounding decides.
      double centre = a * std::exp(log_norm(rng) / 4);
      if (trial % 2 == 0 && !order.crossing.empty())
        centre = a * order.crossing[static_cast<size_t>(trial / 2) % order.crossing.size()] *
                 (1 + 1e-7 * (spread(rng) - 1.5));
      const double width = std::exp(spread(rng) - 6);
      const auto b_lo = static_cast<float>(centre / (1 + width));
      const auto b_hi = static_cast<float>(centre * (1 + width));
      RowScreen row = row_for(grid, a);
      choose_active_scales(row, order, a, b_lo, b_hi);
      if (row.n_active == 0) continue;  // the whole grid: nothing to check
      ++narrowed;
      for (int t = 0; t <= 64; ++t) {
        const float b = t == 64 ? b_hi : b_lo + (b_hi - b_lo) * static_cast<float>(t) / 64;
        const float whole = min_of(row.c2_a.data(), row.inv_c2.data(), 8, b);
        const float active = min_of(row.active_c2_a, row.active_inv_c2, row.n_active, b);
        ASSERT_EQ(active, whole) << "a " << a << " b " << b << " in [" << b_lo << ", " << b_hi
                                 << "], " << row.n_active << " active scales";
        ++checked;
      }
    }
  }
  EXPECT_GT(narrowed, 10000);  // the narrowing was exercised, not skipped
  EXPECT_GT(checked, 100000);
}

TEST(EngineIsaScreen, WideKeyRangesAndZeroQueriesTakeTheWholeGrid) {
  const std::vector<double> grid = {0.2, 0.4, 0.8, 1, 1.25, 2.5, 5};
  const ScaleOrder order = order_of(grid);
  RowScreen row = row_for(grid, 1.0);
  choose_active_scales(row, order, 1.0, 1e-4f, 1e4f);  // every scale can be the minimum
  EXPECT_EQ(row.n_active, 0);
  row = row_for(grid, 0.0);
  choose_active_scales(row, order, 0.0, 1.0f, 1.0f);  // r = b / a undefined
  EXPECT_EQ(row.n_active, 0);
  row = row_for(grid, 1.0);
  choose_active_scales(row, order, 1.0, 1.0f, 1.0f);  // r = 1: only c = 1
  ASSERT_EQ(row.n_active, 1);
  EXPECT_EQ(row.active_inv_c2[0], 1.0f);
}

}  // namespace
