// The engine against a straightforward brute force written from SPEC section 3 alone: every
// pair, every scale, distances ||c q - k/c|| and dot products in double, the full sorted list of
// distances for the percentile, two-pass weighted correlation, metric 2 and the choice rules.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <limits>
#include <random>

#include "qkscope/metrics.h"

namespace qkscope {
namespace {

struct BruteHead {
  std::optional<double> threshold;
  std::vector<std::optional<double>> wcorr, scaled;
  std::vector<int64_t> queries, near_pairs;
  std::optional<double> c_wcorr, c_scaled, c_norm;
};

std::optional<double> brute_choose(const std::vector<double>& c,
                                   const std::vector<std::optional<double>>& v, SelectRule rule) {
  // Sort candidate indices by (score, |log c| rounded to 1e-12, c).
  std::vector<size_t> idx;
  for (size_t i = 0; i < c.size(); ++i)
    if (v[i]) idx.push_back(i);
  if (idx.empty()) return std::nullopt;
  auto score = [&](size_t i) { return rule == SelectRule::closest ? std::abs(*v[i] + 1) : *v[i]; };
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (score(a) != score(b)) return score(a) < score(b);
    double la = std::round(std::abs(std::log(c[a])) * 1e9), lb = std::round(std::abs(std::log(c[b])) * 1e9);
    if (la != lb) return la < lb;
    return c[a] < c[b];
  });
  return c[idx[0]];
}

double brute_median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Per head of the table, in the same order as compute_ctable (site, then head).
std::vector<BruteHead> brute_force(const QkData& data, const MetricOptions& o) {
  const size_t n_scales = o.scales.size();
  const int64_t n = data.n_tokens();
  std::vector<BruteHead> heads;
  for (const SiteData& site : data.sites) {
    const int dim = site.head_dim;
    for (int h = 0; h < site.n_heads; ++h) {
      std::vector<std::vector<double>> q(n, std::vector<double>(dim)), k = q, qd = q, kd = q;
      for (int64_t t = 0; t < n; ++t)
        for (int l = 0; l < dim; ++l) {
          q[t][l] = qd[t][l] = site.q[(t * site.n_heads + h) * dim + l];
          k[t][l] = kd[t][l] = site.k[(t * site.n_heads + h) * dim + l];
        }
      if (o.center) {
        for (auto* v : {&qd, &kd}) {
          std::vector<double> mean(dim, 0);
          for (auto& row : *v)
            for (int l = 0; l < dim; ++l) mean[l] += row[l] / static_cast<double>(n);
          for (auto& row : *v)
            for (int l = 0; l < dim; ++l) row[l] -= mean[l];
        }
      }
      auto in_scope = [&](int64_t i, int64_t j) {
        switch (o.pairs) {
          case PairScope::all: return true;
          case PairScope::sequence: return data.sequence[i] == data.sequence[j];
          case PairScope::causal:
            return data.sequence[i] == data.sequence[j] && data.position[j] <= data.position[i];
        }
        return false;
      };
      auto dist = [&](int64_t i, int64_t j, double c) {
        double s = 0;
        for (int l = 0; l < dim; ++l) {
          double diff = c * qd[i][l] - kd[j][l] / c;
          s += diff * diff;
        }
        return std::sqrt(s);
      };
      auto dot = [&](int64_t i, int64_t j) {
        double s = 0;
        for (int l = 0; l < dim; ++l) s += q[i][l] * k[j][l];
        return s;
      };
      BruteHead b;
      b.wcorr.assign(n_scales, std::nullopt);
      b.queries.assign(n_scales, 0);
      b.near_pairs.assign(n_scales, 0);
      std::vector<double> all;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          if (in_scope(i, j))
            for (double c : o.scales) all.push_back(dist(i, j, c));
      std::vector<double> qn, kn;
      for (int64_t t = 0; t < n; ++t) {
        double a = 0, bb = 0;
        for (int l = 0; l < dim; ++l) {
          a += qd[t][l] * qd[t][l];
          bb += kd[t][l] * kd[t][l];
        }
        qn.push_back(std::sqrt(a));
        kn.push_back(std::sqrt(bb));
      }
      double mq = brute_median(qn), mk = brute_median(kn);
      if (mq > 0 && mk > 0) b.c_norm = std::sqrt(1.0 / (mq / mk));
      if (!all.empty()) {
        std::sort(all.begin(), all.end());
        double pos = (static_cast<double>(all.size()) - 1) * o.percentile / 100;
        size_t lo = static_cast<size_t>(std::floor(pos));
        double hi = lo + 1 < all.size() ? all[lo + 1] : all[lo];
        double d = all[lo] + (pos - lo) * (hi - all[lo]);
        b.threshold = d;
        for (size_t s = 0; s < n_scales; ++s) {
          double sum_r = 0;
          for (int64_t i = 0; i < n; ++i) {
            std::vector<double> xs, ys, ws;
            for (int64_t j = 0; j < n; ++j) {
              if (!in_scope(i, j)) continue;
              double y = dist(i, j, o.scales[s]);
              if (y < d) {
                xs.push_back(dot(i, j));
                ys.push_back(y);
                ws.push_back((d - y) * (d - y));
              }
            }
            b.near_pairs[s] += static_cast<int64_t>(xs.size());
            if (xs.size() < 3) continue;
            double sw = 0, mx = 0, my = 0;
            for (size_t t = 0; t < xs.size(); ++t) sw += ws[t];
            for (size_t t = 0; t < xs.size(); ++t) {
              mx += ws[t] * xs[t] / sw;
              my += ws[t] * ys[t] / sw;
            }
            double cxx = 0, cyy = 0, cxy = 0;
            for (size_t t = 0; t < xs.size(); ++t) {
              cxx += ws[t] * (xs[t] - mx) * (xs[t] - mx) / sw;
              cyy += ws[t] * (ys[t] - my) * (ys[t] - my) / sw;
              cxy += ws[t] * (xs[t] - mx) * (ys[t] - my) / sw;
            }
            bool constant_x = std::all_of(xs.begin(), xs.end(), [&](double v) { return v == xs[0]; });
            bool constant_y = std::all_of(ys.begin(), ys.end(), [&](double v) { return v == ys[0]; });
            if (constant_x || constant_y) continue;
            sum_r += cxy / std::sqrt(cxx * cyy);
            ++b.queries[s];
          }
          if (b.queries[s] > 0) b.wcorr[s] = sum_r / static_cast<double>(b.queries[s]);
        }
      }
      b.c_wcorr = brute_choose(o.scales, b.wcorr, o.select);
      heads.push_back(b);
    }
  }
  // Metric 2.
  for (size_t s = 0; s < n_scales; ++s) {
    double mean = 0;
    for (auto& b : heads) mean += static_cast<double>(b.queries[s]) / static_cast<double>(heads.size());
    for (auto& b : heads) {
      b.scaled.resize(n_scales);
      if (b.wcorr[s] && mean > 0) b.scaled[s] = *b.wcorr[s] * b.queries[s] / mean;
    }
  }
  for (auto& b : heads) b.c_scaled = brute_choose(o.scales, b.scaled, o.select);
  return heads;
}

// cancelling: large, nearly equal q and k, where the Gram identity in single precision is wrong
// by more than the distance itself (SPEC 3, Precision). cancelling_wide: the same with components
// spread over 16 binades, so that with 64 dimensions even the identity in double rounds (its
// sums of exact products no longer fit 53 bits) by far more than the tests' tolerance.
enum class Structure { random, near_copies, mixed_norms, cancelling, cancelling_wide };

// Sequences of the given lengths; per head a different norm imbalance so chosen c differ.
QkData make_data(uint32_t seed, int n_sites, int n_heads, int dim, const std::vector<int>& lengths,
                 Structure structure) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  QkData data;
  int64_t seq = 100;
  for (int len : lengths) {
    for (int p = 0; p < len; ++p) {
      data.sequence.push_back(seq);
      data.position.push_back(p);
      data.token_id.push_back(p % 7);
    }
    seq += 3;
  }
  const int64_t n = data.n_tokens();
  for (int s = 0; s < n_sites; ++s) {
    SiteData site;
    site.layer = s;
    site.module = "layer." + std::to_string(s);
    site.n_heads = n_heads;
    site.head_dim = dim;
    for (int h = 0; h < n_heads; ++h) site.head_index.push_back(h);
    site.q.resize(n * n_heads * dim);
    site.k.resize(n * n_heads * dim);
    for (int64_t t = 0; t < n; ++t)
      for (int h = 0; h < n_heads; ++h) {
        float imbalance = std::pow(2.0f, static_cast<float>(h % 4) - 1.5f);
        for (int l = 0; l < dim; ++l) {
          size_t at = (t * n_heads + h) * dim + l;
          float base = normal(rng);
          switch (structure) {
            case Structure::random:
              site.q[at] = base;
              site.k[at] = normal(rng);
              break;
            case Structure::near_copies:  // keys close to queries: many near pairs
              site.q[at] = base * imbalance;
              site.k[at] = (base + 0.3f * normal(rng)) / imbalance;
              break;
            case Structure::cancelling:
              site.q[at] = 300.f + 30.f * base;
              site.k[at] = site.q[at] + 0.01f * normal(rng);
              break;
            case Structure::cancelling_wide: {
              const float binade = std::ldexp(1.0f, l % 16);
              site.q[at] = (300.f + 30.f * base) * binade;
              site.k[at] = site.q[at] + 0.01f * normal(rng) * binade;
              break;
            }
            case Structure::mixed_norms:  // offsets make centring matter
              site.q[at] = base * imbalance + 1.5f;
              site.k[at] = (0.5f * base + normal(rng)) / imbalance - 0.7f * static_cast<float>(l % 3);
              break;
          }
        }
      }
    data.sites.push_back(std::move(site));
  }
  data.tokens_seen = n;
  data.sequences_seen = static_cast<int64_t>(lengths.size());
  return data;
}

void expect_same(const CTable& table, const std::vector<BruteHead>& brute) {
  ASSERT_EQ(table.heads.size(), brute.size());
  for (size_t i = 0; i < brute.size(); ++i) {
    const HeadResult& h = table.heads[i];
    const BruteHead& b = brute[i];
    SCOPED_TRACE("head " + std::to_string(i));
    ASSERT_EQ(h.threshold.has_value(), b.threshold.has_value());
    if (b.threshold) {
      EXPECT_NEAR(*h.threshold, *b.threshold, 1e-9 * (1 + *b.threshold));
    }
    for (size_t s = 0; s < b.wcorr.size(); ++s) {
      SCOPED_TRACE("scale " + std::to_string(h.scales[s].c));
      EXPECT_EQ(h.scales[s].queries, b.queries[s]);
      EXPECT_EQ(h.scales[s].near_pairs, b.near_pairs[s]);
      ASSERT_EQ(h.scales[s].wcorr.has_value(), b.wcorr[s].has_value());
      if (b.wcorr[s]) {
      EXPECT_NEAR(*h.scales[s].wcorr, *b.wcorr[s], 1e-6);
    }
      ASSERT_EQ(h.scales[s].wcorr_scaled.has_value(), b.scaled[s].has_value());
      if (b.scaled[s]) {
      EXPECT_NEAR(*h.scales[s].wcorr_scaled, *b.scaled[s], 1e-6);
    }
    }
    EXPECT_EQ(h.c_wcorr, b.c_wcorr);
    EXPECT_EQ(h.c_wcorr_scaled, b.c_scaled);
    ASSERT_EQ(h.c_norm.has_value(), b.c_norm.has_value());
    if (b.c_norm) {
      EXPECT_NEAR(*h.c_norm, *b.c_norm, 1e-12 * *b.c_norm);
    }
  }
}

struct Case {
  const char* name;
  PairScope pairs;
  bool center;
  double percentile;
  std::vector<double> scales;
  SelectRule select;
  Structure structure;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class BruteForceTest : public ::testing::TestWithParam<Case> {};

TEST_P(BruteForceTest, EngineMatchesBruteForce) {
  const Case& c = GetParam();
  QkData data = make_data(7, 2, 4, 8, {9, 1, 16, 2, 23, 12}, c.structure);
  MetricOptions o;
  o.pairs = c.pairs;
  o.center = c.center;
  o.percentile = c.percentile;
  o.scales = c.scales;
  o.select = c.select;
  o.threads = 2;
  CTable table = compute_ctable(data, o);
  expect_same(table, brute_force(data, o));
}

const std::vector<double> kDefault = {0.2, 0.4, 0.8, 1, 1.25, 2.5, 5};
const std::vector<double> kLog = parse_scales("log:0.1:10:9");
const std::vector<double> kFew = {0.5, 3};

INSTANTIATE_TEST_SUITE_P(
    Scopes, BruteForceTest,
    ::testing::Values(
        Case{"SequenceDefault", PairScope::sequence, false, 0.5, kDefault, SelectRule::closest, Structure::near_copies},
        Case{"CausalDefault", PairScope::causal, false, 0.5, kDefault, SelectRule::closest, Structure::near_copies},
        Case{"AllDefault", PairScope::all, false, 0.5, kDefault, SelectRule::closest, Structure::near_copies},
        Case{"SequenceCentered", PairScope::sequence, true, 2, kDefault, SelectRule::min, Structure::mixed_norms},
        Case{"CausalCentered", PairScope::causal, true, 5, kLog, SelectRule::closest, Structure::mixed_norms},
        Case{"AllCentered", PairScope::all, true, 1, kLog, SelectRule::min, Structure::mixed_norms},
        Case{"SequenceRandomWide", PairScope::sequence, false, 20, kFew, SelectRule::closest, Structure::random},
        Case{"AllRandomMin", PairScope::all, false, 3, kDefault, SelectRule::min, Structure::random},
        Case{"CausalRandomHigh", PairScope::causal, false, 60, kLog, SelectRule::min, Structure::random},
        Case{"SequenceCancelling", PairScope::sequence, false, 0.5, {0.8, 1, 1.25}, SelectRule::closest, Structure::cancelling},
        Case{"AllCancellingCentered", PairScope::all, true, 0.5, kDefault, SelectRule::min, Structure::cancelling},
        Case{"AllNearLowPercentile", PairScope::all, false, 0.05, kDefault, SelectRule::closest, Structure::near_copies}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

// Cancellation that even double precision feels: the engine's identity shortcut must notice
// and recompute those items directly (SPEC 3, Precision).
TEST(BruteForcePrecisionTest, WideCancellingSequence) {
  QkData data = make_data(31, 1, 2, 64, {9, 14, 6, 11}, Structure::cancelling_wide);
  MetricOptions o;
  o.scales = {0.8, 1, 1.25};
  expect_same(compute_ctable(data, o), brute_force(data, o));
}

TEST(BruteForcePrecisionTest, WideCancellingAll) {
  QkData data = make_data(32, 1, 2, 64, {9, 14, 6, 11}, Structure::cancelling_wide);
  MetricOptions o;
  o.pairs = PairScope::all;
  o.percentile = 0.1;  // among the (i, i) items at c = 1, where the cancellation is
  expect_same(compute_ctable(data, o), brute_force(data, o));
}

// Magnitudes at the ends of float's range: norms whose squares overflow float (the float screen
// must stand aside) and whose squares underflow it (its absolute slack must cover the lost
// digits). The brute force works in double, where both are ordinary.
QkData scaled_data(uint32_t seed, float factor) {
  QkData data = make_data(seed, 1, 2, 16, {40, 33, 51}, Structure::near_copies);
  for (SiteData& site : data.sites) {
    for (float& v : site.q) v *= factor;
    for (float& v : site.k) v *= factor;
  }
  return data;
}

TEST(BruteForcePrecisionTest, NormsBeyondFloatRange) {
  QkData data = scaled_data(41, 1e19f);
  MetricOptions o;
  o.pairs = PairScope::all;
  expect_same(compute_ctable(data, o), brute_force(data, o));
}

TEST(BruteForcePrecisionTest, NormsUnderFloatRange) {
  QkData data = scaled_data(42, 1e-21f);
  MetricOptions o;
  o.pairs = PairScope::all;
  expect_same(compute_ctable(data, o), brute_force(data, o));
}

// Many tokens in `all` scope: several Gram blocks per head and a running bound that shrinks many
// times, still exact.
TEST(BruteForceLargeTest, AllScopeAcrossManyBlocks) {
  QkData data = make_data(11, 1, 2, 16, {700, 650}, Structure::near_copies);
  MetricOptions o;
  o.pairs = PairScope::all;
  o.threads = 2;
  expect_same(compute_ctable(data, o), brute_force(data, o));
}

// The bounded-memory path (items over MetricOptions::item_memory): histogram, band and
// block-by-block correlation passes give the brute force's table too.
TEST(BruteForceLargeTest, BoundedMemoryAllScope) {
  QkData data = make_data(11, 1, 2, 16, {700, 650}, Structure::near_copies);
  MetricOptions o;
  o.pairs = PairScope::all;
  o.item_memory = 1;
  expect_same(compute_ctable(data, o), brute_force(data, o));
}

TEST(BruteForceLargeTest, BoundedMemoryCausalCenteredLowPercentile) {
  QkData data = make_data(13, 1, 2, 12, {900, 40, 700}, Structure::mixed_norms);
  MetricOptions o;
  o.pairs = PairScope::causal;
  o.center = true;
  o.percentile = 0.05;
  o.item_memory = 1;
  expect_same(compute_ctable(data, o), brute_force(data, o));
}

// Long sequences in `sequence` scope (each spans several row blocks) with centring.
TEST(BruteForceLargeTest, LongSequencesCentered) {
  QkData data = make_data(12, 1, 2, 12, {600, 3, 300}, Structure::mixed_norms);
  MetricOptions o;
  o.pairs = PairScope::causal;
  o.center = true;
  o.percentile = 0.2;
  expect_same(compute_ctable(data, o), brute_force(data, o));
}

}  // namespace
}  // namespace qkscope

namespace qkscope {
namespace {

// NaN or Inf in a head's q or k: those tokens are left out of that head only, counted, and the
// rest of the head is exactly what it would be without them.
TEST(NonFiniteTest, TokensWithNanOrInfAreLeftOutOfTheirHeadOnly) {
  QkData data = make_data(21, 1, 2, 8, {9, 14, 6}, Structure::near_copies);
  const int dim = 8, heads = 2;
  SiteData& site = data.sites[0];
  // Head 0: token 3 gets a NaN in q, token 20 an Inf in k. Head 1 untouched.
  site.q[(3 * heads + 0) * dim + 2] = std::numeric_limits<float>::quiet_NaN();
  site.k[(20 * heads + 0) * dim + 5] = -std::numeric_limits<float>::infinity();
  MetricOptions o;
  o.pairs = PairScope::causal;
  CTable t = compute_ctable(data, o);
  EXPECT_EQ(t.heads[0].nonfinite_tokens, 2);
  EXPECT_EQ(t.heads[0].tokens, data.n_tokens() - 2);
  EXPECT_EQ(t.heads[1].nonfinite_tokens, 0);

  // Independent: brute force on head 0 with the two tokens removed.
  QkData clean;
  SiteData head0;
  head0.n_heads = 1;
  head0.head_dim = dim;
  head0.head_index = {0};
  for (int64_t tok = 0; tok < data.n_tokens(); ++tok) {
    if (tok == 3 || tok == 20) continue;
    clean.sequence.push_back(data.sequence[tok]);
    clean.position.push_back(data.position[tok]);
    for (int l = 0; l < dim; ++l) {
      head0.q.push_back(site.q[(tok * heads + 0) * dim + l]);
      head0.k.push_back(site.k[(tok * heads + 0) * dim + l]);
    }
  }
  clean.sites.push_back(head0);
  std::vector<BruteHead> b = brute_force(clean, o);
  ASSERT_TRUE(b[0].threshold.has_value());
  EXPECT_NEAR(*t.heads[0].threshold, *b[0].threshold, 1e-9);
  for (size_t s = 0; s < o.scales.size(); ++s) {
    EXPECT_EQ(t.heads[0].scales[s].queries, b[0].queries[s]);
    ASSERT_EQ(t.heads[0].scales[s].wcorr.has_value(), b[0].wcorr[s].has_value());
    if (b[0].wcorr[s]) {
      EXPECT_NEAR(*t.heads[0].scales[s].wcorr, *b[0].wcorr[s], 1e-6);
    }
  }
  EXPECT_EQ(t.heads[0].c_wcorr, b[0].c_wcorr);
}

}  // namespace
}  // namespace qkscope

namespace qkscope {
namespace {

// A head large enough for the engine's pilot sample (over 2^18 pairs), with NaN tokens spread
// through it: whether the pilot or the pass meets one first, the head is recomputed without
// them and equals the brute force on the clean tokens.
TEST(NonFiniteTest, LargeHeadWithSpreadNanTokensMatchesBruteForceWithoutThem) {
  const int dim = 8;
  QkData data = make_data(23, 1, 1, dim, {600, 600, 500}, Structure::near_copies);
  SiteData& site = data.sites[0];
  std::vector<bool> dropped(static_cast<size_t>(data.n_tokens()), false);
  for (int64_t tok = 7; tok < data.n_tokens(); tok += 53) {
    site.q[tok * dim + tok % dim] = std::numeric_limits<float>::quiet_NaN();
    dropped[static_cast<size_t>(tok)] = true;
  }
  MetricOptions o;
  CTable t = compute_ctable(data, o);
  const auto n_dropped = std::count(dropped.begin(), dropped.end(), true);
  EXPECT_EQ(t.heads[0].nonfinite_tokens, n_dropped);

  QkData clean;
  SiteData head;
  head.n_heads = 1;
  head.head_dim = dim;
  head.head_index = {0};
  for (int64_t tok = 0; tok < data.n_tokens(); ++tok) {
    if (dropped[static_cast<size_t>(tok)]) continue;
    clean.sequence.push_back(data.sequence[tok]);
    clean.position.push_back(data.position[tok]);
    head.q.insert(head.q.end(), site.q.begin() + tok * dim, site.q.begin() + (tok + 1) * dim);
    head.k.insert(head.k.end(), site.k.begin() + tok * dim, site.k.begin() + (tok + 1) * dim);
  }
  clean.sites.push_back(head);
  std::vector<BruteHead> b = brute_force(clean, o);
  ASSERT_TRUE(b[0].threshold.has_value());
  EXPECT_NEAR(*t.heads[0].threshold, *b[0].threshold, 1e-9 * (1 + *b[0].threshold));
  for (size_t s = 0; s < o.scales.size(); ++s) {
    EXPECT_EQ(t.heads[0].scales[s].queries, b[0].queries[s]);
    EXPECT_EQ(t.heads[0].scales[s].near_pairs, b[0].near_pairs[s]);
    ASSERT_EQ(t.heads[0].scales[s].wcorr.has_value(), b[0].wcorr[s].has_value());
    if (b[0].wcorr[s]) {
      EXPECT_NEAR(*t.heads[0].scales[s].wcorr, *b[0].wcorr[s], 1e-6);
    }
  }
}

}  // namespace
}  // namespace qkscope
