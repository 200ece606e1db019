// The weighted correlations of one block (head_engine.h, add_block_correlations) against a
// two-pass sum in long double, on items made to defeat the one-pass moments: the bucket's first
// near item (the one-pass shift) lies far from a tight cluster of the others and has a tiny
// weight (its distance just under the threshold), so sum w dx^2 - (sum w dx)^2 / sum w cancels
// about 12 of double's 16 digits. The engine must notice and sum those buckets again.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

// Compiled for the build's baseline, in a namespace of its own (see head_engine.h).
#define QKSCOPE_ISA_NS isa_correlation_test
#include "head_engine.h"
#undef QKSCOPE_ISA_NS

namespace {

namespace engine = qkscope::detail::isa_correlation_test;

struct Item {
  uint32_t query, scale;
  double x, y;
};

// r of one (query, scale) over its items with y < d, two-pass, in long double.
double reference_r(const std::vector<Item>& items, uint32_t query, uint32_t scale, double d) {
  long double sw = 0, sx = 0, sy = 0;
  for (const Item& it : items)
    if (it.query == query && it.scale == scale && it.y < d) {
      const long double w = (static_cast<long double>(d) - it.y) * (static_cast<long double>(d) - it.y);
      sw += w;
      sx += w * it.x;
      sy += w * it.y;
    }
  const long double mx = sx / sw, my = sy / sw;
  long double cxx = 0, cyy = 0, cxy = 0;
  for (const Item& it : items)
    if (it.query == query && it.scale == scale && it.y < d) {
      const long double w = (static_cast<long double>(d) - it.y) * (static_cast<long double>(d) - it.y);
      cxx += w * (it.x - mx) * (it.x - mx);
      cyy += w * (it.y - my) * (it.y - my);
      cxy += w * (it.x - mx) * (it.y - my);
    }
  return static_cast<double>(cxy / std::sqrt(cxx * cyy));
}

// Runs add_block_correlations over `items` (one block, queries 0..rows-1) and returns R per scale.
std::vector<double> engine_r(const std::vector<Item>& items, int64_t rows, size_t n_scales,
                             double d, std::vector<qkscope::detail::HeadScale>& out) {
  engine::Workspace ws;
  ws.items.query.grow(0, items.size());
  ws.items.scale.grow(0, items.size());
  ws.items.x.grow(0, items.size());
  ws.items.y.grow(0, items.size());
  ws.items.capacity = items.size();
  for (const Item& it : items) {
    const size_t t = ws.items.size++;
    ws.items.query[t] = it.query;
    ws.items.scale[t] = it.scale;
    ws.items.x[t] = it.x;
    ws.items.y[t] = it.y;
  }
  std::vector<double> r_sum(n_scales, 0.0);
  out.assign(n_scales, {});
  engine::add_block_correlations(ws, engine::RowBlock{0, items.size(), 0, rows}, d, n_scales,
                                 r_sum, out);
  return r_sum;
}

TEST(EngineIsaCorrelation, OnePassMomentsThatCancelAreSummedAgain) {
  const double d = 10.0;
  std::mt19937 rng(7);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<Item> items;
  // Query 0: the first near item far away with weight (1e-6)^2, then a tight cluster whose x
  // and y spread 1e-3 around (1000, 5) and correlate.
  items.push_back({0, 0, 1.0, d - 1e-6});
  for (int j = 0; j < 40; ++j) {
    const double e = normal(rng);
    items.push_back({0, 0, 1000.0 + 1e-3 * e, 5.0 + 1e-3 * (0.6 * e + 0.8 * normal(rng))});
  }
  // Query 1: ordinary items, and some beyond d (not near).
  for (int j = 0; j < 30; ++j) {
    const double e = normal(rng);
    items.push_back({1, 0, 50.0 + 10.0 * e, 6.0 + 3.0 * (0.5 * e + normal(rng))});
  }
  std::vector<qkscope::detail::HeadScale> out;
  const std::vector<double> r_sum = engine_r(items, 2, 1, d, out);
  const double expected = reference_r(items, 0, 0, d) + reference_r(items, 1, 0, d);
  ASSERT_EQ(out[0].queries, 2);
  EXPECT_NEAR(r_sum[0], expected, 1e-9);
  // The case really is one the one-pass shortcut gets wrong: its r for query 0 alone.
  long double sw = 0, sx = 0, sy = 0, cxx = 0, cyy = 0, cxy = 0;
  const double x0 = items[0].x, y0 = items[0].y;
  for (size_t t = 0; t < 41; ++t) {
    const double w = (d - items[t].y) * (d - items[t].y);
    const double dx = items[t].x - x0, dy = items[t].y - y0;
    sw += w; sx += w * dx; sy += w * dy;
    cxx += w * dx * dx; cyy += w * dy * dy; cxy += w * dx * dy;
  }
  const double one_pass_cyy = static_cast<double>(cyy) - static_cast<double>(sy) * (static_cast<double>(sy) / static_cast<double>(sw));
  EXPECT_LT(one_pass_cyy, 1e-4 * static_cast<double>(cyy)) << "the case no longer cancels";
}

TEST(EngineIsaCorrelation, OrdinaryBucketsMatchTheTwoPassSum) {
  const double d = 4.0;
  std::mt19937 rng(11);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<Item> items;
  const uint32_t rows = 5, n_scales = 3;
  for (uint32_t q = 0; q < rows; ++q)
    for (int j = 0; j < 25; ++j)
      for (uint32_t s = 0; s < n_scales; ++s) {
        const double e = normal(rng);
        items.push_back({q, s, 3.0 * e + q, 3.0 + 1.5 * (0.3 * e + normal(rng)) + 0.2 * s});
      }
  std::vector<qkscope::detail::HeadScale> out;
  const std::vector<double> r_sum = engine_r(items, rows, n_scales, d, out);
  for (uint32_t s = 0; s < n_scales; ++s) {
    double expected = 0;
    for (uint32_t q = 0; q < rows; ++q) expected += reference_r(items, q, s, d);
    EXPECT_EQ(out[s].queries, static_cast<int64_t>(rows));
    EXPECT_NEAR(r_sum[s], expected, 1e-12);
  }
}

}  // namespace
