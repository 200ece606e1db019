// The engine's instruction-set variants (core/src/engine_isa.h): how one is chosen, and that
// every variant this CPU runs gives the same table. Each variant is also held to the float64
// brute force: tests/core/CMakeLists.txt runs metrics_brute_force_test.cpp once per variant.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>

#include "engine_isa.h"
#include "qkscope/error.h"
#include "qkscope/metrics.h"

namespace qkscope {
namespace {

using detail::Isa;

TEST(EngineIsaChoice, NoRequestTakesTheBestTheCpuRuns) {
  EXPECT_EQ(detail::choose_isa(nullptr, {Isa::baseline, Isa::avx2}), Isa::avx2);
  EXPECT_EQ(detail::choose_isa("", {Isa::baseline, Isa::avx2, Isa::avx512}), Isa::avx512);
  EXPECT_EQ(detail::choose_isa(nullptr, {Isa::baseline}), Isa::baseline);
}

TEST(EngineIsaChoice, ARequestTheCpuRunsIsTaken) {
  EXPECT_EQ(detail::choose_isa("baseline", {Isa::baseline, Isa::avx2, Isa::avx512}),
            Isa::baseline);
  EXPECT_EQ(detail::choose_isa("avx2", {Isa::baseline, Isa::avx2, Isa::avx512}), Isa::avx2);
}

TEST(EngineIsaChoice, ARequestTheCpuCannotRunNamesWhatItCan) {
  try {
    detail::choose_isa("avx512", {Isa::baseline, Isa::avx2});
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("QKSCOPE_ISA=avx512"), std::string::npos) << what;
    EXPECT_NE(what.find("baseline, avx2"), std::string::npos) << what;
  }
}

TEST(EngineIsaChoice, AnUnknownNameListsTheVariants) {
  try {
    detail::choose_isa("sse9", {Isa::baseline});
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("QKSCOPE_ISA=sse9"), std::string::npos) << what;
    EXPECT_NE(what.find("baseline, avx2, avx512"), std::string::npos) << what;
  }
}

TEST(EngineIsaChoice, TheCpuRunsTheBaselineAndWhatIsActive) {
  const std::vector<Isa> supported = detail::supported_isas();
  ASSERT_FALSE(supported.empty());
  EXPECT_EQ(supported.front(), Isa::baseline);
  bool active_listed = false;
  for (Isa isa : supported) active_listed |= isa == detail::active_isa();
  EXPECT_TRUE(active_listed);
}

// Registered with QKSCOPE_ISA=baseline in its environment (tests/core/CMakeLists.txt).
TEST(EngineIsaEnvironment, QkscopeIsaForcesTheVariant) {
  const char* request = std::getenv("QKSCOPE_ISA");
  if (request == nullptr) GTEST_SKIP() << "QKSCOPE_ISA is not set";
  EXPECT_STREQ(detail::isa_name(detail::active_isa()), request);
}

// Sites of Gaussian queries and keys sharing a direction, head_dim 64 (so that the wide
// variants' full vectors are used, not only their remainders), sequences of varied lengths.
QkData gaussian_data(uint32_t seed, int n_heads, const std::vector<int>& lengths) {
  constexpr int kDim = 64;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  QkData data;
  int64_t seq = 0;
  for (int len : lengths) {
    for (int p = 0; p < len; ++p) {
      data.sequence.push_back(seq);
      data.position.push_back(p);
      data.token_id.push_back(p % 11);
    }
    ++seq;
  }
  SiteData site;
  site.module = "layer.0";
  site.n_heads = n_heads;
  site.head_dim = kDim;
  for (int h = 0; h < n_heads; ++h) site.head_index.push_back(h);
  for (int64_t t = 0; t < data.n_tokens(); ++t)
    for (int l = 0; l < kDim * n_heads; ++l) {
      const float shared = normal(rng);
      site.q.push_back(2.0f * shared + normal(rng) + (l % 3 == 0 ? 1.5f : 0.0f));
      site.k.push_back(0.5f * shared + 0.5f * normal(rng));
    }
  data.sites.push_back(std::move(site));
  return data;
}

void expect_close(double a, double b, double rel, const char* what) {
  EXPECT_LE(std::abs(a - b), rel * (std::abs(a) + std::abs(b)) + 1e-300)
      << what << ": " << a << " against " << b;
}

// Tables from different variants agree to rounding: the double sums run in different orders
// (8-wide, 4-wide, one by one), so bit equality is not expected, but every count is.
void expect_same_tables(const CTable& a, const CTable& b) {
  ASSERT_EQ(a.heads.size(), b.heads.size());
  for (size_t i = 0; i < a.heads.size(); ++i) {
    SCOPED_TRACE("head " + std::to_string(i));
    const HeadResult& x = a.heads[i];
    const HeadResult& y = b.heads[i];
    EXPECT_EQ(x.pairs, y.pairs);
    EXPECT_EQ(x.tokens, y.tokens);
    ASSERT_EQ(x.threshold.has_value(), y.threshold.has_value());
    if (x.threshold) expect_close(*x.threshold, *y.threshold, 1e-12, "threshold");
    expect_close(x.median_q_norm, y.median_q_norm, 1e-13, "median |q|");
    expect_close(x.median_k_norm, y.median_k_norm, 1e-13, "median |k|");
    EXPECT_EQ(x.c_wcorr, y.c_wcorr);
    // The norm ratio comes from the medians above, so it agrees to their rounding.
    ASSERT_EQ(x.c_norm.has_value(), y.c_norm.has_value());
    if (x.c_norm) expect_close(*x.c_norm, *y.c_norm, 1e-12, "c_norm");
    ASSERT_EQ(x.scales.size(), y.scales.size());
    for (size_t s = 0; s < x.scales.size(); ++s) {
      SCOPED_TRACE("scale " + std::to_string(x.scales[s].c));
      EXPECT_EQ(x.scales[s].queries, y.scales[s].queries);
      EXPECT_EQ(x.scales[s].near_pairs, y.scales[s].near_pairs);
      ASSERT_EQ(x.scales[s].wcorr.has_value(), y.scales[s].wcorr.has_value());
      if (x.scales[s].wcorr) expect_close(*x.scales[s].wcorr, *y.scales[s].wcorr, 1e-10, "R(c)");
    }
  }
}

struct VariantCase {
  const char* name;
  PairScope pairs;
  bool center;
  double percentile;
  size_t item_memory;  // 0: the default
  std::vector<int> lengths;
};

class EngineIsaVariants : public ::testing::TestWithParam<VariantCase> {};

TEST_P(EngineIsaVariants, EveryVariantGivesTheSameTable) {
  const VariantCase& c = GetParam();
  const QkData data = gaussian_data(5, 3, c.lengths);
  MetricOptions o;
  o.pairs = c.pairs;
  o.center = c.center;
  o.percentile = c.percentile;
  if (c.item_memory > 0) o.item_memory = c.item_memory;
  o.threads = 2;
  const Isa was = detail::active_isa();
  std::vector<CTable> tables;
  const std::vector<Isa> supported = detail::supported_isas();
  for (Isa isa : supported) {
    detail::set_active_isa(isa);
    tables.push_back(compute_ctable(data, o));
  }
  detail::set_active_isa(was);
  for (size_t v = 1; v < tables.size(); ++v) {
    SCOPED_TRACE(std::string(detail::isa_name(supported[v])) + " against baseline");
    expect_same_tables(tables[v], tables[0]);
  }
  if (supported.size() == 1) GTEST_SKIP() << "this CPU runs the baseline variant only";
}

INSTANTIATE_TEST_SUITE_P(
    Scopes, EngineIsaVariants,
    ::testing::Values(
        // Sequence scope with sequences of one row block and of several.
        VariantCase{"Sequence", PairScope::sequence, false, 0.5, 0, {128, 77, 300, 1, 600}},
        VariantCase{"CausalCentered", PairScope::causal, true, 2, 0, {128, 77, 300, 600}},
        // All scope past 2^18 pairs: the pilot and its caps.
        VariantCase{"AllPilot", PairScope::all, false, 0.5, 0, {700, 500}},
        VariantCase{"AllCenteredHighPercentile", PairScope::all, true, 30, 0, {400, 300}},
        // The bounded-memory passes: histogram, band, near.
        VariantCase{"AllBoundedMemory", PairScope::all, false, 0.5, 1, {700, 500}}),
    [](const ::testing::TestParamInfo<VariantCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace qkscope
