// Hand-worked cases of SPEC section 3: every expected number below was worked out on paper
// (fractions in the comments), not produced by the code under test.
#include <gtest/gtest.h>

#include <cmath>

#include "qkscope/metrics.h"

namespace qkscope {
namespace {

// One site, one head, head_dim 1, one sequence: q and k are scalars per token.
QkData scalar_head(const std::vector<float>& q, const std::vector<float>& k) {
  QkData data;
  const size_t n = std::max(q.size(), k.size());
  SiteData site;
  site.layer = 0;
  site.n_heads = 1;
  site.head_dim = 1;
  site.head_index = {0};
  site.q = q;
  site.k = k;
  site.q.resize(n, 0.f);
  site.k.resize(n, 0.f);
  for (size_t t = 0; t < n; ++t) {
    data.sequence.push_back(0);
    data.position.push_back(static_cast<int64_t>(t));
  }
  data.sites.push_back(site);
  return data;
}

TEST(PercentileTest, InterpolatesLinearlyAsNumpy) {
  std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(percentile_linear(v, 50), 2.5);  // position 1.5 between 2 and 3
  std::vector<double> w;
  for (int i = 199; i >= 0; --i) w.push_back(i);
  EXPECT_NEAR(percentile_linear(w, 0.5), 0.995, 1e-12);  // position 199 * 0.005 = 0.995
  std::vector<double> one = {7};
  EXPECT_DOUBLE_EQ(percentile_linear(one, 30), 7);
  std::vector<double> five = {10, 0, 40, 20, 30};
  EXPECT_DOUBLE_EQ(percentile_linear(five, 62.5), 25);  // position 2.5
}

// One query q = 2 (c = 1 only) and five keys k = 2.5, 1, 4, 6, 11 in `all` scope:
// y = |2 - k| = 0.5, 1, 2, 4, 9 and x = 2k = 5, 2, 8, 12, 22. At percentile 62.5 the position
// is 4 * 0.625 = 2.5, so d = (2 + 4) / 2 = 3. Near keys: y < 3, the first three, with weights
// (3 - y)^2 = 6.25, 4, 1. Then m_x = 21/5, m_y = 73/90, cov(x,y) = 26/225, cov(x,x) = 84/25,
// cov(y,y) = 389/2025, so r = 13 / sqrt(8169).
TEST(WeightedCorrelationTest, SmallSetWorkedByHand) {
  // Tokens: token 0 carries the query; its key is far away so it is never near. Queries of the
  // other tokens are 0 (x = 0 for all their pairs: zero variance, no r).
  QkData data = scalar_head({2, 0, 0, 0, 0}, {2.5f, 1, 4, 6, 11});
  MetricOptions o;
  o.scales = {1};
  o.pairs = PairScope::all;
  o.percentile = 62.5;
  // Pairs of all 5 queries: the 20 pairs of the zero queries have y = |k| = 2.5, 1, 4, 6, 11
  // (four times each). Pool of 25: sorted
  // 0.5, 1x5, 2, 2.5x4, 4x5, 6x4, 9, 11x4 -> position 24 * 0.625 = 15 -> d = 4 (index 15).
  // Near for query 0: y < 4 -> 0.5, 1, 2 (the same three keys), weights (4 - y)^2.
  CTable t = compute_ctable(data, o);
  ASSERT_EQ(t.heads.size(), 1u);
  ASSERT_TRUE(t.heads[0].threshold.has_value());
  EXPECT_DOUBLE_EQ(*t.heads[0].threshold, 4.0);
  // With d = 4: w = 12.25, 9, 4; sum 25.25; m_x = (61.25 + 18 + 32) / 25.25 = 111.25/25.25,
  // worked in fractions below.
  const double w[3] = {12.25, 9, 4}, x[3] = {5, 2, 8}, y[3] = {0.5, 1, 2};
  double sw = 25.25, mx = 111.25 / 25.25, my = (6.125 + 9 + 8) / 25.25;
  double cxx = 0, cyy = 0, cxy = 0;
  for (int i = 0; i < 3; ++i) {
    cxx += w[i] * (x[i] - mx) * (x[i] - mx) / sw;
    cyy += w[i] * (y[i] - my) * (y[i] - my) / sw;
    cxy += w[i] * (x[i] - mx) * (y[i] - my) / sw;
  }
  ASSERT_TRUE(t.heads[0].scales[0].wcorr.has_value());
  EXPECT_NEAR(*t.heads[0].scales[0].wcorr, cxy / std::sqrt(cxx * cyy), 1e-12);
  // Zero queries: near keys y < 4 are |k| = 2.5, 1 (two keys): fewer than 3, no r.
  EXPECT_EQ(t.heads[0].scales[0].queries, 1);
  EXPECT_EQ(t.heads[0].scales[0].near_pairs, 3 + 4 * 2);
}

TEST(WeightedCorrelationTest, FractionsWorkedByHand) {
  // The same query and keys as above, with r = 13 / sqrt(8169) when d = 3 (comment above).
  QkData one;
  SiteData site;
  site.n_heads = 1;
  site.head_dim = 1;
  site.head_index = {0};
  // Query token 0 = 2 and four more tokens whose queries we cannot drop: give them a huge query
  // so their distances (>= 1000 - 11) sit above d and never count.
  site.q = {2, 1000, 1000, 1000, 1000};
  site.k = {2.5f, 1, 4, 6, 11};
  one.sites.push_back(site);
  one.sequence = {0, 0, 0, 0, 0};
  one.position = {0, 1, 2, 3, 4};
  MetricOptions o;
  o.scales = {1};
  o.pairs = PairScope::sequence;
  // Pool of 25: query 0 gives 0.5, 1, 2, 4, 9; the rest are >= 989. Position 24 p / 100 = 2.5
  // needs p = 2.5 / 24 * 100.
  o.percentile = 250.0 / 24.0;
  CTable t = compute_ctable(one, o);
  ASSERT_TRUE(t.heads[0].threshold.has_value());
  EXPECT_NEAR(*t.heads[0].threshold, 3.0, 1e-12);
  ASSERT_TRUE(t.heads[0].scales[0].wcorr.has_value());
  EXPECT_NEAR(*t.heads[0].scales[0].wcorr, 13.0 / std::sqrt(8169.0), 1e-12);
}

TEST(ChooseScaleTest, ClosestToMinusOneAndMostNegative) {
  std::vector<double> c = {0.5, 1, 2};
  std::vector<std::optional<double>> v = {-0.9, -1.3, 0.2};
  EXPECT_EQ(choose_scale(c, v, SelectRule::closest), 0u);  // |-0.9 + 1| = 0.1 < 0.3
  EXPECT_EQ(choose_scale(c, v, SelectRule::min), 1u);
}

TEST(ChooseScaleTest, TiesGoNearestToOneThenSmaller) {
  std::vector<double> c = {0.2, 0.8, 1.25, 5};
  std::vector<std::optional<double>> v = {-0.5, -0.5, -0.5, -0.5};
  EXPECT_EQ(choose_scale(c, v, SelectRule::closest), 1u);  // 0.8 and 1.25 equally near 1: 0.8
  std::vector<double> c2 = {0.5, 2, 3};
  std::vector<std::optional<double>> v2 = {-0.7, -0.7, -0.7};
  EXPECT_EQ(choose_scale(c2, v2, SelectRule::min), 0u);  // 0.5 and 2 tie in |log c|: 0.5
  std::vector<std::optional<double>> v3 = {-0.6, -0.8, -0.8};
  EXPECT_EQ(choose_scale(c2, v3, SelectRule::closest), 1u);  // 2 nearer to 1 than 3
}

TEST(ChooseScaleTest, UndefinedValuesNeverWin) {
  std::vector<double> c = {0.5, 1, 2};
  std::vector<std::optional<double>> v = {std::nullopt, 0.9, std::nullopt};
  EXPECT_EQ(choose_scale(c, v, SelectRule::closest), 1u);
  std::vector<std::optional<double>> none = {std::nullopt, std::nullopt, std::nullopt};
  EXPECT_FALSE(choose_scale(c, none, SelectRule::closest).has_value());
}

TEST(UndefinedTest, FewerThanThreeNearKeysGiveNoValue) {
  // Two tokens per sequence: at most 2 keys per query, never 3 near keys.
  QkData data = scalar_head({1, 2, 3, 4}, {1, 2, 3, 4});
  data.sequence = {0, 0, 1, 1};
  data.position = {0, 1, 0, 1};
  MetricOptions o;
  o.percentile = 90;
  CTable t = compute_ctable(data, o);
  const HeadResult& h = t.heads[0];
  EXPECT_TRUE(h.threshold.has_value());
  for (const ScaleResult& s : h.scales) {
    EXPECT_FALSE(s.wcorr.has_value());
    EXPECT_FALSE(s.wcorr_scaled.has_value());
    EXPECT_EQ(s.queries, 0);
  }
  EXPECT_FALSE(h.c_wcorr.has_value());
  EXPECT_FALSE(h.c_wcorr_scaled.has_value());
  // Norms are defined: median |q| = median |k| = 2.5, so c_norm = 1.
  ASSERT_TRUE(h.c_norm.has_value());
  EXPECT_DOUBLE_EQ(*h.c_norm, 1.0);
}

TEST(UndefinedTest, ZeroVarianceGivesNoValue) {
  // All queries are 0: every x is 0, so no query has an r, at any scale.
  QkData data = scalar_head({0, 0, 0, 0, 0, 0}, {1, 2, 3, 4, 5, 6});
  MetricOptions o;
  o.percentile = 99;
  CTable t = compute_ctable(data, o);
  for (const ScaleResult& s : t.heads[0].scales) {
    EXPECT_FALSE(s.wcorr.has_value());
    EXPECT_GT(s.near_pairs, 0);
  }
  EXPECT_FALSE(t.heads[0].c_wcorr.has_value());
  EXPECT_FALSE(t.heads[0].c_norm.has_value());  // median |q| = 0: no ratio
}

TEST(NormRatioTest, SquareRootOfInverseRatioOfMedians) {
  // |q| = 1, 2, 3, 10 -> median 2.5; |k| = 4, 5, 6 (padded with a 100) -> median (5 + 6) / 2.
  QkData data = scalar_head({1, -2, 3, 10}, {4, -5, 6, 100});
  CTable t = compute_ctable(data, MetricOptions{});
  EXPECT_DOUBLE_EQ(t.heads[0].median_q_norm, 2.5);
  EXPECT_DOUBLE_EQ(t.heads[0].median_k_norm, 5.5);
  EXPECT_DOUBLE_EQ(*t.heads[0].c_norm, std::sqrt(5.5 / 2.5));
}

TEST(ScaledMetricTest, RewardsHeadsWithMoreQualifyingQueries) {
  // Two sites with one head each; S = R * n / mean n. Checked on the engine's own R and n, a
  // relation the SPEC fixes, over data where n differs between heads.
  QkData a = scalar_head({1, 2, 3, 4, 5, 6, 7, 8}, {1.1f, 2.3f, 2.9f, 4.2f, 5.1f, 5.7f, 7.4f, 8.2f});
  QkData data = a;
  SiteData second = a.sites[0];
  second.layer = 1;
  second.q = {1, 1, 1, 1, 9, 9, 9, 9};
  data.sites.push_back(second);
  MetricOptions o;
  o.percentile = 30;
  CTable t = compute_ctable(data, o);
  for (size_t s = 0; s < o.scales.size(); ++s) {
    double mean = (t.heads[0].scales[s].queries + t.heads[1].scales[s].queries) / 2.0;
    for (const HeadResult& h : t.heads) {
      if (!h.scales[s].wcorr) {
        EXPECT_FALSE(h.scales[s].wcorr_scaled.has_value());
        continue;
      }
      EXPECT_NEAR(*h.scales[s].wcorr_scaled, *h.scales[s].wcorr * h.scales[s].queries / mean, 1e-12);
    }
  }
}

}  // namespace
}  // namespace qkscope
